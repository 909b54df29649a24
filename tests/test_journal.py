"""The journal's contract (DESIGN section 2, "Journal records"), proven on real files.

Each property the design asks of the format has a test here: records read back exactly as
they were appended (across rotation), a torn tail is recognised as such at every byte where
a crash could cut the last record, every single flipped bit is detected, a record removed,
duplicated or reordered in the middle is detected, and the file stays readable with jq and
grep. The writer's side: it refuses to append to a damaged journal, a failed fsync is fatal,
and a failed write leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handshake_cli.storage.journal.scan as scan_module
from handshake_cli.errors import DurabilityError, ExitCode, IntegrityError, JournalNeedsRepair
from handshake_cli.storage.journal import records
from handshake_cli.storage.journal.codec import (
    DEFAULT_SEGMENT_BYTES,
    Record,
    encode,
    genesis,
    json_encoder,
    segment_name,
)
from handshake_cli.storage.journal.scan import Decode, ScanResult, list_segments, read_last_record, scan
from handshake_cli.storage.journal.writer import JournalWriter

SID = "01234567-test-session"


def write_journal(
    journal_dir: Path,
    count: int,
    *,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    data: Any = None,
) -> list[Record]:
    """A journal of `count` records, every one synced, as a writer under the lock makes it."""
    journal_dir.mkdir(exist_ok=True)
    appended = []
    with JournalWriter.create(journal_dir, SID, segment_bytes=segment_bytes) as writer:
        for i in range(count):
            payload = data(i) if data else {"n": i, "note": f"record {i}"}
            appended.append(writer.append("model.chunk", payload))
    return appended


def only_segment(journal_dir: Path) -> Path:
    names = list_segments(journal_dir)
    assert len(names) == 1, names
    return journal_dir / names[0]


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line, the newline included in `end`."""
    spans, pos = [], 0
    while pos < len(data):
        end = data.index(b"\n", pos) + 1
        spans.append((pos, end))
        pos = end
    return spans


def triples(records: list[Record]) -> list[tuple[int, str, Any]]:
    return [(r.seq, r.type, r.data) for r in records]


# -- round trip ----------------------------------------------------------------------------

# Strings a journal must carry unchanged: anything Unicode has, lone surrogates included (a
# model may stream half of a pair), and fragments of the framing itself.
_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_text = st.one_of(
    st.text(alphabet=st.one_of(st.characters(), _surrogates), max_size=20),
    st.sampled_from(['{"seq":1,', ',"sum":"', ',"prev":"', '"}', "\n", "\u2028", "café ✓", "\x00"]),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)
# Type names as the writer accepts them (records.writer_problem); types it knows carry data
# of their own shape, so random data goes with names it does not know.
_types = st.from_regex(r"[a-z][a-z_]{0,8}(\.[a-z_]{1,8}){1,2}", fullmatch=True).filter(
    lambda name: name not in records.KNOWN_TYPES
)
_records = st.lists(
    st.tuples(_types, st.dictionaries(_text, _json, max_size=4), st.booleans()),
    min_size=1,
    max_size=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, segment_bytes=st.integers(min_value=1, max_value=1500))
