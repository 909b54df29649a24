"""Reading the TOML and JSON documents that come from outside: job files and scripts,
`handshake.toml`, `session.toml`, a bundle's `manifest.json` — with limits.

Python's parsers fail badly on hostile input: deep nesting raises RecursionError, a dotted
key of many parts costs a TOML parser quadratic time and memory (100,000 parts exhaust the
machine), an integer of 5,000 digits raises a bare ValueError, and `read()` of /dev/zero
never returns. Every reader of such a document goes through here, so each gets the same
limits (docs/FORMAT.md, "Limits") and one exception, `DocumentError`, whose message says
what is wrong and where inside the document (line, column, key) but not which file: the
caller knows the file and which error it is (exit 2 for a user's file, 5 for a stored one).

TOML is parsed by tomli, the parser the standard library's tomllib was taken from, in its
compiled build: the same documents and errors, about five times faster on the job a long
session stores (docs/DECISIONS.md).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

MAX_NESTING = 32
"""Tables and arrays inside one another, the document itself counting as one. A job needs a
handful; tool arguments and JSON schemas a few more."""

_READ_CHUNK = 1 << 20


class DocumentError(ValueError):
    """A document handshake will not read. `line` and `column` when the parser knows them."""

    def __init__(self, problem: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        self.column = column

    @property
    def position(self) -> dict[str, int]:
        """`line` and `column` for an error's details, when known."""
        if self.line is None or self.column is None:
            return {}
        return {"line": self.line, "column": self.column}


# --- bytes ----------------------------------------------------------------------------------


def open_regular(path: str | Path, *, follow_symlinks: bool = True) -> int:
    """Open `path` for reading without blocking on a FIFO. OSError as `os.open` raises it;
    `DocumentError` when it is not a regular file (a directory, a FIFO, a device)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DocumentError("is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise DocumentError(f"is not a regular file ({_file_kind(mode)})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_limited(fd: int, max_bytes: int) -> bytes:
    """Every byte of an open file, refusing one larger than `max_bytes` having read at most
    one byte more (a file may grow after fstat, or be a device without a size)."""
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise DocumentError(f"is {size} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise DocumentError(f"is more than {max_bytes} bytes; the limit is {max_bytes}")
    return b"".join(chunks)


def read_regular(path: str | Path, max_bytes: int, *, follow_symlinks: bool = True) -> bytes:
    """A regular file's bytes, at most `max_bytes` of them (see `open_regular`, `read_limited`)."""
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        return read_limited(fd, max_bytes)
    finally:
        os.close(fd)


def decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DocumentError(f"is not UTF-8 text: byte {exc.start} (line {line}) cannot be decoded") from None


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "neither a file nor a directory"


# --- TOML -----------------------------------------------------------------------------------

# What the nesting pre-scan needs to see in TOML: strings and comments (skipped whole, so that
# brackets and dots inside them do not count), brackets, and the dotted part of a key (`.b.c`
# of `a.b.c`, whose dots it counts). The regex engine skips every other character itself.
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\n]*')"""
_TOML_TOKEN = re.compile(
    r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""(?:""?)?'  # multi-line basic string
    r"|'''[^']*(?:'(?!'')[^']*)*'''(?:''?)?"  # multi-line literal string
    r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[{]|[\]}]"
    rf"|\.[ \t]*{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*",  # the dotted rest of a key
    re.DOTALL,
)


def parse_toml(data: bytes | str, *, max_nesting: int = MAX_NESTING) -> dict[str, Any]:
    """A TOML document (UTF-8; a leading byte order mark is ignored), nested at most
    `max_nesting` levels."""
    text = decode_utf8(data) if isinstance(data, bytes) else data
    # Some Windows editors start UTF-8 files with a byte order mark; TOML has no use for it.
    text = text.removeprefix("\ufeff")
    _prescan_toml(text, max_nesting)
    import tomli  # a few ms to import: only commands that read TOML pay for it

    try:
        document = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        reason, line, column = toml_position(exc, text)
        problem = f"invalid TOML at line {line}, column {column}: {reason}"
        raise DocumentError(problem, line=line, column=column) from None
    except RecursionError:  # the pre-scan should have refused it first; never exit 1 for it
        raise DocumentError(f"nests deeper than {max_nesting} levels") from None
    except ValueError as exc:  # an integer longer than Python converts (4,300 digits)
        raise DocumentError(f"invalid TOML: {exc}") from None
    check_nesting(document, max_nesting)
    return document


def _prescan_toml(text: str, max_nesting: int) -> None:
    """Refuse, before the parser sees it, nesting that would cost it recursion or quadratic work:
    brackets inside brackets, and dotted keys of many parts. An estimate (a float's dot counts
    as a key part, a table header's parts are not added to its keys'); `check_nesting`
    measures the parsed document exactly."""
    depth = 1
    for token in _TOML_TOKEN.finditer(text):
        char = token.group()[0]
        if char in "[{":
            depth += 1
            deepest = depth
        elif char in "]}":
            depth = max(depth - 1, 1)
            continue
        elif char == ".":
            deepest = depth + token.group().count(".")
        else:
            continue  # a string or a comment
        if deepest > max_nesting:
            line = text.count("\n", 0, token.start()) + 1
            raise DocumentError(f"nests deeper than {max_nesting} levels (line {line})", line=line)


def toml_position(exc: ValueError, text: str) -> tuple[str, int, int]:
    """(reason, line, column) of a TOML syntax error. tomli (and Python 3.14's tomllib) has
    attributes for them; the tomllib of 3.11 puts them at the end of the message, or says
    "at end of document"."""
    lineno, colno, msg = (getattr(exc, name, None) for name in ("lineno", "colno", "msg"))
    if isinstance(lineno, int) and isinstance(colno, int) and isinstance(msg, str):
        return msg, lineno, colno
    message = str(exc)
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
    if found:
        return found[1], int(found[2]), int(found[3])
    reason = message.removesuffix(" (at end of document)")
    return reason, text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1


# --- JSON -----------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise DocumentError(f"is not JSON: {name} is not a JSON value")


def parse_json(data: bytes, *, max_nesting: int = MAX_NESTING) -> Any:
    """A JSON document (UTF-8, no NaN or Infinity), nested at most `max_nesting` levels."""
    text = decode_utf8(data)
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except DocumentError:
        raise
    except RecursionError:  # json's C parser stops itself cleanly at the recursion limit
        raise DocumentError(f"nests deeper than {max_nesting} levels") from None
    except ValueError as exc:  # an integer longer than Python converts (4,300 digits)
        raise DocumentError(f"is not JSON handshake reads: {exc}") from None
    check_nesting(document, max_nesting)
    return document


# --- nesting --------------------------------------------------------------------------------


def check_nesting(document: object, max_nesting: int = MAX_NESTING) -> None:
    """Refuse a parsed document with tables/objects and arrays more than `max_nesting` deep,
    naming the key where it goes too deep. Iterative: the point is to not recurse."""
    if not isinstance(document, dict | list):
        return
    stack: list[tuple[dict[str, Any] | list[Any], int, tuple[str | int, ...]]] = [(document, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            if isinstance(child, dict | list):
                if depth + 1 > max_nesting:
                    raise DocumentError(f"nests deeper than {max_nesting} levels at {key_path((*path, key))}")
                stack.append((child, depth + 1, (*path, key)))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def key_path(parts: tuple[str | int, ...]) -> str:
    """`tools[0].parameters."a b"`: keys joined by dots (quoted unless bare), indexes in brackets."""
    shown = ""
    for part in parts:
        if isinstance(part, int):
            shown += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            shown = f"{shown}.{name}" if shown else name
    return shown
