"""A session directory as the files of a bundle: what `export` reads from the filesystem store.

Walked in the order that keeps a live session consistent (head.json, a cache that may then
lag the journal but never run ahead of it; session.toml; the journal segments as listed once,
in seq order; the rest), and each file read exactly once, through one open descriptor, so
whatever was read of an append-only file is a prefix of it. What describes a process on this
machine (the lock, owner.json) never travels; a name handshake does not write, a link or a
special file is reported as skipped, never followed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from handshake_cli.errors import SessionChanged
from handshake_cli.storage import durable, lock
from handshake_cli.storage.contract import SessionFile
from handshake_cli.storage.journal.codec import FILL, SEGMENT_SUFFIX
from handshake_cli.storage.journal.scan import list_segments

# A session never travels with a writer: these describe a process on the exporting machine.
NOT_EXPORTED = frozenset({lock.LOCK_FILE, lock.OWNER_FILE})
# Every name below sessions/<id>/ in a bundle: what the store itself writes, nothing that
# starts with a dot (temp files of interrupted writes), nothing a shell or tar could misread.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", re.ASCII)
FIRST = ("head.json", "session.toml", "journal")


class OpenFile(SessionFile):
    """A regular file, open once: hands out exactly the `size` bytes it had when opened (a
    journal segment without its preallocated tail: a bundle holds records only)."""

    def __init__(self, name: str, path: Path, fd: int) -> None:
        st = os.fstat(fd)
        size = st.st_size
        if name.startswith("journal/") and name.endswith(SEGMENT_SUFFIX):
            with durable.environment("read", path):
                size = _without_tail(fd, size)
        self.name, self.size, self.mtime = name, size, int(st.st_mtime)
        self._fd, self._left, self._path = fd, size, path

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        parts = []
        while want:
            with durable.environment("read", self._path):
                part = os.read(self._fd, want)
            if not part:
                raise SessionChanged(
                    f"{self._path} shrank while it was exported (did a recovery cut a torn tail?)",
                    guidance=["export the session again"],
                )
            parts.append(part)
            want -= len(part)
        data = b"".join(parts)
        self._left -= len(data)
        return data


def _without_tail(fd: int, size: int) -> int:
    """A segment's size without the newlines of a preallocated tail after its last line's own."""
    end = size
    while end > 0:
        block = os.pread(fd, min(end, 1 << 16), end - min(end, 1 << 16))
        kept = len(block.rstrip(FILL))
        end -= len(block) - kept
        if kept:
            break
    return end + 1 if end < size and end > 0 else end


def session_files(session_dir: Path, skipped: list[dict[str, str]]) -> Iterator[str | SessionFile]:
    """Each directory (its name) and each file (open until the next item is asked for) of the
    session at `session_dir`, names relative to it; what cannot travel goes to `skipped`."""
    top = sorted(os.listdir(session_dir))
    for name in [*(n for n in FIRST if n in top), *(n for n in top if n not in FIRST)]:
        if name not in NOT_EXPORTED:
            yield from _entry(session_dir / name, name, skipped)


def _listing(directory: Path, relative: str) -> list[str]:
    """One listing of a directory; journal segments in seq order (names stop sorting as
    text past 99,999,999), then anything else found there."""
    names = sorted(os.listdir(directory))
    if relative != "journal":
        return names
    segments = list_segments(directory)
    return segments + [n for n in names if n not in set(segments)]


def _entry(path: Path, relative: str, skipped: list[dict[str, str]]) -> Iterator[str | SessionFile]:
    name = path.name
    if name.startswith(durable.TEMP_PREFIX):
        return  # debris of an interrupted atomic write, or one in progress: readers ignore it
    if not NAME.fullmatch(name):
        skipped.append({"path": relative, "reason": "a name handshake does not write"})
        return
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return  # a request answered and removed while we looked
    if stat.S_ISDIR(mode):
        yield relative
        for child in _listing(path, relative):
            yield from _entry(path / child, f"{relative}/{child}", skipped)
    elif stat.S_ISREG(mode):
        yield from _opened(path, relative)
    else:
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        skipped.append({"path": relative, "reason": kind})


def _opened(path: Path, relative: str) -> Iterator[SessionFile]:
    try:
        fd = durable.open_read(path)
    except FileNotFoundError:
        return  # a request answered and removed since the listing
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            yield OpenFile(relative, path, fd)
    finally:
        os.close(fd)