def test_any_records_read_back_identical(
    records: list[tuple[str, dict[str, Any], bool]], segment_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        journal_dir = Path(tmp) / "journal"
        journal_dir.mkdir()
        with JournalWriter.create(journal_dir, SID, segment_bytes=segment_bytes) as writer:
            appended = [writer.append(t, d, sync=s) for t, d, s in records]
            writer.sync()

        result = scan(journal_dir, SID)

        assert result.damage is None
        assert triples(result.records) == [(i + 1, t, d) for i, (t, d, _) in enumerate(records)]
        # What `append` acknowledged is exactly what is on disk, down to the byte offset.
        assert result.records == appended
        assert (result.count, result.last_seq) == (len(records), len(records))
        assert result.last_sum == appended[-1].sum
        assert read_last_record(journal_dir) == appended[-1]

        # Rotation: each segment is named after the seq of its first record, and only a
        # record that is alone in its segment may make it bigger than `segment_bytes`.
        by_segment: dict[str, list[Record]] = {}
        for record in result.records:
            by_segment.setdefault(record.segment, []).append(record)
        assert list_segments(journal_dir) == list(by_segment)
        for name, held in by_segment.items():
            assert name == segment_name(held[0].seq)
            size = (journal_dir / name).stat().st_size
            assert size <= segment_bytes or len(held) == 1


def test_a_journal_without_segments_scans_empty(tmp_path: Path) -> None:
    result = scan(tmp_path, SID)
    assert (result.records, result.count, result.damage) == ([], 0, None)
    assert read_last_record(tmp_path) is None


def test_a_journal_belongs_to_its_session(tmp_path: Path) -> None:
    """The chain starts from the session id, so one session's journal cannot pass for another's."""
    write_journal(tmp_path / "j", 3)
    result = scan(tmp_path / "j", "another-session")
    assert result.damage is not None
    assert (result.damage.kind, result.damage.offset, result.count) == ("corrupt", 0, 0)


# -- torn tails ----------------------------------------------------------------------------


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    appended = write_journal(journal_dir, 10, data=lambda i: {"text": f"chunk {i} ✓", "i": i})
    segment = only_segment(journal_dir)
    original = segment.read_bytes()
    start, end = record_spans(original)[-1]
    assert end == len(original)

    for cut in range(start, end + 1):
        segment.write_bytes(original[:cut])
        result = scan(journal_dir, SID)
        last = read_last_record(journal_dir)

        if cut in (start, end):  # a whole number of records: nothing is torn
            expected = appended[:9] if cut == start else appended
            assert result.damage is None, cut
            assert result.records == expected
            assert last == expected[-1]
            continue

        damage = result.damage
        assert damage is not None, cut
        assert damage.kind == "torn_tail", (cut, damage)
        assert damage.repairable
        assert result.corruption is None and result.torn_tail == damage
        if cut == end - 1:
            # Only the newline is missing: the record itself is intact and kept.
            assert (damage.offset, damage.length) == (end - 1, 0), damage
            assert result.records == appended
            assert last == appended[-1]
        else:
            assert (damage.offset, damage.length) == (start, cut - start), (cut, damage)
            assert result.records == appended[:9]
            assert result.valid_ends[segment.name] == start
            assert last == appended[8]

        with pytest.raises(JournalNeedsRepair) as raised:
            JournalWriter.open(journal_dir, SID)
        assert int(raised.value.exit_code) == 5  # ExitCode.INTEGRITY


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00" * 4096, id="zero-page"),
        pytest.param(b"\x00", id="one-zero-byte"),
        pytest.param(b"\xff\xfe\x00garbage\n\x13\x37 more garbage\n", id="binary-lines"),
        pytest.param(b'{"seq":11,"ts":"2025-01-02T03:04:05Z","type":"model.chu', id="half-a-record"),
    ],
)
def test_garbage_after_the_last_good_record_is_a_torn_tail(tmp_path: Path, garbage: bytes) -> None:
    journal_dir = tmp_path / "journal"
    appended = write_journal(journal_dir, 10)
    segment = only_segment(journal_dir)
    good_size = segment.stat().st_size
    with segment.open("ab") as fh:
        fh.write(garbage)

    result = scan(journal_dir, SID)

    assert result.damage is not None
    assert result.damage.kind == "torn_tail"
    assert (result.damage.offset, result.damage.length) == (good_size, len(garbage))
    assert result.records == appended
    assert read_last_record(journal_dir) == appended[-1]


def test_last_record_zeroed_in_place_is_a_torn_tail(tmp_path: Path) -> None:
    """A crash after the size grew but before the data blocks were written leaves zeros."""
    journal_dir = tmp_path / "journal"
    appended = write_journal(journal_dir, 10)
    segment = only_segment(journal_dir)
    data = segment.read_bytes()
    start, end = record_spans(data)[-1]
    segment.write_bytes(data[:start] + b"\x00" * (end - start))

    result = scan(journal_dir, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.offset) == ("torn_tail", start)
    assert result.records == appended[:9]


