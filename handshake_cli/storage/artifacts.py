"""Content-addressed, immutable blobs kept outside the journal: large tool output and other
payloads too big for a record. (Checkpoints travel inside their own journal record; see
checkpoints.py.)

An artifact's id is the sha256 of its bytes, checked on every read. Two homes:

- pack segments (`artifacts/packs/NNNNNNNN.pack`), append-only, one frame per artifact:
  `HSA1` | length (8 bytes, big-endian) | sha256 (32 bytes) | payload. Appending a frame costs
  no fsync by itself; `PackWriter.sync()` makes every frame so far durable with one
  fdatasync, before any record that names them is written.
- loose files (`artifacts/objects/<id>`), written temp -> fsync -> rename -> directory fsync,
  for blobs written on their own.

Neither directory (nor `artifacts/` itself) exists until its first file is written: most
sessions have no large output, and every empty directory is one more inode to create and
to delete.

A pack that ends in a torn frame (a crash mid-write) is never appended to again: the next
writer starts a new segment, so no intact frame ever follows garbage.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handshake_cli.errors import ArtifactCorrupt, DurabilityError, NotFound
from handshake_cli.storage import durable

MAGIC = b"HSA1"
HEADER_BYTES = len(MAGIC) + 8 + 32
PACK_SUFFIX = ".pack"
DEFAULT_PACK_BYTES = 64 * 1024 * 1024
ARTIFACT_ID = re.compile(r"[0-9a-f]{64}")
PACK_NAME = re.compile(r"[0-9]{8,}\.pack")


def artifact_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Location:
    """Where a packed artifact's frame starts."""

    pack: str
    offset: int

    def as_json(self) -> dict[str, Any]:
        return {"pack": self.pack, "offset": self.offset}

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> Location | None:
        if not obj:
            return None
        return cls(str(obj["pack"]), int(obj["offset"]))


@dataclass(frozen=True)
class Frame:
    artifact_id: str
    location: Location
    length: int


@dataclass(frozen=True)
class PackDamage:
    pack: str
    offset: int
    detail: str
    at_end: bool  # nothing intact follows: a torn frame from a crash
    artifact_id: str | None = None  # when the frame's header survived

    def as_json(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "offset": self.offset,
            "detail": self.detail,
            "artifact_id": self.artifact_id,
            "repairable": self.at_end,
        }


