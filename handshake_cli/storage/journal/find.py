"""Finding a few records in a long journal by their bytes, without scanning it.

A scan verifies every record's checksum and the chain, and decodes what it keeps: for a
journal of a million records that is seconds. A reader that needs only rare records (a
session's history needs the records that open a process, the endings, the state changes)
can instead search the segments' bytes for a pattern and decode only the lines it matches:
each such line still proves its own bytes by its checksum and its content is checked by
`Record.decode`, but the chain is not (the lines between are never looked at); that is
`scan`'s job, and `inspect --verify`'s. Reading the bytes and one regular-expression pass
over them cost a few milliseconds per ten megabytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from handshake_cli.storage.journal.codec import Record, check_content, records_end
from handshake_cli.storage.journal.records import RecordInvalid
from handshake_cli.storage.journal.scan import list_segments, read_segment


@dataclass
class Found:
    records: list[Record] = field(default_factory=list)  # in seq order, each once
    unreadable: int = 0  # matched lines that are not intact records (damage, or a crafted line)


def find_records(
    journal_dir: Path,
    pattern: re.Pattern[bytes],
    *,
    before: Iterable[str] = (),
    from_segment: str | None = None,
) -> Found:
    """The intact records whose line `pattern` matches (anywhere in the line), in seq order.

    `before`: types whose preceding record (the line before, or the last line of the segment
    before) is wanted too; `from_segment`: skip the segments before this one. A line without
    its newline (a torn tail being written or left by a crash) is never returned."""
    wanted_before = frozenset(before)
    found = Found()
    seen: dict[int, Record] = {}
    segments = list_segments(journal_dir)
    if from_segment is not None and from_segment in segments:
        segments = segments[segments.index(from_segment) :]
    previous_last: Record | None = None  # the last intact line of the segment before
    for name in segments:
        data, _size = read_segment(journal_dir / name)
        if name == segments[-1]:
            data = data[: records_end(data)]  # never what lies over a preallocated tail
        last_start = -1
        for match in pattern.finditer(data):
            start = data.rfind(b"\n", 0, match.start()) + 1
            if start == last_start:  # another match in a line already read
                continue
            last_start = start
            record = _line_at(data, name, start, found)
            if record is None or record.seq in seen:
                continue
            seen[record.seq] = record
            if record.type in wanted_before:
                if start > 0:
                    prior = _line_at(data, name, data.rfind(b"\n", 0, start - 1) + 1, found)
                else:
                    prior = previous_last
                if prior is not None and prior.seq == record.seq - 1:
                    seen.setdefault(prior.seq, prior)
        if wanted_before:
            end = data.rfind(b"\n")
            previous_last = _line_at(data, name, data.rfind(b"\n", 0, end) + 1, found) if end > 0 else None
    found.records = [seen[seq] for seq in sorted(seen)]
    return found


def _line_at(data: bytes, segment: str, start: int, found: Found) -> Record | None:
    end = data.find(b"\n", start)
    if end < 0:
        return None
    content = data[start:end]
    if check_content(content) is None:
        found.unreadable += 1
        return None
    try:
        return Record.decode(content, segment, start)
    except RecordInvalid:
        found.unreadable += 1
        return None
