"""Reading a session's journal back from `handshake.records`, verified as the files are.

A row is one appended line at a position `(segment, byte_offset)`: the rows of a segment,
in offset order, are the bytes its file would hold, so a segment is verified by the very
scanner the filesystem store uses (`scan.scan_segment_data`), damage is located to the same
byte, and an export reproduces the files. A row missing in the middle of a segment (offsets
that do not follow) is corruption at the first missing byte.

Every function here reads through the connection it is given, inside the caller's
transaction when it needs a consistent view of several rows.
"""

from __future__ import annotations

import re

from handshake_cli.errors import IntegrityError
from handshake_cli.storage.journal import codec
from handshake_cli.storage.journal.codec import Record, check_content, genesis, segment_name
from handshake_cli.storage.journal.records import RecordInvalid
from handshake_cli.storage.journal.scan import Damage, Decode, ScanResult, Start, scan_segment_data
from handshake_cli.storage.postgres.connect import Connection

SEGMENT = re.compile(r"([0-9]{8,18})\.jsonl")
_FETCH = 2000  # rows per round trip of a scan's cursor
_PAGE = 64  # rows per query when reading back from the end


def segment_number(name: str) -> int | None:
    """The seq a segment name stands for, or None for a name the store never hands out."""
    found = SEGMENT.fullmatch(name)
    if found is None or segment_name(int(found.group(1))) != name or int(found.group(1)) < 1:
        return None
    return int(found.group(1))


def scan(conn: Connection, session_id: str, start: Start | None, decode: Decode) -> ScanResult:
    """Every row from `start` (or the first), verified segment by segment. Run it inside a
    transaction (a server-side cursor needs one; a REPEATABLE READ one gives one snapshot)."""
    result = ScanResult(last_sum=genesis(session_id))
    first, offset = 1, 0
    if start is not None:
        number = segment_number(start.segment)
        if number is None or not _segment_exists(conn, session_id, number):
            raise IntegrityError(f"journal segment {start.segment} is missing")
        first, offset = number, start.offset
        result.last_seq, result.last_sum = start.seq - 1, start.prev
    segment = _SegmentBytes(first, offset)
    with conn.cursor(name="handshake_scan", binary=True) as cursor:
        cursor.itersize = _FETCH
        cursor.execute(
            "SELECT segment, byte_offset, line FROM handshake.records "
            "WHERE session_id = %s AND (segment, byte_offset) >= (%s, %s) ORDER BY segment, byte_offset",
            (session_id, first, offset),
        )
        for number, at, line in cursor:
            if number != segment.number:
                segment.verify(result, decode, is_last=False)
                if result.damage:
                    return result
                segment = _SegmentBytes(number, 0)
            segment.add(at, bytes(line))
    if segment.chunks or segment.gap is not None:
        segment.verify(result, decode, is_last=True)
    return result


class _SegmentBytes:
    """One segment's rows put back together, up to the first missing byte."""

    def __init__(self, number: int, base: int) -> None:
        self.number = number
        self.base = base
        self.chunks: list[bytes] = []
        self.end = base
        self.gap: tuple[int, int] | None = None  # (first missing byte, where rows resume)

    def add(self, at: int, line: bytes) -> None:
        if self.gap is not None:
            return
        if at != self.end:
            self.gap = (self.end, at)
            return
        self.chunks.append(line)
        self.end += len(line)

    def verify(self, result: ScanResult, decode: Decode, *, is_last: bool) -> None:
        name = segment_name(self.number)
        data = b"".join(self.chunks)
        oversize = len(data) + self.base > codec.MAX_SEGMENT_BYTES
        if oversize:
            data = data[: codec.MAX_SEGMENT_BYTES - self.base]
        whole = is_last and self.gap is None and not oversize
        scan_segment_data(data, name, is_last=whole, result=result, decode=decode, base=self.base)
        if result.damage:
            return
        if self.gap is not None:
            missing, resumes = self.gap
            result.damage = Damage(
                "corrupt", name, missing, resumes - missing, f"bytes {missing} to {resumes} are missing"
            )
        elif oversize:
            size = self.end
            result.damage = Damage(
                "corrupt",
                name,
                codec.MAX_SEGMENT_BYTES,
                size - codec.MAX_SEGMENT_BYTES,
                f"the segment is {size} bytes, more than the {codec.MAX_SEGMENT_BYTES} a segment can hold",
            )


def _segment_exists(conn: Connection, session_id: str, number: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM handshake.records WHERE session_id = %s AND segment = %s LIMIT 1", (session_id, number)
    ).fetchone()
    return row is not None