class ArtifactStore:
    def __init__(self, artifacts_dir: Path) -> None:
        self.root = artifacts_dir
        self.objects = artifacts_dir / "objects"
        self.packs = artifacts_dir / "packs"

    def make_home(self, directory: Path) -> None:
        """`artifacts/` and `objects/` or `packs/` below it, made by the first writer of each
        (a new session has neither): durably, before the file that goes in them."""
        durable.ensure_subdir(self.root, durable=True)
        durable.ensure_subdir(directory, durable=True)

    # -- writing -------------------------------------------------------------------------

    def put_loose(self, data: bytes) -> str:
        ident = artifact_id(data)
        path = self.objects / ident
        if os.path.lexists(path):
            self.get(ident)  # an existing copy must be intact, or we would vouch for bad bytes
            return ident
        self.make_home(self.objects)
        durable.atomic_write(path, data, durable=True)
        return ident

    def pack_writer(self, *, pack_bytes: int = DEFAULT_PACK_BYTES) -> PackWriter:
        return PackWriter(self, pack_bytes)

    # -- reading -------------------------------------------------------------------------

    def get(self, ident: str, location: Location | None = None) -> bytes:
        if not ARTIFACT_ID.fullmatch(ident):
            raise ArtifactCorrupt(f"{ident!r} is not an artifact id")
        if location is not None:
            return self._read_frame(ident, location)
        loose = self.objects / ident
        if os.path.lexists(loose):
            data = durable.read_bytes(loose)
            if artifact_id(data) != ident:
                raise ArtifactCorrupt(
                    f"artifact {ident} is damaged: its bytes no longer match its id",
                    details={"artifact_id": ident, "path": str(loose)},
                )
            return data
        for frame in self.frames():
            if frame.artifact_id == ident:
                return self._read_frame(ident, frame.location)
        raise NotFound(f"artifact {ident} is not in this session", details={"artifact_id": ident})

    def _read_frame(self, ident: str, location: Location) -> bytes:
        if not PACK_NAME.fullmatch(location.pack) or location.offset < 0:
            raise ArtifactCorrupt(
                f"artifact {ident}: {location.pack!r} offset {location.offset} is no location"
            )
        path = self.packs / location.pack
        try:
            fd = durable.open_read(path)
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {ident}: pack {location.pack} is missing") from exc
        try:
            with durable.environment("read", path):
                return self._read_open_frame(fd, ident, location)
        finally:
            os.close(fd)

    def _read_open_frame(self, fd: int, ident: str, location: Location) -> bytes:
        header = os.pread(fd, HEADER_BYTES, location.offset)
        if len(header) != HEADER_BYTES or header[:4] != MAGIC or header[12:].hex() != ident:
            raise ArtifactCorrupt(
                f"artifact {ident}: no intact frame at {location.pack} offset {location.offset}"
            )
        length = int.from_bytes(header[4:12], "big")
        if location.offset + HEADER_BYTES + length > os.fstat(fd).st_size:
            raise ArtifactCorrupt(
                f"artifact {ident}: the frame at {location.pack} offset {location.offset} is cut short"
            )
        data = os.pread(fd, length, location.offset + HEADER_BYTES)
        if len(data) != length or artifact_id(data) != ident:
            raise ArtifactCorrupt(
                f"artifact {ident} is damaged: its bytes no longer match its id",
                details={"artifact_id": ident, "pack": location.pack, "offset": location.offset},
            )
        return data

    def pack_names(self) -> list[str]:
        if not self.packs.is_dir():
            return []
        names = [
            e.name
            for e in os.scandir(self.packs)
            if e.name.endswith(PACK_SUFFIX) and e.name[: -len(PACK_SUFFIX)].isdigit()
        ]
        return sorted(names)

    def frames(self, pack: str | None = None) -> Iterator[Frame]:
        """Walk frame headers (not payloads); stops quietly at the first damage."""
        for name in [pack] if pack else self.pack_names():
            for item in _walk_pack(self.packs / name, name, verify=False):
                if isinstance(item, Frame):
                    yield item

    def loose_ids(self) -> list[str]:
        if not self.objects.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.objects) if ARTIFACT_ID.fullmatch(e.name))

    def verify(self) -> tuple[int, list[dict[str, Any]]]:
        """Hash every artifact. Returns how many were checked and what was wrong."""
        checked = 0
        problems: list[dict[str, Any]] = []
        for ident in self.loose_ids():
            checked += 1
            data = durable.read_bytes(self.objects / ident)
            if artifact_id(data) != ident:
                problems.append(
                    {
                        "kind": "artifact_corrupt",
                        "artifact_id": ident,
                        "path": f"artifacts/objects/{ident}",
                        "repairable": False,
                    }
                )
        for name in self.pack_names():
            for item in _walk_pack(self.packs / name, name, verify=True):
                if isinstance(item, Frame):
                    checked += 1
                else:
                    problems.append(
                        {"kind": "pack_torn_tail" if item.at_end else "pack_corrupt", **item.as_json()}
                    )
        return checked, problems


def _walk_pack(path: Path, name: str, *, verify: bool) -> Iterator[Frame | PackDamage]:
    fd = durable.open_read(path)
    try:
        with durable.environment("read", path):
            yield from _walk_open_pack(fd, name, verify=verify)
    finally:
        os.close(fd)


def _walk_open_pack(fd: int, name: str, *, verify: bool) -> Iterator[Frame | PackDamage]:
    size = os.fstat(fd).st_size
    offset = 0
    while offset < size:
        header = os.pread(fd, HEADER_BYTES, offset)
        length = int.from_bytes(header[4:12], "big") if len(header) == HEADER_BYTES else -1
        if header[:4] != MAGIC or length < 0 or offset + HEADER_BYTES + length > size:
            at_end = not _intact_frame_after(fd, offset, size)
            yield PackDamage(name, offset, "incomplete or damaged frame header", at_end)
            return
        ident = header[12:].hex()
        if verify:
            data = os.pread(fd, length, offset + HEADER_BYTES)
            if artifact_id(data) != ident:
                at_end = offset + HEADER_BYTES + length == size
                yield PackDamage(name, offset, f"artifact {ident} does not match its bytes", at_end, ident)
                if at_end:
                    return
        yield Frame(ident, Location(name, offset), length)
        offset += HEADER_BYTES + length


