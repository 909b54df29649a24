"""A segment's preallocated tail (FORMAT.md section 4): what a writer that preallocates leaves,
what readers make of it, and every state a power failure can leave of records written over it.

The writer keeps the open segment's file longer than its records, a tail of newlines the next
records overwrite in place, so most syncs do not grow the file. Readers take the records to
end at the last segment's first empty line: newlines after it are the tail (clean), anything
else there was never synced and is a torn tail, even an intact record (a power failure keeps
any of the sectors written since the last sync, in any combination). Nothing synced is ever
lost, and no such state is ever called corruption.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from handshake_cli.errors import JournalNeedsRepair
from handshake_cli.storage.filesystem import repair_torn_tail
from handshake_cli.storage.journal.backwards import find_backwards
from handshake_cli.storage.journal.codec import Record, segment_name
from handshake_cli.storage.journal.find import find_records
from handshake_cli.storage.journal.scan import list_segments, read_last_record, scan
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.session_files import OpenFile
from handshake_cli.storage.store import SessionDir

SID = "01234567-tail-session"
SECTOR = 512


def fixed_clock() -> str:
    return "2026-12-03T00:00:00.000000Z"


def writer(journal: Path, preallocate: int = 4096, segment_bytes: int = 1 << 20) -> JournalWriter:
    journal.mkdir(parents=True, exist_ok=True)
    made = JournalWriter.create(journal, SID, segment_bytes=segment_bytes, clock=fixed_clock)
    made.preallocate(preallocate)
    return made


def append(journal_writer: JournalWriter, n: int, *, sync: bool = True) -> Record:
    data = {"n": n, "note": f"record {n} " + "x" * (n % 7) * 20}
    return journal_writer.append("model.chunk", data, sync=sync)


def segment_bytes_of(journal: Path) -> bytes:
    return b"".join((journal / name).read_bytes() for name in list_segments(journal))


def test_records_are_written_over_the_tail_without_growing_the_file(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    w = writer(journal, preallocate=8192)
    first = append(w, 0)
    segment = journal / first.segment
    sizes = {segment.stat().st_size}
    appended = [first]
    for n in range(1, 30):
        appended.append(append(w, n))
        sizes.add(segment.stat().st_size)
    data = segment.read_bytes()
    records_end = appended[-1].offset + len(data[appended[-1].offset :].split(b"\n", 1)[0]) + 1
    # A handful of extensions for 30 records, not one per record; the tail is only newlines.
    assert len(sizes) < 5
    assert len(data) > records_end and set(data[records_end:]) == {ord("\n")}
    result = scan(journal, SID)
    assert result.damage is None
    assert result.records == appended
    assert result.valid_ends[first.segment] == records_end
    assert read_last_record(journal) == appended[-1]
    w.close()
    assert segment.stat().st_size == records_end  # a clean close leaves records only


def test_a_closed_journal_is_byte_for_byte_what_an_appending_writer_makes(tmp_path: Path) -> None:
    small = 3000  # rotation, several times
    with_tail = writer(tmp_path / "a", preallocate=1024, segment_bytes=small)
    plain = writer(tmp_path / "b", preallocate=0, segment_bytes=small)
    for n in range(60):
        assert append(with_tail, n, sync=n % 3 == 0) == append(plain, n, sync=n % 3 == 0)
    with_tail.close()
    plain.close()
    assert list_segments(tmp_path / "a") == list_segments(tmp_path / "b")
    assert len(list_segments(tmp_path / "a")) > 3
    for name in list_segments(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_only_the_last_segment_ever_has_a_tail(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    w = writer(journal, preallocate=2048, segment_bytes=3000)
    for n in range(40):
        append(w, n)
    names = list_segments(journal)
    assert len(names) > 2
    for name in names[:-1]:
        assert (journal / name).read_bytes().endswith(b'"}\n')  # cut before the next segment began
    assert (journal / names[-1]).read_bytes().endswith(b"\n\n")
    assert scan(journal, SID).damage is None


@pytest.mark.parametrize("reopen_preallocating", [True, False])
def test_a_writer_that_died_leaves_a_tail_the_next_writer_writes_over(
    tmp_path: Path, reopen_preallocating: bool
) -> None:
    """The next writer, preallocating or not, appends where the records end: an appending
    writer that went on after the newlines would put its records where readers never look."""
    journal = tmp_path / "journal"
    w = writer(journal)
    appended = [append(w, n) for n in range(5)]
    died = tmp_path / "died"
    shutil.copytree(journal, died)  # the files as a SIGKILL leaves them: no close, tail kept
    w.close()
    assert (died / appended[0].segment).read_bytes().endswith(b"\n\n")

    again = JournalWriter.open(died, SID, clock=fixed_clock)
    if reopen_preallocating:
        again.preallocate(4096)
    appended += [append(again, n) for n in range(5, 9)]
    result = scan(died, SID)
    assert result.damage is None and result.records == appended
    again.close()
    assert scan(died, SID).records == appended
    assert b"\n\n" not in (died / appended[0].segment).read_bytes()


def test_records_after_the_first_empty_line_are_never_read(tmp_path: Path) -> None:
    """An intact record past the tail's first newline (kept by a power failure that lost what
    was written before it) was never synced: a torn tail for the scan, invisible to every
    reader that looks for records without a scan."""
    journal = tmp_path / "journal"
    w = writer(journal, preallocate=0)
    appended = [append(w, n) for n in range(6)]
    w.close()
    segment = journal / appended[0].segment
    data = segment.read_bytes()
    sixth = appended[5]
    stray = data[sixth.offset :]  # record 6's line, which links to record 5
    kept = data[: sixth.offset]
    segment.write_bytes(kept + b"\n" * 700 + stray + b"\n" * 300)

    result = scan(journal, SID)
    assert result.records == appended[:5]
    assert result.torn_tail is not None
    assert (result.torn_tail.offset, result.torn_tail.length) == (len(kept), 700 + len(stray) - 1)
    assert read_last_record(journal) == appended[4]
    assert [r.seq for r, _ in find_backwards(journal, SID, "model.chunk")] == [5, 4, 3, 2, 1]
    assert [r.seq for r in find_records(journal, re.compile(rb'"n":5')).records] == []

    session = SessionDir(SID, tmp_path)
    repair = repair_torn_tail(session, result.torn_tail)
    assert repair["quarantined"] is not None
    assert (tmp_path / repair["quarantined"]).read_bytes() == b"\n" * 700 + stray
    assert segment.read_bytes() == kept


def test_a_tail_in_a_segment_that_is_not_the_last_is_corruption(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    w = writer(journal, preallocate=0, segment_bytes=2000)
    for n in range(30):
        append(w, n)
    w.close()
    names = list_segments(journal)
    first = journal / names[0]
    first.write_bytes(first.read_bytes() + b"\n\n\n")
    damage = scan(journal, SID).damage
    assert damage is not None and damage.kind == "corrupt" and damage.segment == names[0]


def test_damage_before_intact_records_is_still_corruption_when_a_tail_follows(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    w = writer(journal)
    appended = [append(w, n) for n in range(8)]
    segment = journal / appended[0].segment
    data = bytearray(segment.read_bytes())
    data[appended[3].offset + 20] ^= 0x01  # a flipped bit in record 4, synced long ago
    segment.write_bytes(bytes(data))
    damage = scan(journal, SID).damage
    assert damage is not None and damage.kind == "corrupt" and damage.offset == appended[3].offset
    w.close()


def test_export_carries_records_only(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    w = writer(journal)
    appended = [append(w, n) for n in range(4)]
    segment = journal / appended[0].segment
    on_disk = segment.read_bytes()
    fd = os.open(segment, os.O_RDONLY)
    try:
        opened = OpenFile(f"journal/{segment.name}", segment, fd)
        exported = opened.read()
    finally:
        os.close(fd)
    assert len(on_disk) > len(exported) == opened.size
    assert exported == on_disk.rstrip(b"\n") + b"\n"
    w.close()
    assert exported == segment.read_bytes()


# -- power failures ------------------------------------------------------------------------


def power_loss_states(synced: bytes, written: bytes, limit: int, rng: random.Random) -> list[bytes]:
    """What a power failure can leave of a file that was `synced` and is now `written`: any
    combination of the sectors that changed in place, old or new, and a growth either lost
    whole or kept (ext4 commits a file's new size only once the data under it is written)."""
    shared = min(len(synced), len(written))
    changed = [s for s in range(0, shared, SECTOR) if synced[s : s + SECTOR] != written[s : s + SECTOR]]
    combos: list[tuple[bool, ...]]
    if len(changed) <= 10:
        combos = list(itertools.product((False, True), repeat=len(changed)))
    else:
        combos = [tuple(rng.random() < 0.5 for _ in changed) for _ in range(limit)]
    states = []
    for combo in combos:
        state = bytearray(synced[:shared])
        for start, new in zip(changed, combo, strict=True):
            if new:
                state[start : start + SECTOR] = written[start : start + SECTOR]
        for grown in (False, True) if len(written) > shared else (False,):
            states.append(bytes(state) + (written[shared:] if grown else synced[shared:]))
    return states


@pytest.mark.parametrize("seed", range(6))
def test_no_power_failure_loses_a_synced_record_or_reads_as_corruption(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    journal = tmp_path / "journal"
    w = writer(journal, preallocate=rng.choice((600, 2048, 8192)))
    appended = [append(w, n) for n in range(rng.randrange(1, 12))]
    segment = journal / appended[0].segment
    synced = segment.read_bytes()
    unsynced = [append(w, n, sync=False) for n in range(len(appended), len(appended) + rng.randrange(1, 9))]
    written = segment.read_bytes()
    states = power_loss_states(synced, written, 400, rng)
    assert len(states) > 1
    for state in states:
        segment.write_bytes(state)
        result = scan(journal, SID)
        assert result.corruption is None, result.damage
        assert result.records[: len(appended)] == appended  # nothing synced is lost
        assert result.records == (appended + unsynced)[: len(result.records)]
        if result.torn_tail is not None:
            with pytest.raises(JournalNeedsRepair):
                JournalWriter.open(journal, SID)  # until recovery cuts it
            repair_torn_tail(SessionDir(SID, tmp_path), result.torn_tail)
        JournalWriter.open(journal, SID).close()
        assert scan(journal, SID).records == result.records
    w.close()


def test_a_torn_tail_over_the_preallocated_tail_is_cut_and_the_journal_goes_on(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    w = writer(journal, preallocate=4096)
    appended = [append(w, n) for n in range(3)]
    segment = journal / appended[0].segment
    synced = segment.read_bytes()
    append(w, 3, sync=False)
    written = segment.read_bytes()
    w.close()
    # The new record's first sector lost, its second kept: a gap of newlines, then its end.
    start = appended[-1].offset + len(synced[appended[-1].offset :].split(b"\n", 1)[0]) + 1
    half = start + (len(written[start:].split(b"\n", 1)[0]) // 2)
    state = synced[:start] + b"\n" * (half - start) + written[half : len(synced)]
    segment.write_bytes(state)
    result = scan(journal, SID)
    assert result.records == appended and result.torn_tail is not None and result.torn_tail.offset == start
    repair_torn_tail(SessionDir(SID, tmp_path), result.torn_tail)
    again = JournalWriter.open(journal, SID, clock=fixed_clock)
    again.preallocate(4096)
    more = append(again, 3)
    again.close()
    assert scan(journal, SID).records == [*appended, more]
    assert segment_name(1) in os.listdir(journal)
