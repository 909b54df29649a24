"""Forensic bundles: one session's files in a gzip tar with a manifest, and back.

`export` reads a session without its lock, so a run may be appending while it reads. The
bundle is still consistent because of the order it reads in and because it reads each file
exactly once, recording the size and sha256 of the bytes it read: head.json first (a cache
that may then lag the journal, never run ahead of it), then the journal segments as listed
once (append-only, so whatever was read is a prefix; a record half-written at that instant
is a torn tail), then artifacts (a pack frame is synced before the record naming it, so every
artifact the bundled journal names is in the bundle).

`import` trusts nothing in a bundle. From the tar headers alone it checks every member's
name, type and declared size against the limits below (docs/FORMAT.md, "Limits") and the
manifest against the members, before it reads a byte of a session file. Then it streams each
member into `staging/`, hashing it on the way (never holding a whole member in memory),
checks every size and sha256 and session.toml's format, sets the store's modes, fsyncs,
verifies the copy and lands it in `sessions/` with one rename. A refusal or a crash at any
point leaves no session behind, and nothing under the root changes but debris in `staging/`
(which a refusal removes).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tarfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from handshake_cli import __version__, documents
from handshake_cli.errors import (
    BundleDamaged,
    EnvironmentFailure,
    HandshakeError,
    InvalidBundle,
    OutputExists,
    SessionChanged,
    SessionExists,
    UnsupportedFormat,
    UsageError,
)
from handshake_cli.storage import durable, lock
from handshake_cli.storage.artifacts import DEFAULT_PACK_BYTES
from handshake_cli.storage.journal import DEFAULT_SEGMENT_BYTES, list_segments, utc_now
from handshake_cli.storage.store import (
    FORMAT_VERSION,
    MADE_WITH_SESSION,
    SESSION_ID,
    SESSION_TOML_MAX_BYTES,
    SUBDIRS,
    SessionDir,
    Store,
    parse_config,
)

if TYPE_CHECKING:
    from handshake_cli.readers.verify import Verification

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
SESSIONS = "sessions"
# A session never travels with a writer: these describe a process on the exporting machine.
NOT_EXPORTED = frozenset({lock.LOCK_FILE, lock.OWNER_FILE})
# Every name below sessions/<id>/ in a bundle: what the store itself writes, nothing that
# starts with a dot (temp files of interrupted writes), nothing a shell or tar could misread.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", re.ASCII)
SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
CHUNK = 1 << 20

# Limits on what a bundle may hold, all checked from the tar headers before a member is read.
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 4 << 30  # the session's files together
MANIFEST_MAX_BYTES = 4 << 20  # a manifest lists at most MAX_MEMBERS files, ~250 bytes each
HEADER_MAX_BYTES = CHUNK  # one pax or GNU long-name header: tarfile reads it whole
# The largest journal record that can be written. A segment is rotated before the record that
# would take it past DEFAULT_SEGMENT_BYTES, so it holds at most that plus one record.
RECORD_MAX_BYTES = 64 << 20
SEGMENT_MAX_BYTES = DEFAULT_SEGMENT_BYTES + RECORD_MAX_BYTES
ARTIFACT_MAX_BYTES = 64 << 20
PACK_MAX_BYTES = DEFAULT_PACK_BYTES + ARTIFACT_MAX_BYTES  # rotated the same way as a segment
SMALL_FILE_MAX_BYTES = 1 << 20  # head.json, requests/, anything else


@dataclass(frozen=True)
class BundledFile:
    path: str  # the member name: sessions/<id>/...
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


# -- export ----------------------------------------------------------------------------------


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


# -- import ----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    session_id: str
    path: Path
    files: int
    session_bytes: int
    state: str
    verdict: str
    integrity: dict[str, Any]
    workspace: str | None
    workspace_exists: bool
    workspace_note: str
    exported_at: str | None
    tool_version: str | None
    guidance: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "path": str(self.path),
            "file_count": self.files,
            "session_bytes": self.session_bytes,
            "state": self.state,
            "verdict": self.verdict,
            "integrity": self.integrity,
            "workspace": self.workspace,
            "workspace_exists": self.workspace_exists,
            "workspace_note": self.workspace_note,
            "exported_at": self.exported_at,
            "exported_by": self.tool_version,
        }


@dataclass
class _Layout:
    session_id: str
    manifest: tarfile.TarInfo
    files: dict[str, tarfile.TarInfo]  # member name -> member, in archive order
    members: list[tarfile.TarInfo]  # everything to extract (not the manifest)


# What reading a bundle's compressed tar stream raises when the bytes are cut short or corrupt.
_DAMAGE: tuple[type[Exception], ...] = (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)


def import_bundle(store: Store, bundle: Path) -> ImportReport:
    """Check every byte of `bundle`, then land its session under the root in one rename."""
    store.check_sessions_dir()  # before anything looks through a link there
    with _open_bundle(bundle) as tar, durable.environment("import", bundle):
        layout = _check_members(_members(tar, bundle))
        manifest = _read_manifest(tar, layout)
        target = store.paths.sessions / layout.session_id
        if os.path.lexists(target):
            raise SessionExists(
                f"session {layout.session_id} already exists under {store.paths.root}; "
                "import does not overwrite a session",
                guidance=[" ".join(["handshake", "inspect", layout.session_id, *store.paths.root_args()])],
            )
        config = _check_contents(tar, layout, manifest)
        landed, verification = _land(store, tar, layout, manifest)
    return _report(store, layout, landed, config, manifest, verification)


class _HeaderTooLarge(Exception):
    """tarfile asked for one read larger than any header of a bundle: a pax or GNU long-name
    header it would otherwise read whole into memory, however large it says it is."""


_DAMAGE_IN_A_MEMBER: tuple[type[Exception], ...] = (*_DAMAGE, _HeaderTooLarge)


class _BoundedReads:
    """The decompressed stream as tarfile sees it, refusing any single read over
    HEADER_MAX_BYTES. Member data is read in CHUNK-sized pieces by this module, so only a
    header tarfile reads for itself can ask for more."""

    def __init__(self, stream: gzip.GzipFile) -> None:
        self.stream = stream

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > HEADER_MAX_BYTES:
            raise _HeaderTooLarge(size)
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def close(self) -> None:
        self.stream.close()


@contextmanager
def _open_bundle(bundle: Path) -> Iterator[tarfile.TarFile]:
    try:
        fd = documents.open_regular(bundle)
    except FileNotFoundError:
        raise UsageError(f"no such bundle file: {bundle}") from None
    except documents.DocumentError as exc:
        raise UsageError(f"{bundle} {exc.problem}; a bundle is a file") from None
    except OSError as exc:
        if durable.is_environment(exc):
            raise durable.environment_failure(exc, "read", bundle) from exc
        raise UsageError(f"cannot read {bundle}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        try:
            tar = tarfile.TarFile(fileobj=cast(IO[bytes], _BoundedReads(stream)), mode="r")
        except _HeaderTooLarge:
            raise InvalidBundle(f"{bundle} starts with a tar header over {HEADER_MAX_BYTES} bytes") from None
        except _DAMAGE as exc:
            raise InvalidBundle(f"{bundle} is not a gzip-compressed tar archive: {exc}") from None
        with tar:
            yield tar


def _members(tar: tarfile.TarFile, bundle: Path) -> list[tarfile.TarInfo]:
    """Every member's header, refusing more than MAX_MEMBERS, one larger than its kind may
    be, or more than MAX_TOTAL_BYTES together, before tarfile reads on past it."""
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        while (member := tar.next()) is not None:
            if len(members) == MAX_MEMBERS:
                raise InvalidBundle(
                    f"refusing the bundle: it holds more than {MAX_MEMBERS} members; nothing was imported"
                )
            if member.isfile():
                limit, kind = member_limit(member.name)
                if member.size > limit:
                    raise _refuse(member.name, f"is {member.size} bytes; the limit for {kind} is {limit}")
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    raise _refuse(member.name, f"takes the session's files past {MAX_TOTAL_BYTES} bytes")
            members.append(member)
    except _HeaderTooLarge:
        raise InvalidBundle(
            f"refusing the bundle: a tar header after {len(members)} members is over {HEADER_MAX_BYTES} "
            "bytes; nothing was imported"
        ) from None
    except _DAMAGE as exc:
        raise BundleDamaged(f"{bundle} is damaged (truncated or corrupt): {exc}") from None
    return members


def member_limit(name: str) -> tuple[int, str]:
    """The largest a bundle member named `name` (sessions/<id>/...) may be, and what it is."""
    relative = name.split("/", 2)[2] if name.count("/") >= 2 else name
    if name == MANIFEST:
        return MANIFEST_MAX_BYTES, "manifest.json"
    if relative == "session.toml":
        return SESSION_TOML_MAX_BYTES, "session.toml"
    if relative.startswith(("journal/", "quarantine/")):
        return SEGMENT_MAX_BYTES, "a journal segment (or bytes quarantined from one)"
    if relative.startswith("artifacts/packs/"):
        return PACK_MAX_BYTES, "an artifact pack"
    if relative.startswith("artifacts/objects/"):
        return ARTIFACT_MAX_BYTES, "an artifact"
    return SMALL_FILE_MAX_BYTES, "this file"


def _refuse(member: str, why: str) -> InvalidBundle:
    shown = member if member.isprintable() and len(member) <= 200 else repr(member[:200])
    return InvalidBundle(
        f"refusing the bundle: member {shown!r} {why}; nothing was imported", details={"member": shown}
    )


def _check_members(members: list[tarfile.TarInfo]) -> _Layout:
    """Every member is manifest.json, or a plain file or directory of one session."""
    session_ids: set[str] = set()
    manifest: tarfile.TarInfo | None = None
    files: dict[str, tarfile.TarInfo] = {}
    dirs: set[str] = set()
    seen: set[str] = set()
    extract: list[tarfile.TarInfo] = []
    for member in members:
        name = member.name
        if name in seen:
            raise _refuse(name, "appears twice")
        seen.add(name)
        if name.startswith("/"):
            raise _refuse(name, "is an absolute path")
        parts = name.split("/")
        if ".." in parts:
            raise _refuse(name, "climbs out of the bundle with '..'")
        if member.issym() or member.islnk():
            raise _refuse(name, "is a link")
        if member.isdev():
            raise _refuse(name, "is a device or a fifo")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            raise _refuse(name, f"has a tar type ({member.type!r}) a bundle never holds")
        if member.size < 0:
            raise _refuse(name, "has a negative size")
        if name == MANIFEST:
            if not member.isfile():
                raise _refuse(name, "is not a file")
            manifest = member
            continue
        if parts == [SESSIONS]:
            if not member.isdir():
                raise _refuse(name, "is not a directory")
            extract.append(member)
            continue
        if parts[0] != SESSIONS:
            raise _refuse(name, "is outside sessions/<session id>/")
        if not SESSION_ID.fullmatch(parts[1]):
            raise _refuse(name, f"names an invalid session id {parts[1]!r}")
        if not all(NAME.fullmatch(part) for part in parts[2:]):
            raise _refuse(name, "has a path component handshake never writes")
        session_ids.add(parts[1])
        if len(session_ids) > 1:
            raise _refuse(name, f"belongs to a second session ({' and '.join(sorted(session_ids))})")
        if len(parts) == 3 and parts[2] in NOT_EXPORTED:
            raise _refuse(name, "is a writer's lock file; a bundle never carries a writer")
        if not member.isdir() and "/".join(parts[2:]) in SUBDIRS:
            raise _refuse(name, "is a file in place of one of the session's directories")
        if member.isdir():
            dirs.add(name)
        else:
            if len(parts) == 2:
                raise _refuse(name, "is a file in place of the session's directory")
            files[name] = member
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        extract.append(member)
    if manifest is None:
        raise InvalidBundle("not a handshake bundle: it has no manifest.json")
    if not session_ids:
        raise InvalidBundle("not a handshake bundle: it holds no sessions/<session id>/")
    for name in files:
        if name in dirs:
            raise _refuse(name, "is a file where the bundle also has a directory")
    return _Layout(session_ids.pop(), manifest, files, extract)


def _read_manifest(tar: tarfile.TarFile, layout: _Layout) -> dict[str, Any]:
    raw = b"".join(_member_chunks(tar, layout.manifest))  # its size is within MANIFEST_MAX_BYTES
    try:
        manifest = documents.parse_json(raw)
    except documents.DocumentError as exc:
        raise InvalidBundle(f"manifest.json {exc.problem}", details={"member": MANIFEST}) from None
    if not isinstance(manifest, dict) or manifest.get("tool") != "handshake":
        raise InvalidBundle("manifest.json was not written by handshake export")
    for key, reads in (("bundle_format", BUNDLE_FORMAT), ("format_version", FORMAT_VERSION)):
        value = manifest.get(key)
        if type(value) is not int or value < 1:
            raise InvalidBundle(f"manifest.json: {key} {value!r:.100} is not one handshake writes")
        if value > reads:
            raise UnsupportedFormat(
                f"the bundle uses {key} {value}; this handshake reads {key} {reads}. "
                "Upgrade handshake to import it."
            )
    if manifest.get("session_id") != layout.session_id:
        raise InvalidBundle(
            f"manifest.json names session {manifest.get('session_id')!r:.100} but the bundle holds "
            f"sessions/{layout.session_id}/"
        )
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise InvalidBundle("manifest.json has no list of files")
    listed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or type(entry.get("size")) is not int
            or entry["size"] < 0
            or not isinstance(entry.get("sha256"), str)
            or not SHA256.fullmatch(entry["sha256"])
        ):
            raise InvalidBundle(f"manifest.json: a files entry is malformed: {entry!r:.200}")
        if entry["path"] in listed:
            raise InvalidBundle(f"manifest.json lists {entry['path']!r:.200} twice")
        listed[entry["path"]] = entry
    unlisted = [name for name in layout.files if name not in listed]
    if unlisted:
        raise InvalidBundle(f"the bundle holds files its manifest does not list: {_few(unlisted)}")
    absent = [name for name in listed if name not in layout.files]
    if absent:
        raise InvalidBundle(f"the manifest lists files the bundle does not hold: {_few(absent)}")
    if f"{SESSIONS}/{layout.session_id}/session.toml" not in layout.files:
        raise InvalidBundle(f"the bundle holds no sessions/{layout.session_id}/session.toml")
    for name, member in layout.files.items():
        if member.size != listed[name]["size"]:
            raise BundleDamaged(
                f"{name} is {member.size} bytes in the bundle, the manifest says {listed[name]['size']}: "
                "the bundle is damaged; nothing was imported",
                details={"member": name},
            )
    manifest["files"] = listed
    return manifest


def _few(names: list[str]) -> str:
    shown = [repr(name[:200]) if not name.isprintable() else name[:200] for name in names[:3]]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _member_chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    """A member's bytes, CHUNK at a time; a stream cut short or corrupt is BundleDamaged."""
    stream = tar.extractfile(member)
    if stream is None:  # cannot happen for a regular file; checked above
        raise InvalidBundle(f"{member.name} is not a regular file")
    left = member.size
    try:
        while left:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                raise EOFError("the archive ends inside this member")
            left -= len(chunk)
            yield chunk
    except _DAMAGE_IN_A_MEMBER as exc:
        raise BundleDamaged(
            f"the bundle is damaged at {member.name}: {exc}; nothing was imported",
            details={"member": member.name},
        ) from None