def test_zeroed_record_in_the_middle_is_corrupt(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    appended = write_journal(journal_dir, 10)
    segment = only_segment(journal_dir)
    data = segment.read_bytes()
    start, end = record_spans(data)[4]
    segment.write_bytes(data[:start] + b"\x00" * (end - start) + data[end:])

    result = scan(journal_dir, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.offset) == ("corrupt", start)
    assert not result.damage.repairable
    assert result.records == appended[:4]


# -- every single bit ----------------------------------------------------------------------


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    # Data holding bytes that one flip turns into a newline ('J' 0x4A, '*' 0x2A, and the
    # 0x8A inside 'Ê'), so flips that split a record in two are exercised too.
    write_journal(
        journal_dir,
        24,
        data=lambda i: {"t": "J*Ê" if i % 3 == 0 else f"c{i}"},
    )
    segment = only_segment(journal_dir)
    original = segment.read_bytes()
    spans = record_spans(original)
    last_start = spans[-1][0]
    owner = [index for index, (start, end) in enumerate(spans) for _ in range(start, end)]
    assert len(owner) == len(original) < 4500

    fd = os.open(segment, os.O_WRONLY)
    try:
        for pos, byte in enumerate(original):
            index = owner[pos]
            start, end = spans[index]
            for bit in range(8):
                os.pwrite(fd, bytes([byte ^ (1 << bit)]), pos)
                result = scan(journal_dir, SID, decode=False)
                damage = result.damage
                where = f"byte {pos} bit {bit} (record {index + 1})"

                assert damage is not None, f"flip at {where} went unnoticed"
                if pos < last_start:
                    assert damage.kind == "corrupt", f"{where}: {damage}"
                else:
                    assert damage.kind in ("corrupt", "torn_tail"), f"{where}: {damage}"
                # Located inside the damaged record, and nothing before it is lost. A flipped
                # newline leaves its record's content intact: that record is kept, and the
                # damage starts where its newline was.
                assert start <= damage.offset <= pos, f"{where}: {damage}"
                assert result.count == index + (pos == end - 1), f"{where}: {result.count}"
            os.pwrite(fd, bytes([byte]), pos)
    finally:
        os.close(fd)
    assert scan(journal_dir, SID).damage is None


def test_every_single_bit_flip_in_a_segment_that_is_not_the_last_is_corrupt(tmp_path: Path) -> None:
    write_journal(tmp_path, 12, segment_bytes=500, data=lambda i: {"t": "J*Ê", "i": i})
    names = list_segments(tmp_path)
    assert len(names) >= 2
    segment = tmp_path / names[0]
    original = segment.read_bytes()

    fd = os.open(segment, os.O_WRONLY)
    try:
        for pos, byte in enumerate(original):
            for bit in range(8):
                os.pwrite(fd, bytes([byte ^ (1 << bit)]), pos)
                damage = scan(tmp_path, SID, decode=False).damage
                assert damage is not None, f"flip at byte {pos} bit {bit} went unnoticed"
                assert (damage.kind, damage.segment) == ("corrupt", names[0]), f"byte {pos} bit {bit}"
            os.pwrite(fd, bytes([byte]), pos)
    finally:
        os.close(fd)


# -- records removed, duplicated, reordered ---------------------------------------------------


def _rebuild(lines: list[bytes], order: list[int]) -> tuple[bytes, int]:
    """The segment with its lines in `order`, and the offset of the first line out of place."""
    data = b"".join(lines[i] for i in order)
    first_bad = next(k for k, i in enumerate(order) if i != k)
    return data, sum(len(lines[i]) for i in order[:first_bad])


@pytest.mark.parametrize(
    "order",
    [
        pytest.param([i for i in range(10) if i != 0], id="first-removed"),
        pytest.param([i for i in range(10) if i != 4], id="middle-removed"),
        pytest.param([i for i in range(10) if i != 8], id="second-to-last-removed"),
        pytest.param([0, 0, *range(1, 10)], id="first-duplicated"),
        pytest.param([0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9], id="middle-duplicated"),
        pytest.param([*range(10), 9], id="last-duplicated"),
        pytest.param([*range(10), 3], id="earlier-record-appended-again"),
        pytest.param([1, 0, *range(2, 10)], id="first-two-swapped"),
        pytest.param([0, 1, 2, 4, 3, 5, 6, 7, 8, 9], id="neighbours-swapped"),
        pytest.param([0, 1, 7, 3, 4, 5, 6, 2, 8, 9], id="distant-swapped"),
        pytest.param([0, 1, 2, 3, 4, 5, 6, 7, 9, 8], id="last-two-swapped"),
    ],
)
def test_removed_duplicated_or_reordered_records_are_corrupt(tmp_path: Path, order: list[int]) -> None:
    journal_dir = tmp_path / "journal"
    appended = write_journal(journal_dir, 10)
    segment = only_segment(journal_dir)
    original = segment.read_bytes()
    lines = [original[s:e] for s, e in record_spans(original)]
    data, first_bad = _rebuild(lines, order)
    segment.write_bytes(data)

    result = scan(journal_dir, SID)

    assert result.damage is not None
    assert result.damage.kind == "corrupt", result.damage
    assert not result.damage.repairable
    assert result.damage.offset == first_bad
    good = next(k for k, i in enumerate(order) if i != k)
    assert result.records == appended[:good]
    with pytest.raises(IntegrityError) as raised:
        JournalWriter.open(journal_dir, SID)
    assert not isinstance(raised.value, JournalNeedsRepair)
    assert raised.value.exit_code == 5


# -- the fast loop and the line-by-line path --------------------------------------------------

_edits = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
        st.tuples(st.just("drop_line"), st.integers(min_value=0), st.just(0)),
        st.tuples(st.just("double_line"), st.integers(min_value=0), st.just(0)),
        st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        st.tuples(st.just("foreign_line"), st.integers(min_value=0), st.just(0)),
        st.tuples(st.just("renumber"), st.integers(min_value=0), st.integers(min_value=-2, max_value=2)),
    ),
    max_size=3,
)