def line_record(line: bytes, name: str, offset: int) -> tuple[Record, bytes] | None:
    """The intact record a row's line starts with, and its content (no newline), or None."""
    content = line.split(b"\n", 1)[0]
    if check_content(content) is None:
        return None
    try:
        return Record.decode(content, name, offset), content
    except RecordInvalid:
        return None  # its content is damage, which a scan reports with its place


def last_record(conn: Connection, session_id: str) -> Record | None:
    """The last intact record, read back from the last row (pieces of a row split at its
    newlines, as the filesystem store reads a segment back from its end)."""
    after: tuple[int, int] | None = None
    while True:
        rows = conn.execute(
            "SELECT segment, byte_offset, line FROM handshake.records WHERE session_id = %s "
            "AND (segment, byte_offset) < (%s, %s) ORDER BY segment DESC, byte_offset DESC LIMIT %s",
            (session_id, *(after or (2**62, 0)), _PAGE),
        ).fetchall()
        for number, at, line in rows:
            pieces = bytes(line).split(b"\n")
            starts = [at]
            for piece in pieces[:-1]:
                starts.append(starts[-1] + len(piece) + 1)
            for piece, offset in zip(reversed(pieces), reversed(starts), strict=True):
                if check_content(piece) is not None:
                    return Record.decode(piece, segment_name(number), offset)
        if len(rows) < _PAGE:
            return None
        after = (rows[-1][0], rows[-1][1])


def line_at(conn: Connection, session_id: str, segment: str, offset: int) -> tuple[Record, bytes] | None:
    number = segment_number(segment)
    if number is None or offset < 0:
        return None
    row = conn.execute(
        "SELECT line FROM handshake.records WHERE session_id = %s AND segment = %s AND byte_offset = %s",
        (session_id, number, offset),
    ).fetchone()
    return line_record(bytes(row[0]), segment, offset) if row else None


def start_near(conn: Connection, session_id: str, seq: int) -> Start | None:
    """The first record of the segment that holds `seq` (segments are named after their first)."""
    row = conn.execute(
        "SELECT segment, line FROM handshake.records WHERE session_id = %s AND segment <= %s "
        "AND byte_offset = 0 ORDER BY segment DESC LIMIT 1",
        (session_id, seq),
    ).fetchone()
    found = line_record(bytes(row[1]), segment_name(row[0]), 0) if row else None
    return Start(found[0].segment, 0, found[0].seq, found[0].prev) if found else None


def find_backwards(
    conn: Connection, session_id: str, type_: str, at_most: int | None, below: int | None, page: int
) -> tuple[list[tuple[Record, bytes]], int | None]:
    """One page (`page` rows) of `SessionStore.find_backwards`: the records of `type_` with
    seq under `below` (and at most `at_most`), newest first, each kept only when it links (seq
    and `prev`) to the row just before it; and the `below` of the next page (None: no more).

    The candidates come from the (session_id, type, seq) index, whose columns were written
    with each line; every one is then proven by its own bytes and its neighbour's."""
    limit = min(x for x in (at_most, below - 1 if below is not None else None, 2**62) if x is not None)
    rows = conn.execute(
        """SELECT r.segment, r.byte_offset, r.seq, r.line,
                  (SELECT p.line FROM handshake.records p
                    WHERE p.session_id = r.session_id
                      AND (p.segment, p.byte_offset) < (r.segment, r.byte_offset)
                    ORDER BY p.segment DESC, p.byte_offset DESC LIMIT 1)
             FROM handshake.records r
            WHERE r.session_id = %s AND r.type = %s AND r.seq <= %s
            ORDER BY r.seq DESC LIMIT %s""",
        (session_id, type_, limit, page),
    ).fetchall()
    found: list[tuple[Record, bytes]] = []
    for number, at, _seq, line, before in rows:
        kept = line_record(bytes(line), segment_name(number), at)
        if kept is None:
            continue
        record = kept[0]
        if record.type != type_ or (at_most is not None and record.seq > at_most):
            continue
        if _links(record, session_id, bytes(before) if before is not None else None, (number, at)):
            found.append(kept)
    following = rows[-1][2] if len(rows) == page else None
    return found, following


def _links(record: Record, session_id: str, before: bytes | None, where: tuple[int, int]) -> bool:
    """Whether `record` follows the line just before it (record 1: the journal's first row)."""
    if record.seq == 1:
        return where == (1, 0) and before is None and record.prev == genesis(session_id)
    if before is None:
        return False
    parsed = check_content(before.split(b"\n", 1)[0])
    return parsed is not None and parsed[0] == record.seq - 1 and parsed[2] == record.prev