def _check_contents(tar: tarfile.TarFile, layout: _Layout, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every file's sha256 against the manifest, streamed, then session.toml's format: all
    before anything is written, so that a damaged bundle leaves the root as it was."""
    listed: dict[str, dict[str, Any]] = manifest["files"]
    toml_name = f"{SESSIONS}/{layout.session_id}/session.toml"
    toml = b""
    for name, member in layout.files.items():
        sha = hashlib.sha256()
        for chunk in _member_chunks(tar, member):
            sha.update(chunk)
            if name == toml_name:  # within SESSION_TOML_MAX_BYTES
                toml += chunk
        _check_sha(name, sha.hexdigest(), listed)
    config = parse_config(toml, layout.session_id)
    if config["format_version"] != manifest["format_version"]:
        raise InvalidBundle("manifest.json and session.toml disagree about format_version")
    return config


def _check_sha(name: str, digest: str, listed: dict[str, dict[str, Any]]) -> None:
    if digest != listed[name]["sha256"]:
        raise BundleDamaged(
            f"{name} does not match its sha256 in the manifest: the bundle is damaged; nothing was imported",
            guidance=["export the session again, or copy the bundle again"],
            details={"member": name},
        )


def _land(
    store: Store, tar: tarfile.TarFile, layout: _Layout, manifest: dict[str, Any]
) -> tuple[Path, Verification | HandshakeError]:
    """Stream every member into staging (hashing it again: the bundle file could change under
    us), make it look like a session the store created, verify, rename."""
    from handshake_cli.readers.verify import verify

    paths = store.paths
    durable.ensure_root(paths.root)
    durable.ensure_subdir(paths.sessions)
    durable.ensure_subdir(paths.staging)
    staging = paths.staging / f"{layout.session_id}.{secrets.token_hex(4)}"
    durable.make_dir(staging)
    target = paths.sessions / layout.session_id
    try:
        with durable.environment("extract the bundle into", staging):
            _extract(tar, staging, layout, manifest["files"])
        staged = staging / SESSIONS / layout.session_id
        for sub in MADE_WITH_SESSION:  # tar drops an empty directory; the store makes this one
            if not os.path.lexists(staged / sub):
                durable.make_dir(staged / sub)
        _seal(staged)
        try:
            verification: Verification | HandshakeError = verify(SessionDir(layout.session_id, staged))
        except EnvironmentFailure:
            raise  # the disk failed, not the bundle: nothing lands
        except HandshakeError as exc:
            verification = exc
        if os.path.lexists(target):
            raise SessionExists(f"session {layout.session_id} appeared under {paths.root} during the import")
        with durable.environment("move the imported session into", target):
            os.rename(staged, target)
        durable.fsync_dir(paths.sessions)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, verification


def _extract(tar: tarfile.TarFile, staging: Path, layout: _Layout, listed: dict[str, dict[str, Any]]) -> None:
    """Write the checked members below `staging`, each streamed and hashed, and refuse one
    whose bytes are not those the manifest lists. The names are already known to be plain
    relative paths of safe components, files and directories never in each other's place."""
    for member in layout.members:
        destination = staging / member.name
        _make_dirs(staging, destination if member.isdir() else destination.parent)
        if member.isdir():
            continue
        sha = hashlib.sha256()
        fd = durable.create_file(destination)
        try:
            for chunk in _member_chunks(tar, member):
                sha.update(chunk)
                durable.write_all(fd, chunk)
        finally:
            os.close(fd)
        _check_sha(member.name, sha.hexdigest(), listed)


def _make_dirs(staging: Path, directory: Path) -> None:
    """`directory` and any parent of it below `staging`, each 0700."""
    missing: list[Path] = []
    while directory != staging and not os.path.isdir(directory):
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        durable.make_dir(path)


def _seal(top: Path) -> None:
    """Modes 0700/0600 whatever the archive said, and everything fsynced, deepest first."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            _seal_one(Path(dirpath) / name, directory=False)
        for name in dirnames:
            _seal_one(Path(dirpath) / name, directory=True)
    _seal_one(top, directory=True)


def _seal_one(path: Path, *, directory: bool) -> None:
    flags = os.O_RDONLY | durable.NOFOLLOW | durable.CLOEXEC | (os.O_DIRECTORY if directory else 0)
    with durable.environment("open", path):
        fd = os.open(path, flags)
    try:
        kind = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(kind) if directory else stat.S_ISREG(kind)):
            raise InvalidBundle(f"{path} is neither a plain file nor a directory after extraction")
        with durable.environment("set the mode of", path):
            os.fchmod(fd, durable.DIR_MODE if directory else durable.FILE_MODE)
        durable.fsync_fd(fd, path=path)
    finally:
        os.close(fd)


def _report(
    store: Store,
    layout: _Layout,
    landed: Path,
    config: dict[str, Any],
    manifest: dict[str, Any],
    verification: Verification | HandshakeError,
) -> ImportReport:
    from handshake_cli.session.state import fold
    from handshake_cli.session.status import effective_state

    session_id = layout.session_id
    root_args = store.paths.root_args()
    if isinstance(verification, HandshakeError):
        verdict, integrity, state = "damaged", {"error": verification.message}, "UNREADABLE"
    else:
        verdict, integrity = verification.verdict, verification.as_json()
        state = effective_state(fold(session_id, verification.journal.records).state, None)
    workspace = config.get("workspace") if isinstance(config.get("workspace"), str) else None
    exists = workspace is not None and os.path.isdir(workspace)
    note = (
        f"recovery runs this session's tools in the workspace recorded in {landed / 'session.toml'}: "
        f"{workspace}"
        + ("" if exists else " (it does not exist on this machine)")
        + "; edit `workspace` there to use another directory"
    )
    guidance: list[str] = []
    if verdict != "intact":
        verify_command = " ".join(["handshake", "inspect", session_id, "--verify", *root_args])
        guidance += ["see what is wrong with:", verify_command]
    if verdict != "damaged" and (state in ("INTERRUPTED", "PAUSED", "BLOCKED") or verdict == "repairable"):
        guidance += [note, "resume it with:", " ".join(["handshake", "recover", session_id, *root_args])]
    files = manifest["files"]
    return ImportReport(
        session_id=session_id,
        path=landed,
        files=len(files),
        session_bytes=sum(entry["size"] for entry in files.values()),
        state=state,
        verdict=verdict,
        integrity=integrity,
        workspace=workspace,
        workspace_exists=exists,
        workspace_note=note,
        exported_at=manifest.get("created_at") if isinstance(manifest.get("created_at"), str) else None,
        tool_version=manifest.get("tool_version") if isinstance(manifest.get("tool_version"), str) else None,
        guidance=guidance,
    )