def _damage(data: bytes, edits: list[tuple[str, int, int]], foreign: bytes) -> bytes:
    """`data` with `edits` made; a `foreign_line` is the same line of `foreign`, a journal of
    the same records in another session: intact, in sequence, but not in this chain; a
    `renumber`ed line is re-sealed with another seq (a forgery: its checksum holds)."""
    for kind, at, value in edits:
        if not data:
            break
        at %= len(data)
        lines = data.split(b"\n")
        line = at % len(lines)
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ (1 << value)]) + data[at + 1 :]
        elif kind == "cut":
            data = data[:at]
        elif kind == "drop_line":
            data = b"\n".join(lines[:line] + lines[line + 1 :])
        elif kind == "double_line":
            data = b"\n".join(lines[: line + 1] + lines[line:])
        elif kind == "renumber":
            try:
                old = json.loads(lines[line])
                sealed, _sum = encode(old["seq"] + value, old["ts"], old["type"], old["data"], old["prev"])
            except (ValueError, KeyError, TypeError):
                continue  # not a record any more (an earlier edit)
            data = b"\n".join([*lines[:line], sealed.rstrip(b"\n"), *lines[line + 1 :]])
        elif kind == "foreign_line":
            others = foreign.split(b"\n")
            data = b"\n".join(lines[:line] + others[line : line + 1] + lines[line + 1 :])
        else:
            data = data[:at] + bytes([value]) + data[at:]
    return data


