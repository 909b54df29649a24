"""`handshake export`: one session's files in a gzip tar with a manifest, read without its lock.

A run may be appending while export reads. The bundle is still consistent because of the
order it reads in and because it reads each file exactly once, recording the size and sha256
of the bytes it read: head.json first (a cache that may then lag the journal, never run ahead
of it), then the journal segments as listed once (append-only, so whatever was read is a
prefix; a record half-written at that instant is a torn tail), then artifacts (a pack frame is
synced before the record naming it, so every artifact the bundled journal names is in the
bundle). The bundle is written to a temp file and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handshake_cli import __version__
from handshake_cli.errors import OutputExists, SessionChanged, UsageError
from handshake_cli.maintenance.bundle.manifest import (
    BUNDLE_FORMAT,
    MANIFEST,
    NAME,
    NOT_EXPORTED,
    SESSIONS,
    BundledFile,
)
from handshake_cli.storage import durable, lock
from handshake_cli.storage.journal.codec import utc_now
from handshake_cli.storage.journal.scan import list_segments
from handshake_cli.storage.store import SessionDir, Store


@dataclass
class ExportReport:
    session_id: str
    output: Path
    bytes: int
    files: list[BundledFile]
    format_version: int
    live_writer: bool
    skipped: list[dict[str, str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "output": str(self.output),
            "bytes": self.bytes,
            "file_count": len(self.files),
            "session_bytes": sum(f.size for f in self.files),
            "bundle_format": BUNDLE_FORMAT,
            "format_version": self.format_version,
            "live_writer": self.live_writer,
            "skipped": self.skipped,
        }


class _HashingReader:
    """Hands tarfile exactly `size` bytes of an open file, hashing them on the way."""

    def __init__(self, fd: int, size: int, where: Path) -> None:
        self.fd, self.left, self.where = fd, size, where
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        parts = []
        while want:
            with durable.environment("read", self.where):
                part = os.read(self.fd, want)
            if not part:
                raise SessionChanged(
                    f"{self.where} shrank while it was exported (did a recovery cut a torn tail?)",
                    guidance=["export the session again"],
                )
            parts.append(part)
            want -= len(part)
        data = b"".join(parts)
        self.left -= len(data)
        self.sha.update(data)
        return data


def export_session(store: Store, session_id: str, output: Path, *, force: bool = False) -> ExportReport:
    """Write `output`, a gzip tar of the session's files plus `manifest.json`, atomically."""
    session = store.session(session_id)
    config = session.read_config(check_job=False)  # a bundle is for forensics: damage travels too
    output = output.expanduser().absolute()
    _check_output(output, force=force)
    live_writer = lock.holder(session.path) is not None
    files: list[BundledFile] = []
    skipped: list[dict[str, str]] = []
    prefix = f"{SESSIONS}/{session_id}"
    tmp = durable.temp_path_for(output)
    try:
        fd = durable.create_file(tmp)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with (
            durable.environment("write", output),
            os.fdopen(os.dup(fd), "wb") as raw,
            tarfile.open(
                name=output.name, mode="w:gz", fileobj=raw, compresslevel=6, format=tarfile.PAX_FORMAT
            ) as tar,
        ):
            tar.addfile(_dir_info(SESSIONS))
            tar.addfile(_dir_info(prefix))
            for relative, path, is_dir in _session_files(session, skipped):
                name = f"{prefix}/{relative}"
                if is_dir:
                    tar.addfile(_dir_info(name))
                    continue
                entry = _add_file(tar, name, path)
                if entry is not None:
                    files.append(entry)
            manifest = {
                "bundle_format": BUNDLE_FORMAT,
                "tool": "handshake",
                "tool_version": __version__,
                "format_version": config["format_version"],
                "session_id": session_id,
                "created_at": utc_now(),
                "files": [f.as_json() for f in files],
            }
            body = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(body), durable.FILE_MODE
            info.mtime = int(time.time())
            tar.addfile(info, _BytesReader(body))
        durable.fsync_fd(fd, path=output)
        with durable.environment("rename into place", output):
            _publish(tmp, output, force=force)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    finally:
        os.close(fd)
    durable.fsync_dir(output.parent)
    return ExportReport(
        session_id,
        output,
        os.stat(output).st_size,
        files,
        config["format_version"],
        live_writer,
        skipped,
    )


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        n = len(self.data) if n < 0 else n
        chunk, self.data = self.data[:n], self.data[n:]
        return bytes(chunk)


def _check_output(output: Path, *, force: bool) -> None:
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: {output.parent} is not a directory")
    if output.is_dir():
        raise UsageError(f"{output} is a directory; give the bundle's file name with -o")
    if os.path.lexists(output) and not force:
        raise OutputExists(
            f"{output} already exists; handshake export does not overwrite it",
            guidance=["add --force to replace it, or choose another -o FILE"],
        )


def _publish(tmp: Path, output: Path, *, force: bool) -> None:
    """Rename the finished bundle into place; without --force, never over an existing file."""
    if force:
        os.replace(tmp, output)
        return
    try:
        os.link(tmp, output)  # fails if the name exists: no check-then-rename race
    except FileExistsError:
        raise OutputExists(
            f"{output} appeared while the bundle was written; handshake export does not overwrite it",
            guidance=["add --force to replace it, or choose another -o FILE"],
        ) from None
    except OSError as exc:  # a filesystem without hard links
        if durable.is_environment(exc):
            raise
        if os.path.lexists(output):
            raise OutputExists(f"{output} already exists") from None
        os.rename(tmp, output)
        return
    os.unlink(tmp)


def _session_files(session: SessionDir, skipped: list[dict[str, str]]) -> Iterator[tuple[str, Path, bool]]:
    """(path relative to the session, absolute path, is a directory), in the order that keeps
    a live session consistent: head.json, session.toml, the journal as listed once, the rest."""
    top = sorted(os.listdir(session.path))
    first = ["head.json", "session.toml", "journal"]
    for name in [*(n for n in first if n in top), *(n for n in top if n not in first)]:
        if name not in NOT_EXPORTED:
            yield from _walk_entry(session.path / name, name, skipped)


def _listing(directory: Path, relative: str) -> list[str]:
    """One listing of a directory; journal segments in seq order (names stop sorting as
    text past 99,999,999), then anything else found there."""
    names = sorted(os.listdir(directory))
    if relative != "journal":
        return names
    segments = list_segments(directory)
    return segments + [n for n in names if n not in set(segments)]


def _walk(directory: Path, relative: str, skipped: list[dict[str, str]]) -> Iterator[tuple[str, Path, bool]]:
    for name in _listing(directory, relative):
        yield from _walk_entry(directory / name, f"{relative}/{name}", skipped)


def _walk_entry(path: Path, relative: str, skipped: list[dict[str, str]]) -> Iterator[tuple[str, Path, bool]]:
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
        yield relative, path, True
        yield from _walk(path, relative, skipped)
    elif stat.S_ISREG(mode):
        yield relative, path, False
    else:
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        skipped.append({"path": relative, "reason": kind})


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, durable.DIR_MODE, int(time.time())
    return info


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> BundledFile | None:
    """Read the file once, streaming it into the archive and hashing what was read."""
    try:
        fd = durable.open_read(path)
    except FileNotFoundError:
        return None  # a request answered and removed since the listing
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = st.st_size, durable.FILE_MODE, int(st.st_mtime)
        reader = _HashingReader(fd, st.st_size, path)
        tar.addfile(info, reader)
        return BundledFile(name, st.st_size, reader.sha.hexdigest())
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
