"""What import checks before a byte of a bundle lands: a bundle is trusted in nothing.

From the tar headers alone, every member's name, type and declared size against the limits
(manifest.py) and the manifest against the members; then every member's bytes, streamed
(never a whole member in memory), against the sizes and sha256s the manifest lists, and
session.toml's format. A stream cut short or corrupt is BundleDamaged; anything a bundle never
holds is InvalidBundle.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from handshake_cli import documents
from handshake_cli.errors import BundleDamaged, InvalidBundle, UnsupportedFormat, UsageError
from handshake_cli.maintenance.bundle.manifest import (
    BUNDLE_FORMAT,
    CHUNK,
    HEADER_MAX_BYTES,
    MANIFEST,
    MAX_MEMBERS,
    MAX_TOTAL_BYTES,
    NAME,
    NOT_EXPORTED,
    SESSIONS,
    member_limit,
)
from handshake_cli.storage import durable
from handshake_cli.storage.store import FORMAT_VERSION, SESSION_ID, SUBDIRS, parse_config

SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


@dataclass
class Layout:
    """What a bundle's headers say it holds, once checked: one session's files and
    directories, and a manifest."""

    session_id: str
    manifest: tarfile.TarInfo
    files: dict[str, tarfile.TarInfo]  # member name -> member, in archive order
    members: list[tarfile.TarInfo]  # everything to extract (not the manifest)


# What reading a bundle's compressed tar stream raises when the bytes are cut short or corrupt.
_DAMAGE: tuple[type[Exception], ...] = (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)


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
def open_bundle(bundle: Path) -> Iterator[tarfile.TarFile]:
    """The bundle as a tar stream that no header can make read more than HEADER_MAX_BYTES."""
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


def read_headers(tar: tarfile.TarFile, bundle: Path) -> list[tarfile.TarInfo]:
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


def _refuse(member: str, why: str) -> InvalidBundle:
    shown = member if member.isprintable() and len(member) <= 200 else repr(member[:200])
    return InvalidBundle(
        f"refusing the bundle: member {shown!r} {why}; nothing was imported", details={"member": shown}
    )


def check_members(members: list[tarfile.TarInfo]) -> Layout:
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
    return Layout(session_ids.pop(), manifest, files, extract)


def read_manifest(tar: tarfile.TarFile, layout: Layout) -> dict[str, Any]:
    raw = b"".join(member_chunks(tar, layout.manifest))  # its size is within MANIFEST_MAX_BYTES
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


def member_chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
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


def check_contents(tar: tarfile.TarFile, layout: Layout, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every file's sha256 against the manifest, streamed, then session.toml's format: all
    before anything is written, so that a damaged bundle leaves the root as it was."""
    listed: dict[str, dict[str, Any]] = manifest["files"]
    toml_name = f"{SESSIONS}/{layout.session_id}/session.toml"
    toml = b""
    for name, member in layout.files.items():
        sha = hashlib.sha256()
        for chunk in member_chunks(tar, member):
            sha.update(chunk)
            if name == toml_name:  # within SESSION_TOML_MAX_BYTES
                toml += chunk
        check_sha(name, sha.hexdigest(), listed)
    config = parse_config(toml, layout.session_id)
    if config["format_version"] != manifest["format_version"]:
        raise InvalidBundle("manifest.json and session.toml disagree about format_version")
    return config


def check_sha(name: str, digest: str, listed: dict[str, dict[str, Any]]) -> None:
    if digest != listed[name]["sha256"]:
        raise BundleDamaged(
            f"{name} does not match its sha256 in the manifest: the bundle is damaged; nothing was imported",
            guidance=["export the session again, or copy the bundle again"],
            details={"member": name},
        )