def _outcome(result: ScanResult) -> tuple[Any, ...]:
    return (result.records, result.count, result.last_seq, result.last_sum, result.damage, result.valid_ends)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=0, max_value=14),
    segment_bytes=st.sampled_from([300, 700, DEFAULT_SEGMENT_BYTES]),
    edits=_edits,
    decode=st.sampled_from([True, False, frozenset({"tool.result", "checkpoint.created"})]),
)
def test_the_fast_loop_reads_any_journal_as_the_line_by_line_path_does(
    count: int, segment_bytes: int, edits: list[tuple[str, int, int]], decode: Decode
) -> None:
    """scan() takes whole intact lines in one fast loop and leaves anything else to the
    line-by-line path; on any journal, damaged or not, both must find the same."""
    types = ["model.chunk", "tool.result", "checkpoint.created", "model.chunk"]
    with tempfile.TemporaryDirectory() as tmp:
        for session_id in (SID, "another-session"):
            journal_dir = Path(tmp) / session_id
            journal_dir.mkdir()
            with JournalWriter.create(journal_dir, session_id, segment_bytes=segment_bytes) as writer:
                for i in range(count):
                    writer.append(types[i % 4], {"i": i, "t": "J*Ê\n" if i % 3 == 0 else f"c{i}"})
        names = list_segments(journal_dir)
        journal_dir = Path(tmp) / SID
        if names:
            name = names[edits[0][1] % len(names) if edits else -1]
            foreign = (Path(tmp) / "another-session" / name).read_bytes()
            victim = journal_dir / name
            victim.write_bytes(_damage(victim.read_bytes(), edits, foreign))

        fast = scan(journal_dir, SID, decode=decode)
        real = scan_module._scan_intact_lines
        scan_module._scan_intact_lines = lambda data, name, result, decode, pos, base=0: pos
        try:
            slow = scan(journal_dir, SID, decode=decode)
        finally:
            scan_module._scan_intact_lines = real

        assert _outcome(fast) == _outcome(slow)


# -- rotation --------------------------------------------------------------------------------


def _rotated(journal_dir: Path) -> tuple[list[Record], list[str]]:
    appended = write_journal(journal_dir, 30, segment_bytes=600)
    names = list_segments(journal_dir)
    assert len(names) >= 4, names
    return appended, names


def test_segments_are_named_by_first_seq_and_scan_clean(tmp_path: Path) -> None:
    appended, names = _rotated(tmp_path)
    result = scan(tmp_path, SID)

    assert result.damage is None
    assert result.records == appended
    firsts = [r.seq for r in appended if r.offset == 0]
    assert names == [segment_name(seq) for seq in firsts]
    assert names[0] == "00000001.jsonl"
    for name in names:
        assert (tmp_path / name).stat().st_size <= 600


def test_torn_end_of_a_segment_that_is_not_the_last_is_corrupt(tmp_path: Path) -> None:
    appended, names = _rotated(tmp_path)
    segment = tmp_path / names[1]
    data = segment.read_bytes()
    start, _ = record_spans(data)[-1]
    segment.write_bytes(data[: start + 10])

    result = scan(tmp_path, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.segment, result.damage.offset) == ("corrupt", names[1], start)
    assert result.records == [r for r in appended if r.segment in names[:2]][:-1]


def test_missing_newline_at_the_end_of_a_segment_that_is_not_the_last_is_corrupt(tmp_path: Path) -> None:
    _, names = _rotated(tmp_path)
    segment = tmp_path / names[0]
    segment.write_bytes(segment.read_bytes()[:-1])

    result = scan(tmp_path, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.segment) == ("corrupt", names[0])


def test_flipped_bit_in_a_segment_that_is_not_the_last_is_corrupt(tmp_path: Path) -> None:
    _, names = _rotated(tmp_path)
    segment = tmp_path / names[1]
    data = bytearray(segment.read_bytes())
    data[-20] ^= 0x04  # inside the sum of the segment's last record
    segment.write_bytes(bytes(data))

    result = scan(tmp_path, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.segment) == ("corrupt", names[1])


def test_a_missing_segment_is_corrupt(tmp_path: Path) -> None:
    _, names = _rotated(tmp_path)
    os.unlink(tmp_path / names[2])

    result = scan(tmp_path, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.segment, result.damage.offset) == ("corrupt", names[3], 0)


def test_a_segment_under_the_wrong_name_is_corrupt(tmp_path: Path) -> None:
    _, names = _rotated(tmp_path)
    last = names[-1]
    wrong = segment_name(int(last.split(".")[0]) + 1)
    os.rename(tmp_path / last, tmp_path / wrong)

    result = scan(tmp_path, SID)

    assert result.damage is not None
    assert (result.damage.kind, result.damage.segment) == ("corrupt", wrong)