def _frame_is_intact(fd: int, offset: int, size: int) -> bool:
    header = os.pread(fd, HEADER_BYTES, offset)
    if len(header) != HEADER_BYTES or header[:4] != MAGIC:
        return False
    length = int.from_bytes(header[4:12], "big")
    if offset + HEADER_BYTES + length > size:
        return False
    return hashlib.sha256(os.pread(fd, length, offset + HEADER_BYTES)).digest() == header[12:]


def _intact_frame_after(fd: int, offset: int, size: int) -> bool:
    """Whether any intact frame starts after `offset`: then the damage is not a torn tail."""
    rest = os.pread(fd, size - offset - 1, offset + 1)
    at = rest.find(MAGIC)
    while at != -1:
        if _frame_is_intact(fd, offset + 1 + at, size):
            return True
        at = rest.find(MAGIC, at + 1)
    return False


class PackWriter:
    """Appends frames to the session's newest pack (or a new one). Holder of the session lock only."""

    def __init__(self, store: ArtifactStore, pack_bytes: int) -> None:
        self.store = store
        self.pack_bytes = pack_bytes
        # Frames this writer appended. Only these are reused for identical bytes: a frame
        # found on disk would have to be verified first, and a duplicate costs little.
        self.known: dict[str, Location] = {}
        self._fd: int | None = None
        self._name: str | None = None
        self._size = 0
        self._dirty = False
        self._broken: str | None = None
        names = store.pack_names()
        if names:
            last = names[-1]
            frames = list(_walk_pack(store.packs / last, last, verify=False))
            size = os.lstat(store.packs / last).st_size
            ends_clean = all(isinstance(item, Frame) for item in frames) and (
                not frames or _last_frame_intact(store.packs / last, frames[-1], size)
            )
            if ends_clean and size < pack_bytes:
                with durable.environment("open for appending", store.packs / last):
                    self._fd = os.open(
                        store.packs / last, os.O_WRONLY | os.O_APPEND | durable.NOFOLLOW | durable.CLOEXEC
                    )
                self._name, self._size = last, size
        self._next_number = int(names[-1][: -len(PACK_SUFFIX)]) + 1 if names else 1

    def add(self, data: bytes) -> tuple[str, Location]:
        """Append `data` (not yet durable: call `sync`). The same bytes are stored once."""
        if self._broken:
            raise DurabilityError(f"artifact writer is unusable after an earlier failure: {self._broken}")
        ident = artifact_id(data)
        if ident in self.known:
            return ident, self.known[ident]
        if self._fd is None or (self._size and self._size + HEADER_BYTES + len(data) > self.pack_bytes):
            self._new_pack()
        assert self._fd is not None and self._name is not None
        frame = MAGIC + len(data).to_bytes(8, "big") + bytes.fromhex(ident) + data
        location = Location(self._name, self._size)
        try:
            written = os.write(self._fd, frame)
            if written != len(frame):
                raise OSError(f"short write ({written} of {len(frame)} bytes)")
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as undo:
                self._broken = f"a failed write could not be undone: {undo}"
            where = self.store.packs / self._name
            raise durable.durability_error(exc, "write to", where, "the artifact was not stored") from exc
        self._size += len(frame)
        self._dirty = True
        self.known[ident] = location
        return ident, location

    def sync(self) -> None:
        if self._broken:
            raise DurabilityError(f"artifact writer is unusable after an earlier failure: {self._broken}")
        if self._fd is not None and self._dirty:
            try:
                durable.fsync_fd(self._fd, data_only=True, path=self.store.packs / (self._name or ""))
            except DurabilityError as exc:
                self._broken = exc.message  # never retried and acknowledged (DESIGN rule 4)
                raise
            self._dirty = False

    def close(self) -> None:
        """Let go of the pack; never raises (what had to be durable was synced)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _new_pack(self) -> None:
        if self._fd is not None:
            self.sync()
            self.close()
        self._name = f"{self._next_number:08d}{PACK_SUFFIX}"
        self._next_number += 1
        self.store.make_home(self.store.packs)
        self._fd = durable.create_file(self.store.packs / self._name, append=True)
        durable.fsync_dir(self.store.packs)
        self._size = 0


def _last_frame_intact(path: Path, item: Frame | PackDamage, size: int) -> bool:
    """A crash can leave the newest frame's length on disk but not its bytes: check them."""
    if not isinstance(item, Frame):
        return False
    fd = durable.open_read(path)
    try:
        with durable.environment("read", path):
            return _frame_is_intact(fd, item.location.offset, size)
    finally:
        os.close(fd)
