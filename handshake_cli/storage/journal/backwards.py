"""Finding the newest records of one type from a journal's end, without reading all of it.

Recovery wants the newest checkpoint of a journal of a million records; reading the journal
from its start to find it would cost what the whole journal costs. So each segment, newest
first, is searched from its end in growing windows for the type's key/value pair (which can
only occur unescaped as a record's own type or inside a record's data; the type is checked
after the record's checksum), and a record found is kept only where its seq says it belongs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from handshake_cli.storage import durable
from handshake_cli.storage.journal.codec import MAX_SEGMENT_BYTES, Record, check_content, genesis, records_end
from handshake_cli.storage.journal.records import MAX_RECORD_BYTES
from handshake_cli.storage.journal.scan import list_segments, read_last_record, read_segment

# The first window read from a segment's end; it doubles until the line is whole in it.
FIRST_WINDOW = 256 * 1024


def find_backwards(
    journal_dir: Path, session_id: str, type_: str, *, at_most: int | None = None
) -> Iterator[tuple[Record, bytes]]:
    """Intact records of `type_` that sit where their seq says, newest first, each with its
    line (without the newline).

    A record's checksum proves its bytes, not its place: a copy of an old line appended at
    the end, or a stale segment whose name sorts last, is intact too. So a record must link
    (seq and `prev`) to the record just before it, and its segment's first record to the
    last record of the segment before. One that does not is skipped; a scan from an older
    record then meets it as damage, as `inspect --verify` does."""
    needle = b'"type":"' + type_.encode() + b'"'
    segments = list_segments(journal_dir)
    for index in range(len(segments) - 1, -1, -1):
        name = segments[index]
        if at_most is not None and int(name.split(".")[0]) > at_most:
            continue  # every record in this segment comes after `at_most`
        anchor: bool | None = None  # does this segment follow the one before it? (checked once)
        last = index == len(segments) - 1
        for data, at, start, content in _lines_holding(journal_dir / name, needle, last=last):
            if check_content(content) is None:
                continue
            record = Record.decode(content, name, start)
            if record.type != type_ or (at_most is not None and record.seq > at_most):
                continue
            if anchor is None:
                anchor = _segment_follows(journal_dir, session_id, segments, index)
            if anchor and _follows_line_before(data, at, record):
                yield record, content


def _lines_holding(path: Path, needle: bytes, *, last: bool) -> Iterator[tuple[bytes, int, int, bytes]]:
    """Every line of the segment at `path` that holds `needle`, from the last up: a window of
    the segment that holds it and the line before it, where the line starts in the window
    and in the segment, and the line.
    The window doubles (from the end) until it does; a segment larger than any handshake
    writes is searched in its first MAX_SEGMENT_BYTES, as a scan reads it. In the `last`
    segment nothing after the first empty line is looked at (a preallocated tail, and what was
    written over it and never synced: scan.py); the first window holds the whole tail."""
    fd = durable.open_read(path)
    try:
        with durable.environment("read", path):
            size = os.fstat(fd).st_size
            if size > MAX_SEGMENT_BYTES:
                size = MAX_SEGMENT_BYTES
            window = min(size, FIRST_WINDOW)
            end = size  # absolute: lines that start at or after it were looked at
            while True:
                base = size - window
                data = os.pread(fd, window, base)
                if len(data) != window:  # the file shrank (it is being repaired): read it whole
                    data, base = read_segment(path)[0], 0
                    size = len(data)
                if last:
                    tail = records_end(data, from_start=base == 0)
                    end = min(end, base + tail)
                while (at := data.rfind(needle, 0, max(0, end - base))) != -1:
                    newline = data.rfind(b"\n", 0, at)
                    before = data.rfind(b"\n", 0, newline) if newline > 0 else -1
                    if base > 0 and (newline == -1 or before == -1):
                        break  # this line, or the line before it, begins before the window
                    start = newline + 1
                    stop = data.find(b"\n", at)
                    yield data, start, base + start, data[start : stop if stop != -1 else len(data)]
                    end = base + start
                if base == 0:
                    return
                window = min(size, window * 2)
    finally:
        os.close(fd)


def _links(before: tuple[int, str], seq: int, prev: str) -> bool:
    """Whether a record (`seq`, `prev`) comes right after `before` (its seq and sum)."""
    return before == (seq - 1, prev)


def _follows_line_before(data: bytes, start: int, record: Record) -> bool:
    """The record at `start` links to the line just before it in its segment (or is the
    segment's first, which `_segment_follows` vouches for)."""
    if start == 0:
        return True
    line_start = data.rfind(b"\n", 0, start - 1) + 1
    parsed = check_content(data[line_start : start - 1])
    return parsed is not None and _links((parsed[0], parsed[2]), record.seq, record.prev)


def _segment_follows(journal_dir: Path, session_id: str, segments: list[str], index: int) -> bool:
    """The segment's first record has the seq its name says and links to the last record of
    the segment before it (to the session's genesis for the first segment)."""
    parsed = check_content(_first_line(journal_dir / segments[index]))
    if parsed is None or parsed[0] != int(segments[index].split(".")[0]):
        return False
    seq, prev, _ = parsed
    if index == 0:
        return seq == 1 and prev == genesis(session_id)
    before = read_last_record(journal_dir, segments[index - 1])
    return before is not None and _links((before.seq, before.sum), seq, prev)


def _first_line(path: Path) -> bytes:
    """The first line of a segment (without its newline): read until its newline."""
    fd = durable.open_read(path)
    try:
        line = b""
        with durable.environment("read", path):
            while b"\n" not in line and len(line) <= MAX_RECORD_BYTES:
                block = os.pread(fd, 1 << 16, len(line))
                if not block:
                    break
                line += block
        return line.split(b"\n", 1)[0]
    finally:
        os.close(fd)
