"""Artifacts (DESIGN section 2): content-addressed blobs whose id is checked on every read.

Loose files and pack segments both read back what was written; the same bytes are stored
once; bytes that changed on disk are refused on read (exit 5) and reported by `verify()`;
a pack cut short by a crash is reported as repairable and is never appended to again.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from handshake_cli.errors import ArtifactCorrupt, DurabilityError, ExitCode, NotFound
from handshake_cli.storage.artifacts import HEADER_BYTES, ArtifactStore, Location, artifact_id

BLOBS = [
    b"",
    b"a",
    b'{"messages":[{"role":"user","content":"hi"}]}',
    bytes(range(256)) * 40,
    "checkpoint ✓ 日本".encode() * 100,
]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")  # no directory yet: the first writer makes it


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def packed(store: ArtifactStore, blobs: list[bytes], **kwargs: int) -> list[tuple[str, Location]]:
    writer = store.pack_writer(**kwargs)
    try:
        out = [writer.add(blob) for blob in blobs]
        writer.sync()
    finally:
        writer.close()
    return out


# -- round trips -------------------------------------------------------------------------------


def test_loose_round_trip(store: ArtifactStore) -> None:
    ids = [store.put_loose(blob) for blob in BLOBS]

    assert ids == [hashlib.sha256(blob).hexdigest() for blob in BLOBS]
    assert [store.get(ident) for ident in ids] == BLOBS
    assert store.loose_ids() == sorted(ids)
    assert store.verify() == (len(BLOBS), [])


def test_pack_round_trip(store: ArtifactStore) -> None:
    placed = packed(store, BLOBS)

    assert [ident for ident, _ in placed] == [artifact_id(blob) for blob in BLOBS]
    # With the location a journal record carries, and by id alone.
    assert [store.get(ident, location) for ident, location in placed] == BLOBS
    assert [store.get(ident) for ident, _ in placed] == BLOBS
    assert store.verify() == (len(BLOBS), [])
    # The frames sit back to back, each where `add` said it would.
    offsets = [location.offset for _, location in placed]
    assert offsets[0] == 0
    for (_, location), blob, following in zip(placed, BLOBS, offsets[1:], strict=False):
        assert following == location.offset + HEADER_BYTES + len(blob)


def test_packs_rotate_by_size_and_every_frame_stays_readable(store: ArtifactStore) -> None:
    blobs = [os.urandom(300) for _ in range(20)]
    placed = packed(store, blobs, pack_bytes=1000)

    assert len(store.pack_names()) > 5
    assert {location.pack for _, location in placed} == set(store.pack_names())
    for name in store.pack_names():
        assert (store.packs / name).stat().st_size <= 1000
    assert [store.get(ident, location) for ident, location in placed] == blobs
    assert [store.get(ident) for ident, _ in placed] == blobs
    assert store.verify() == (20, [])


def test_a_new_writer_appends_to_a_clean_pack(store: ArtifactStore) -> None:
    first = packed(store, [b"one", b"two"])
    second = packed(store, [b"three"])

    assert store.pack_names() == ["00000001.pack"]
    assert second[0][1].pack == first[0][1].pack
    assert store.get(*second[0]) == b"three"


def test_unknown_artifact_is_not_found(store: ArtifactStore) -> None:
    packed(store, [b"something"])
    with pytest.raises(NotFound) as raised:
        store.get(artifact_id(b"never stored"))
    assert raised.value.exit_code == ExitCode.NOT_FOUND


@pytest.mark.parametrize("ident", ["../../session.toml", "ABC", "0" * 63, "g" * 64, "0" * 64 + "/x"])
def test_a_malformed_id_is_refused_before_any_path_is_built(store: ArtifactStore, ident: str) -> None:
    with pytest.raises(ArtifactCorrupt):
        store.get(ident)


# -- the same bytes once ----------------------------------------------------------------------------


def test_pack_dedupes_identical_bytes(store: ArtifactStore) -> None:
    writer = store.pack_writer()
    first = writer.add(b"same checkpoint")
    second = writer.add(b"same checkpoint")
    writer.sync()
    writer.close()

    assert first == second
    assert (store.packs / first[1].pack).stat().st_size == HEADER_BYTES + len(b"same checkpoint")
    assert store.verify() == (1, [])

    # A later writer (a resumed session) may reuse the frame or write another copy; either
    # way the id is the same and the location it hands out reads back.
    third = packed(store, [b"same checkpoint"])[0]
    assert third[0] == first[0]
    assert store.get(*third) == b"same checkpoint"
    assert store.verify()[1] == []


def test_loose_dedupes_identical_bytes(store: ArtifactStore) -> None:
    ident = store.put_loose(b"same body")
    before = os.stat(store.objects / ident)
    assert store.put_loose(b"same body") == ident
    after = os.stat(store.objects / ident)

    assert store.loose_ids() == [ident]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [n for n in os.listdir(store.objects) if n != ident]  # no temp files left


# -- bytes that changed ------------------------------------------------------------------------------


def test_a_changed_loose_file_is_refused_and_reported(store: ArtifactStore) -> None:
    ident = store.put_loose(b"a checkpoint worth keeping")
    other = store.put_loose(b"an untouched neighbour")
    flip(store.objects / ident, 5)

    with pytest.raises(ArtifactCorrupt) as raised:
        store.get(ident)
    assert int(raised.value.exit_code) == 5  # ExitCode.INTEGRITY
    assert ident in raised.value.message

    checked, problems = store.verify()
    assert checked == 2
    assert problems == [
        {
            "kind": "artifact_corrupt",
            "artifact_id": ident,
            "path": f"artifacts/objects/{ident}",
            "repairable": False,
        }
    ]
    assert store.get(other) == b"an untouched neighbour"


def test_put_loose_will_not_vouch_for_a_damaged_copy(store: ArtifactStore) -> None:
    ident = store.put_loose(b"checkpoint")
    flip(store.objects / ident, 0)
    with pytest.raises(ArtifactCorrupt):
        store.put_loose(b"checkpoint")


def test_a_changed_pack_payload_is_refused_and_reported(store: ArtifactStore) -> None:
    placed = packed(store, [b"first payload", b"second payload", b"third payload"])
    ident, location = placed[1]
    pack = store.packs / location.pack
    flip(pack, location.offset + HEADER_BYTES + 3)

    with pytest.raises(ArtifactCorrupt) as with_location:
        store.get(ident, location)
    with pytest.raises(ArtifactCorrupt):
        store.get(ident)
    assert with_location.value.exit_code == 5

    checked, problems = store.verify()
    assert checked == 3
    assert [(p["kind"], p["pack"], p["offset"], p["repairable"]) for p in problems] == [
        ("pack_corrupt", location.pack, location.offset, False)
    ]
    # Its neighbours are untouched and still read.
    assert store.get(*placed[0]) == b"first payload"
    assert store.get(*placed[2]) == b"third payload"
    assert store.get(placed[2][0]) == b"third payload"


def test_a_changed_payload_in_the_last_frame_is_refused_and_reported(store: ArtifactStore) -> None:
    placed = packed(store, [b"first payload", b"last payload"])
    ident, location = placed[1]
    flip(store.packs / location.pack, location.offset + HEADER_BYTES)

    with pytest.raises(ArtifactCorrupt):
        store.get(ident, location)
    _, problems = store.verify()
    assert [p["offset"] for p in problems] == [location.offset]


def test_a_changed_frame_id_is_refused(store: ArtifactStore) -> None:
    placed = packed(store, [b"first payload", b"second payload"])
    ident, location = placed[0]
    flip(store.packs / location.pack, location.offset + 12 + 7)  # inside the stored sha256

    with pytest.raises(ArtifactCorrupt):
        store.get(ident, location)
    _, problems = store.verify()
    assert problems and problems[0]["offset"] == location.offset


def _damaged_first_header(
    store: ArtifactStore, offset_in_header: int, mask: int
) -> list[tuple[str, Location]]:
    placed = packed(store, [b"first checkpoint" * 4, b"second checkpoint" * 4, b"third checkpoint" * 4])
    flip(store.packs / placed[0][1].pack, placed[0][1].offset + offset_in_header, mask)
    return placed


@pytest.mark.parametrize(
    ("offset_in_header", "mask"),
    [(0, 0x01), (4, 0x80), (11, 0x01)],
    ids=["magic", "length-high-bit", "length-low-bit"],
)
def test_damaged_header_followed_by_intact_frames_is_not_repairable(
    store: ArtifactStore, offset_in_header: int, mask: int
) -> None:
    _damaged_first_header(store, offset_in_header, mask)

    _, problems = store.verify()

    assert problems, "the damage went unreported"
    assert problems[0]["offset"] == 0
    # Intact frames follow every one of these offsets: none of it is a torn tail.
    assert [(p["kind"], p["repairable"]) for p in problems] == [("pack_corrupt", False)] * len(problems)


def test_a_damaged_frame_length_is_refused_as_corrupt(store: ArtifactStore) -> None:
    placed = _damaged_first_header(store, 4, 0x80)

    with pytest.raises(ArtifactCorrupt):
        store.get(*placed[0])


def test_a_damaged_frame_length_low_bits_is_refused(store: ArtifactStore) -> None:
    placed = _damaged_first_header(store, 11, 0x01)
    with pytest.raises(ArtifactCorrupt):
        store.get(*placed[0])
    # The frames after it are read by location as before.
    assert store.get(*placed[2]) == b"third checkpoint" * 4


def test_re_adding_bytes_whose_packed_copy_is_damaged_stores_a_readable_copy(
    store: ArtifactStore,
) -> None:
    blob = b"checkpoint state " * 20
    ident, location = packed(store, [blob, b"other"])[0]
    flip(store.packs / location.pack, location.offset + HEADER_BYTES + 3)

    again, new_location = packed(store, [blob])[0]

    assert again == ident
    assert store.get(again, new_location) == blob


# -- torn frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 4, 12, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 100])
def test_a_torn_frame_is_repairable_and_never_appended_after(store: ArtifactStore, keep: int) -> None:
    blobs = [b"kept one" * 10, b"kept two" * 10, b"torn checkpoint" * 20]
    placed = packed(store, blobs)
    pack = store.packs / placed[2][1].pack
    torn_at = placed[2][1].offset
    os.truncate(pack, torn_at + keep)
    size = pack.stat().st_size

    checked, problems = store.verify()
    assert checked == 2
    assert [(p["kind"], p["pack"], p["offset"], p["repairable"]) for p in problems] == [
        ("pack_torn_tail", pack.name, torn_at, True)
    ]
    assert [store.get(ident, loc) for ident, loc in placed[:2]] == blobs[:2]

    # The next writer starts a new pack: no intact frame ever follows the torn one.
    writer = store.pack_writer()
    ident, location = writer.add(b"after the crash")
    again, again_location = writer.add(blobs[2])  # the torn artifact, written whole this time
    writer.sync()
    writer.close()

    assert location.pack != pack.name and again_location.pack == location.pack
    assert store.pack_names() == [pack.name, location.pack]
    assert pack.stat().st_size == size
    assert store.get(ident, location) == b"after the crash"
    assert store.get(again) == blobs[2]
    assert [p["pack"] for p in store.verify()[1]] == [pack.name]


# -- wrong locations ---------------------------------------------------------------------------------


def test_reading_with_a_wrong_location_is_refused(store: ArtifactStore) -> None:
    placed = packed(store, [b"first payload", b"second payload"])
    (first, first_at), (_, second_at) = placed
    size = (store.packs / first_at.pack).stat().st_size

    wrong = [
        Location(first_at.pack, second_at.offset),  # another artifact's frame
        Location(first_at.pack, first_at.offset + 1),
        Location(first_at.pack, size),
        Location(first_at.pack, size + 4096),
    ]
    for location in wrong:
        with pytest.raises(ArtifactCorrupt):
            store.get(first, location)
    with pytest.raises(NotFound):
        store.get(first, Location("00000099.pack", 0))


def test_a_loose_artifact_read_at_a_pack_location_is_refused(store: ArtifactStore) -> None:
    ident = store.put_loose(b"loose body")
    placed = packed(store, [b"packed body"])
    with pytest.raises(ArtifactCorrupt):
        store.get(ident, placed[0][1])


def test_location_round_trips_through_json() -> None:
    location = Location("00000003.pack", 4242)
    assert Location.from_json(location.as_json()) == location
    assert Location.from_json(None) is None


# -- write failures ------------------------------------------------------------------------------------


def test_a_failed_pack_write_leaves_the_pack_clean(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    placed = packed(store, [b"before"])
    writer = store.pack_writer()
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        if bytes(data[:4]) == b"HSA1":
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(DurabilityError):
        writer.add(b"does not fit" * 50)
    monkeypatch.undo()
    writer.close()

    assert store.verify() == (1, [])
    assert store.get(*placed[0]) == b"before"


def test_pack_sync_after_a_failed_fsync_never_reports_success(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = store.pack_writer()
    writer.add(b"checkpoint")
    real = os.fdatasync
    calls: list[int] = []

    def fails_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fails_once)
    with pytest.raises(DurabilityError):
        writer.sync()
    try:
        with pytest.raises(DurabilityError):
            writer.sync()  # the page cache may have dropped the frame: never "durable" now
        with pytest.raises(DurabilityError):
            writer.add(b"another checkpoint")
    finally:
        writer.close()


def test_a_pack_whose_last_frame_lost_its_bytes_is_not_appended_after(store: ArtifactStore) -> None:
    """A crash can leave the newest frame's size on disk but zeros for its payload."""
    placed = packed(store, [b"kept", b"lost checkpoint" * 10])
    pack = store.packs / placed[1][1].pack
    data = bytearray(pack.read_bytes())
    start = placed[1][1].offset + HEADER_BYTES
    data[start:] = bytes(len(data) - start)
    pack.write_bytes(bytes(data))
    size = len(data)

    ident, location = packed(store, [b"after the crash"])[0]

    assert location.pack != pack.name
    assert pack.stat().st_size == size
    assert store.get(ident, location) == b"after the crash"
    assert store.get(*placed[0]) == b"kept"
