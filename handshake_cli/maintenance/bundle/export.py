"""`handshake export`: one session's files in a gzip tar with a manifest, read without its lock.

The files are the store's (`SessionStore.session_files`): a directory's on the filesystem, the
same layout made from the rows of another store. A run may be appending while export reads.
The bundle is still consistent because of the order the files come in and because each is
read exactly once, its size and the sha256 of the bytes read recorded: head.json first (a
cache that may then lag the journal, never run ahead of it), then the journal segments as
listed once (append-only, so whatever was read is a prefix; a record half-written at that
instant is a torn tail), then artifacts (a pack frame is synced before the record naming it,
so every artifact the bundled journal names is in the bundle). The bundle is written to a
temp file and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handshake_cli import __version__
from handshake_cli.errors import OutputExists, UsageError
from handshake_cli.maintenance.bundle.manifest import (
    BUNDLE_FORMAT,
    MANIFEST,
    SESSIONS,
    BundledFile,
)
from handshake_cli.storage import durable
from handshake_cli.storage.contract import SessionFile, SessionStore
from handshake_cli.storage.journal.codec import utc_now


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
    """Hands tarfile the bytes of one of the session's files, hashing them on the way."""

    def __init__(self, file: SessionFile) -> None:
        self.file = file
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(n)
        self.sha.update(data)
        return data


def export_session(
    store: SessionStore, session_id: str, output: Path, *, force: bool = False
) -> ExportReport:
    """Write `output`, a gzip tar of the session's files plus `manifest.json`, atomically."""
    config = store.read_config(session_id, check_job=False)  # a bundle is for forensics: damage travels too
    output = output.expanduser().absolute()
    _check_output(output, force=force)
    live_writer = store.holder(session_id) is not None
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
            for item in store.session_files(session_id, skipped):
                if isinstance(item, str):  # a directory
                    tar.addfile(_dir_info(f"{prefix}/{item}"))
                else:
                    files.append(_add_file(tar, f"{prefix}/{item.name}", item))
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


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, durable.DIR_MODE, int(time.time())
    return info


def _add_file(tar: tarfile.TarFile, name: str, file: SessionFile) -> BundledFile:
    """Stream the file into the archive once, hashing what was read."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = file.size, durable.FILE_MODE, file.mtime
    reader = _HashingReader(file)
    tar.addfile(info, reader)
    return BundledFile(name, file.size, reader.sha.hexdigest())


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