# -- opening for append ----------------------------------------------------------------------


def test_open_continues_the_chain_and_the_seq(tmp_path: Path) -> None:
    first = write_journal(tmp_path, 5, segment_bytes=700)
    with JournalWriter.open(tmp_path, SID, segment_bytes=700) as writer:
        assert writer.last_seq == 5
        more = [writer.append("tool.intent", {"k": i}) for i in range(20)]

    result = scan(tmp_path, SID)

    assert result.damage is None
    assert result.records == first + more
    assert [r.seq for r in result.records] == list(range(1, 26))
    assert more[0].prev == first[-1].sum
    # The writer went on in the last segment rather than starting a new one at once.
    assert more[0].segment == first[-1].segment
    assert len(list_segments(tmp_path)) > 1


def test_open_on_an_empty_journal_starts_at_seq_1(tmp_path: Path) -> None:
    with JournalWriter.open(tmp_path, SID) as writer:
        record = writer.append("session.created", {})
    assert (record.seq, record.prev, record.segment) == (1, genesis(SID), "00000001.jsonl")
    assert scan(tmp_path, SID).records == [record]


def test_open_refuses_a_torn_journal(tmp_path: Path) -> None:
    write_journal(tmp_path, 4)
    segment = only_segment(tmp_path)
    before = segment.read_bytes()[:-7]
    segment.write_bytes(before)

    with pytest.raises(JournalNeedsRepair) as raised:
        JournalWriter.open(tmp_path, SID)

    assert raised.value.exit_code == ExitCode.INTEGRITY
    assert "torn tail" in raised.value.message
    assert segment.read_bytes() == before  # refusing touched nothing


def test_open_refuses_a_corrupt_journal(tmp_path: Path) -> None:
    write_journal(tmp_path, 4)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[record_spans(bytes(data))[1][0] + 3] ^= 0x01
    segment.write_bytes(bytes(data))

    with pytest.raises(IntegrityError) as raised:
        JournalWriter.open(tmp_path, SID)

    assert not isinstance(raised.value, JournalNeedsRepair)
    assert raised.value.exit_code == ExitCode.INTEGRITY
    assert "corrupt" in raised.value.message


# -- failures while writing ------------------------------------------------------------------


def test_a_failed_fsync_is_fatal_to_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, 2)
    writer = JournalWriter.open(tmp_path, SID)

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(DurabilityError) as raised:
        writer.append("tool.intent", {"call": 1})
    assert "fsync" in raised.value.message
    monkeypatch.undo()  # the disk "recovers": the writer must still refuse

    with pytest.raises(DurabilityError):
        writer.append("tool.intent", {"call": 2})
    with pytest.raises(DurabilityError):
        writer.append("model.chunk", {"text": "x"}, sync=False)
    writer.close()
    # Nothing after the failure reached the journal.
    assert [r.seq for r in scan(tmp_path, SID).records] == [1, 2, 3]


def test_a_failed_group_commit_is_fatal_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = JournalWriter.create(tmp_path, SID)
    writer.append("model.chunk", {"i": 0}, sync=False)
    writer.append("model.chunk", {"i": 1}, sync=False)

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(DurabilityError):
        writer.sync()
    monkeypatch.undo()
    with pytest.raises(DurabilityError):
        writer.append("model.completed", {})
    writer.close()


def test_sync_after_a_failed_fsync_never_reports_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JournalWriter.create(tmp_path, SID)
    writer.append("tool.result", {"call": 1}, sync=False)
    calls = []
    real = os.fdatasync

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
            writer.sync()  # the page cache may have dropped the record: never "durable" now
    finally:
        writer.close()


