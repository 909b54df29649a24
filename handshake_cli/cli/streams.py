"""stdout and stderr as the display of a session: written when they can be, never a reason to stop.

A reader that closes the pipe early (`handshake run JOB | head`), a full disk behind `> FILE`,
a closed descriptor, or text the terminal cannot encode (a lone surrogate a model streamed,
an ASCII locale) is a problem of the display, not of the session. So every write of the
command line goes through `write`: a failure is remembered, the descriptor is pointed at
/dev/null (so neither a later write nor the interpreter's flush at exit trips over it again),
and the caller carries on. `exit_code` then says what happened: a reader that went away
asked for nothing more, so the command's own code stands; a stdout that failed otherwise
(ENOSPC, EIO) lost output the user asked for, so a success becomes 74.

Text is shown, never refused: surrogate pairs a stream split across deltas are joined,
lone surrogates are shown as `\\ud800`, and characters the stream's encoding lacks are
backslash-escaped. JSON stays JSON: `json_text` escapes lone surrogates as JSON escapes,
and falls back to ASCII escapes when the stream cannot encode the rest.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from typing import Any, TextIO

from handshake_cli.errors import ExitCode

# Streams whose writes failed, by id, with the first error (the stream is kept alive with it).
_lost: dict[int, tuple[TextIO, OSError]] = {}

_noted: list[OSError] = []  # the stdout failure once told on stderr

_SURROGATE = re.compile("[\ud800-\udfff]")


def prepare() -> None:
    """Once, at start-up: descriptors 0-2 exist, and no text is unencodable on stdout or stderr."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # closed by the caller (`>&-`): a file opened later must not become fd 1
            _point_at_devnull(fd)
    if sys.stdout is None:  # Python gives None for a descriptor closed at start-up
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (OSError, ValueError):
                pass


def shown(text: str) -> str:
    """Text as a person sees it: split surrogate pairs joined, lone surrogates escaped."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(_escape, _join_pairs(text))


def json_text(doc: Any, stream: TextIO, *, indent: int | None = 2) -> str:
    """`doc` as JSON that `stream` can carry: UTF-8 where it can, escapes where it must."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    if _SURROGATE.search(text):  # only inside strings: a JSON escape there means the same code point
        text = _SURROGATE.sub(_escape, _join_pairs(text))
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(doc, indent=indent, ensure_ascii=True)
    return text


def write(stream: TextIO, text: str, *, flush: bool = False) -> bool:
    """Write (and flush) if the stream still works; False once it has failed."""
    if id(stream) in _lost:
        return False
    try:
        if text:  # even an empty write reaches the descriptor (and fails on /dev/full)
            stream.write(text)
        if flush:
            stream.flush()
    except OSError as error:
        silence(stream, error)
        return False
    return True


def flush(stream: TextIO) -> None:
    write(stream, "", flush=True)


def silence(stream: TextIO, error: OSError) -> None:
    """Remember the failure and point the descriptor at /dev/null, so what is still buffered
    drains there instead of failing again (at the latest in the interpreter's flush at exit)."""
    _lost.setdefault(id(stream), (stream, error))
    try:
        _point_at_devnull(stream.fileno())
        stream.flush()
    except (OSError, ValueError):  # no descriptor (a test's StringIO), or it is closed
        pass


def failure(stream: TextIO) -> OSError | None:
    entry = _lost.get(id(stream))
    return entry[1] if entry else None


def reader_left(error: OSError) -> bool:
    """The reader closed its end (`| head`): it wanted no more, and nothing was lost to it."""
    return error.errno in (errno.EPIPE, errno.ECONNRESET)


def exit_code(command: str, code: int, about: str | None = None) -> int:
    """The exit code once output is done: `code`, unless stdout failed for a reason other than
    its reader leaving and the command would have said "done" (0) — then 74, with a note on
    stderr. Any other code already says something more important about the session."""
    flush(sys.stdout)
    flush(sys.stderr)
    error = failure(sys.stdout)
    if error is None or reader_left(error):
        return code
    if not _noted:
        _noted.append(error)
        cause = error.strerror or type(error).__name__
        note = f"handshake {command}: could not write to stdout: {cause}"
        write(sys.stderr, note + (f"; {about}" if about else "") + "\n", flush=True)
    return int(ExitCode.ENVIRONMENT) if code == ExitCode.OK else code


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _join_pairs(text: str) -> str:
    """A high and a low surrogate side by side (a pair split across two deltas) are one character."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _point_at_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        if devnull != fd:
            os.dup2(devnull, fd)
    finally:
        if devnull != fd:
            os.close(devnull)