def _fail_record_writes(monkeypatch: pytest.MonkeyPatch, how: str) -> list[int]:
    """Make the next journal record write fail after putting part of its bytes on disk."""
    real_write = os.write
    failed: list[int] = []

    def write(fd: int, data: Any) -> int:
        raw = bytes(data)
        if failed or not raw.startswith(b'{"seq":'):
            return real_write(fd, data)
        failed.append(fd)
        half = real_write(fd, raw[: len(raw) // 2])
        if how == "short":
            return half
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)
    return failed


@pytest.mark.parametrize("how", ["short", "error"])
def test_a_failed_write_leaves_the_journal_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    first = write_journal(tmp_path, 3)
    writer = JournalWriter.open(tmp_path, SID)
    failed = _fail_record_writes(monkeypatch, how)

    with pytest.raises(DurabilityError):
        writer.append("tool.intent", {"call": "c1"})
    assert failed, "the patched write was not reached"

    result = scan(tmp_path, SID)
    assert result.damage is None
    assert result.records == first

    # The half-written record was cut off, so the writer goes on from where it was.
    again = writer.append("tool.intent", {"call": "c1"})
    writer.close()
    result = scan(tmp_path, SID)
    assert result.damage is None
    assert result.records == [*first, again]
    assert again.seq == 4


def test_a_failed_write_of_the_first_record_of_a_new_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_journal(tmp_path, 3, segment_bytes=200)
    writer = JournalWriter.open(tmp_path, SID, segment_bytes=200)
    _fail_record_writes(monkeypatch, "error")

    with pytest.raises(DurabilityError):
        writer.append("tool.intent", {"call": "c1"})
    result = scan(tmp_path, SID)
    assert result.damage is None
    assert result.records == first
    writer.close()


# -- reading the last record -------------------------------------------------------------------


def test_read_last_record_on_a_clean_journal(tmp_path: Path) -> None:
    appended = write_journal(tmp_path, 7, segment_bytes=400)
    assert read_last_record(tmp_path) == appended[-1]


def test_read_last_record_skips_a_torn_tail(tmp_path: Path) -> None:
    appended = write_journal(tmp_path, 7)
    segment = only_segment(tmp_path)
    with segment.open("ab") as fh:
        fh.write(b'{"seq":8,"ts":"2025-01')
    assert read_last_record(tmp_path) == appended[-1]


def test_read_last_record_when_the_newest_segment_holds_only_a_torn_record(tmp_path: Path) -> None:
    appended = write_journal(tmp_path, 12, segment_bytes=400)
    names = list_segments(tmp_path)
    newest = tmp_path / names[-1]
    newest.write_bytes(newest.read_bytes()[:15])  # the rotation's first record, torn
    expected = [r for r in appended if r.segment == names[-2]][-1]

    assert read_last_record(tmp_path) == expected
    assert scan(tmp_path, SID).torn_tail is not None


def test_read_last_record_finds_a_record_larger_than_its_read_block(tmp_path: Path) -> None:
    big = {"text": "x" * 200_000}
    appended = write_journal(tmp_path, 3, data=lambda i: big if i == 2 else {"i": i})
    assert read_last_record(tmp_path) == appended[-1]
    segment = only_segment(tmp_path)
    with segment.open("ab") as fh:
        fh.write(b"\x00" * 70_000)  # a torn tail bigger than one read block
    assert read_last_record(tmp_path) == appended[-1]


# -- readable with the usual tools ---------------------------------------------------------------


def _journal_for_tools(journal_dir: Path, *, lone_surrogate: bool = True) -> list[Record]:
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("session.created", {"session_id": SID, "model": {"id": "m", "provider": "scripted"}}),
        ("model.chunk", {"text": "héllo wörld ✓ 日本"}),
        ("tool.intent", {"tool": "write_file", "args": {"path": "a\nb"}}),
        ("model.chunk", {"text": "half a pair: \ud83d" if lone_surrogate else "a whole pair: 😀"}),
        ("tool.result", {"ok": True, "value": None, "n": [1, 2.5, -3]}),
    ]
    journal_dir.mkdir()
    with JournalWriter.create(journal_dir, SID) as writer:
        return [writer.append(t, d) for t, d in payloads]


def test_every_line_is_a_json_object_with_the_documented_fields(tmp_path: Path) -> None:
    appended = _journal_for_tools(tmp_path / "journal")
    raw = only_segment(tmp_path / "journal").read_bytes()
    text = raw.decode("utf-8")  # strict: valid UTF-8 even with a lone surrogate in the data
    lines = text.split("\n")
    assert lines[-1] == ""  # every record ends with a newline

    prev = genesis(SID)
    for line, record in zip(lines[:-1], appended, strict=True):
        obj = json.loads(line)
        assert list(obj) == ["seq", "ts", "type", "data", "prev", "sum"]
        assert (obj["seq"], obj["type"], obj["data"]) == (record.seq, record.type, record.data)
        assert obj["prev"] == prev
        # FORMAT: sum is BLAKE2b-128 of the line's bytes before `,"sum":"`.
        raw_line = line.encode("utf-8")
        before = raw_line[: raw_line.rindex(b',"sum":"')]
        assert obj["sum"] == hashlib.blake2b(before, digest_size=16).hexdigest()
        prev = obj["sum"]
    # Non-ASCII text stays readable in the file rather than escaped.
    assert "héllo wörld ✓ 日本" in text


def test_grep_finds_records_by_type(tmp_path: Path) -> None:
    _journal_for_tools(tmp_path / "journal")
    segment = only_segment(tmp_path / "journal")
    out = subprocess.run(
        ["grep", "-c", '"type":"model.chunk"', str(segment)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "2"


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_jq_reads_the_journal(tmp_path: Path) -> None:
    # Without a lone surrogate: jq 1.6 rejects the `\ud83d` escape that such a string is
    # written as (valid JSON syntax, but jq 1.6 refuses unpaired surrogates).
    appended = _journal_for_tools(tmp_path / "journal", lone_surrogate=False)
    segment = only_segment(tmp_path / "journal")
    out = subprocess.run(
        ["jq", "-c", "[.seq, .type]", str(segment)], capture_output=True, text=True, check=True
    )
    assert [json.loads(line) for line in out.stdout.splitlines()] == [[r.seq, r.type] for r in appended]


# -- the encoders records are written with ------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(codec=None, exclude_categories=[]), max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON_VALUES, sort_keys=st.booleans(), ensure_ascii=st.booleans(), allow_nan=st.booleans())
def test_the_prebuilt_encoder_writes_what_json_writes(
    value: Any, sort_keys: bool, ensure_ascii: bool, allow_nan: bool
) -> None:
    """Records and checkpoint bodies are hashed in the encoder's bytes: it must be json's text
    exactly, lone surrogates and NaN included (or the same refusal)."""
    reference = json.JSONEncoder(
        sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=(",", ":")
    )
    fast = json_encoder(sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan)
    try:
        expected = reference.encode(value)
    except ValueError:
        with pytest.raises(ValueError):
            fast(value)
        return
    assert fast(value) == expected
    assert fast(value) == expected  # and again: nothing of one call stays for the next


def test_a_sync_handle_syncs_what_was_written_to_the_open_segment(tmp_path: Path) -> None:
    """`sync_handle` (a group commit's sync outside the writer's lock): a descriptor of the
    segment records are written to now, and the last seq written; older segments were synced
    as they rotated."""
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    with JournalWriter.create(journal_dir, SID, segment_bytes=400) as writer:
        assert writer.sync_handle() is None  # nothing written: no segment yet
        for i in range(6):
            writer.append("test.event", {"i": i, "pad": "x" * 100}, sync=False)
        handle = writer.sync_handle()
        assert handle is not None
        fd, last = handle
        try:
            assert last == 6
            newest = journal_dir / list_segments(journal_dir)[-1]
            assert len(list_segments(journal_dir)) > 1  # it rotated on the way
            assert os.fstat(fd).st_ino == newest.stat().st_ino
            os.fdatasync(fd)
        finally:
            os.close(fd)
        writer.append("test.event", {"i": 6}, sync=False)  # the writer goes on as before
    assert [r.data["i"] for r in scan(journal_dir, SID).records] == list(range(7))
