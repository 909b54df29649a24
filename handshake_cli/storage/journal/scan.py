"""The journal scanner: every segment read back, each record's checksum, seq and chain verified.

A scan stops at the first damage and says what it is, located to the byte: damage that
reaches the end of the last segment with no intact record after it is a torn tail (a crash
mid-append; recovery cuts it off); anything else is corruption. The last segment's records
end at its first empty line (`codec.records_end`): newlines from there on are a preallocated
tail, nothing to report; other bytes there were never synced, whatever they hold (a power
failure may have kept some of them and not others), and are a torn tail. A scan can start from a
record already trusted (`Start`: a checkpoint's) instead of the first, and decodes every
record, none (what a writer checks before appending) or only some types.

Also here: the other ways of reading a journal without a scan (`read_last_record`, read back
from the end; `read_record_at`, one pread) and listing its segments. No reader loads more of
a segment file than `MAX_SEGMENT_BYTES`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from handshake_cli.errors import IntegrityError, NotFound
from handshake_cli.storage import durable
from handshake_cli.storage.journal import codec, records
from handshake_cli.storage.journal.codec import (
    FILL,
    HEX,
    KEY_LEN,
    PREV_FROM,
    SEGMENT_SUFFIX,
    SEQ_LEN,
    SEQ_OPEN,
    SUM_KEY,
    SUM_TAIL,
    Record,
    check_content,
    genesis,
)
from handshake_cli.storage.journal.records import RecordInvalid

# What a scan decodes: every record; none (checksums, seq and chain only: what a writer
# checks before appending); or only these types, in which case the content of every record
# is still checked (what `inspect --verify` does).
Decode = bool | frozenset[str]

_blake2b = hashlib.blake2b
_plain_chunk = records.plain_chunk


class DamageJson(TypedDict):
    """Damage as the JSON output shows it (`damage`, `torn_tail`)."""

    kind: str
    segment: str
    offset: int
    length: int
    detail: str
    repairable: bool


@dataclass(frozen=True)
class Damage:
    """Something the scanner found wrong, located to the byte."""

    kind: str  # "torn_tail" (repairable: nothing valid follows) or "corrupt" (valid records follow, or worse)
    segment: str
    offset: int
    length: int
    detail: str

    @property
    def repairable(self) -> bool:
        return self.kind == "torn_tail"

    def as_json(self) -> DamageJson:
        return {
            "kind": self.kind,
            "segment": self.segment,
            "offset": self.offset,
            "length": self.length,
            "detail": self.detail,
            "repairable": self.repairable,
        }


@dataclass
class ScanResult:
    records: list[Record] = field(default_factory=list)
    count: int = 0
    last_seq: int = 0
    last_sum: str = ""
    damage: Damage | None = None
    # name -> bytes that hold valid records (where a repair would cut)
    valid_ends: dict[str, int] = field(default_factory=dict)

    @property
    def torn_tail(self) -> Damage | None:
        return self.damage if self.damage and self.damage.repairable else None

    @property
    def corruption(self) -> Damage | None:
        return self.damage if self.damage and not self.damage.repairable else None


def list_segments(journal_dir: Path) -> list[str]:
    names = []
    for entry in os.scandir(journal_dir):
        name = entry.name
        if name.endswith(SEGMENT_SUFFIX) and name[: -len(SEGMENT_SUFFIX)].isdigit():
            names.append(name)
    return sorted(names, key=lambda n: int(n[: -len(SEGMENT_SUFFIX)]))


@dataclass(frozen=True)
class Start:
    """Where a partial scan begins: a record already trusted (a checkpoint's, say), given by
    its segment, offset, seq and `prev`. The scan verifies from that record on."""

    segment: str
    offset: int
    seq: int
    prev: str


def scan(
    journal_dir: Path, session_id: str, *, decode: Decode = True, start: Start | None = None
) -> ScanResult:
    """Read every segment (or from `start` on), verifying each record's checksum, seq and chain.

    Stops at the first damage. Damage that reaches the end of the last segment with no
    intact record after it is a torn tail; anything else is corruption.
    """
    result = ScanResult(last_sum=genesis(session_id))
    try:
        segments = list_segments(journal_dir)
    except FileNotFoundError:
        if not os.path.lexists(journal_dir.parent):  # moved away (by gc) while being read
            raise NotFound(f"session {session_id} was removed (by gc) while it was being read") from None
        raise IntegrityError(f"{journal_dir} is missing: the session has no journal") from None
    offset = 0
    if start is not None:
        if start.segment not in segments:
            raise IntegrityError(f"journal segment {start.segment} is missing")
        segments = segments[segments.index(start.segment) :]
        result.last_seq, result.last_sum, offset = start.seq - 1, start.prev, start.offset
    for index, name in enumerate(segments):
        # From `start` on, a segment is read from the start's offset: what lies before it is
        # not read at all (offsets stay the segment's own).
        data, size = read_segment(journal_dir / name, offset)
        end = offset + len(data)
        _scan_segment(data, name, index == len(segments) - 1 and size == end, result, decode, base=offset)
        offset = 0
        if size > end:  # never a torn tail: no crash leaves a segment this long
            at = result.damage.offset if result.damage else end
            result.valid_ends[name] = at
            result.damage = Damage(
                "corrupt",
                name,
                at,
                size - at,
                f"the segment is {size} bytes, more than the {codec.MAX_SEGMENT_BYTES} a segment can hold",
            )
        if result.damage:
            break
    return result


def read_segment(path: Path, start: int = 0) -> tuple[bytes, int]:
    """A segment's bytes from offset `start` up to MAX_SEGMENT_BYTES, and the file's size: a
    file larger than any segment handshake writes is damage, and is never loaded whole."""
    fd = durable.open_read(path)
    try:
        chunks = []
        remaining = codec.MAX_SEGMENT_BYTES - start
        with durable.environment("read", path):  # an I/O error names the segment
            size = os.fstat(fd).st_size
            if start:
                os.lseek(fd, start, os.SEEK_SET)
            while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
                chunks.append(chunk)
                remaining -= len(chunk)
        data = b"".join(chunks)
        return data, max(size, start + len(data))
    finally:
        os.close(fd)


def scan_segment_data(
    data: bytes, name: str, *, is_last: bool, result: ScanResult, decode: Decode, base: int = 0
) -> None:
    """Verify one segment's bytes into `result`, exactly as `scan` verifies each file: for a
    store that keeps segments elsewhere (PostgreSQL keeps them as rows). `data` holds the
    segment from offset `base`; `is_last` says whether damage may be a torn tail."""
    _scan_segment(data, name, is_last, result, decode, base=base)


def _scan_segment(
    data: bytes, name: str, is_last: bool, result: ScanResult, decode: Decode, pos: int = 0, base: int = 0
) -> None:
    """Scan `data`, the segment's bytes from offset `base`, from `pos` in it; every offset
    reported (records, damage, valid ends) is the segment's own (`base` added)."""
    first_seq = int(name[: -len(SEGMENT_SUFFIX)])
    if pos == 0 and base == 0 and first_seq != result.last_seq + 1 and data:
        result.damage = Damage(
            "corrupt",
            name,
            0,
            len(data),
            f"segment starts at seq {first_seq}, expected {result.last_seq + 1}",
        )
        return
    pos = _scan_intact_lines(data, name, result, decode, pos, base)
    size = len(data)
    tail = codec.records_end(data) if is_last else size
    # What the fast loop did not take: nothing, a last line without its newline, a
    # preallocated tail, what was written over one and never synced, or damage.
    while pos < size:
        if pos >= tail:
            _unsynced_tail(data, name, pos, result, base)
            return
        newline = data.find(b"\n", pos)
        end = newline if newline != -1 else size
        content = data[pos:end]
        parsed = check_content(content)
        if parsed is None:
            intact_end = _intact_prefix(content)
            if intact_end is not None and _accept(content[:intact_end], name, base + pos, result, decode):
                _classify_bad_region(data, name, is_last, pos + intact_end, result, base)
            elif result.damage is None:
                _classify_bad_region(data, name, is_last, pos, result, base)
            return
        if not _accept_parsed(parsed, content, name, base + pos, result, decode):
            return
        if newline == -1:
            # An intact record whose newline never reached the disk: keep it, repair the ending.
            _classify_bad_region(data, name, is_last, size, result, base)
            return
        pos = newline + 1
    result.valid_ends[name] = base + size


def _scan_intact_lines(
    data: bytes, name: str, result: ScanResult, decode: Decode, pos: int, base: int = 0
) -> int:
    """Accept whole lines from `pos` for as long as each is an intact record that follows the
    one before it; return where it stopped (the end of the last newline, or the first line it
    did not accept, which `_scan_segment` then looks at line by line).

    The checks are `check_content`'s and `_accept_parsed`'s, inlined and done on bytes: this
    loop is what `inspect --verify` and every recovery spend their time in."""
    lines = (data[pos:] if pos else data).split(b"\n")
    lines.pop()  # after the last newline: empty, or a line the slow path must look at
    wanted = None if isinstance(decode, bool) else frozenset(t.encode() for t in decode)
    last_seq, last_sum, count, start = result.last_seq, result.last_sum.encode("ascii"), 0, pos
    blake2b, kept, plain_chunk = _blake2b, result.records, _plain_chunk
    for content in lines:
        cut = len(content) - SUM_TAIL
        stored = content[cut + KEY_LEN : cut + KEY_LEN + HEX]
        if (
            cut < 60 - SUM_TAIL
            or not content.startswith(SEQ_OPEN)
            or not content.endswith(b'"}')
            or content[cut : cut + KEY_LEN] != SUM_KEY
            or blake2b(content[:cut], digest_size=16).hexdigest().encode("ascii") != stored
            or content[cut - PREV_FROM : cut - 1] != last_sum
            or not (digits := content[SEQ_LEN : content.find(b",", SEQ_LEN)]).isdigit()
            or len(digits) > 18
            or int(digits) != last_seq + 1
        ):
            break
        try:
            if decode is True:
                kept.append(Record.decode(content, name, base + pos))
            elif wanted is not None:
                at = content.find(b'"type":"', 0, 128) + 8
                if content[at : content.find(b'"', at)] in wanted:
                    kept.append(Record.decode(content, name, base + pos))
                elif not plain_chunk(content):
                    Record.decode(content, name, base + pos)  # its content is checked, the record not kept
        except RecordInvalid:
            break  # `_scan_segment` looks at this line again and reports it
        last_seq, last_sum = last_seq + 1, stored
        count += 1
        pos += len(content) + 1
    if pos != start:
        result.count += count
        result.last_seq, result.last_sum = last_seq, last_sum.decode("ascii")
        result.valid_ends[name] = base + pos
    return pos


def _accept(content: bytes, name: str, pos: int, result: ScanResult, decode: Decode) -> bool:
    parsed = check_content(content)
    return parsed is not None and _accept_parsed(parsed, content, name, pos, result, decode)


def _accept_parsed(
    parsed: tuple[int, str, str], content: bytes, name: str, pos: int, result: ScanResult, decode: Decode
) -> bool:
    seq, prev, digest = parsed
    expected = result.last_seq + 1
    if seq != expected or prev != result.last_sum:
        if seq == 0:
            detail = "record's seq is not a number handshake writes"
        elif seq < expected:
            detail = f"record seq {seq} repeats or comes back after seq {result.last_seq}"
        elif seq > expected:
            detail = f"record seq {seq} follows seq {result.last_seq}: records are missing"
        else:
            detail = f"record seq {seq} does not link to the record before it (chain broken)"
        result.damage = Damage("corrupt", name, pos, len(content) + 1, detail)
        return False
    if decode is not False:
        try:
            record = Record.decode(content, name, pos)
        except RecordInvalid as exc:
            detail = exc.message.split(": ", 1)[-1]
            result.damage = Damage("corrupt", name, pos, len(content) + 1, f"record seq {seq}: {detail}")
            return False
        if decode is True or record.type in decode:
            result.records.append(record)
    result.count += 1
    result.last_seq = seq
    result.last_sum = digest
    result.valid_ends[name] = pos + len(content) + 1
    return True


def _intact_prefix(content: bytes) -> int | None:
    """Where an intact record ends inside a damaged line (its terminator was hit), if one does."""
    at = content.find(SUM_KEY)
    while at != -1:
        end = at + SUM_TAIL
        if check_content(content[:end]) is not None:
            return end
        at = content.find(SUM_KEY, at + 1)
    return None


def _classify_bad_region(
    data: bytes, name: str, is_last: bool, start: int, result: ScanResult, base: int = 0
) -> None:
    """Say what the bytes of `data` from `start` are (`data` holds the segment from `base`)."""
    length = len(data) - start
    result.valid_ends[name] = base + start
    if not is_last:
        result.damage = Damage(
            "corrupt", name, base + start, length, "damaged bytes in a segment that is not the last"
        )
        return
    tail = codec.records_end(data)
    # Damage that reaches the preallocated tail before any intact record: never synced.
    if tail < len(data) and (start >= tail or not _intact_before(data, start, tail)):
        _unsynced_tail(data, name, start, result, base)
        return
    # From `start` itself: a newline lost between two intact records leaves the second one
    # starting exactly where the damage does.
    probe = data.find(SEQ_OPEN, start)
    while probe != -1 and probe < tail:
        newline = data.find(b"\n", probe)
        if check_content(data[probe : newline if newline != -1 else len(data)]) is not None:
            result.damage = Damage(
                "corrupt",
                name,
                base + start,
                probe - start,
                f"damaged bytes followed by an intact record at offset {base + probe}",
            )
            return
        probe = data.find(SEQ_OPEN, probe + 1)
    if length == 0:
        result.damage = Damage("torn_tail", name, base + start, 0, "the last record lacks its final newline")
    else:
        result.damage = Damage(
            "torn_tail",
            name,
            base + start,
            length,
            f"the last {length} bytes are an incomplete or damaged record",
        )


def _intact_before(data: bytes, start: int, tail: int) -> bool:
    """Whether an intact record begins in `data[start:tail]`."""
    probe = data.find(SEQ_OPEN, start, tail)
    while probe != -1:
        newline = data.find(FILL, probe, tail)
        if check_content(data[probe : newline if newline != -1 else tail]) is not None:
            return True
        probe = data.find(SEQ_OPEN, probe + 1, tail)
    return False


def _unsynced_tail(data: bytes, name: str, start: int, result: ScanResult, base: int) -> None:
    """From `start` (at or before the preallocated tail) to the end of the last segment:
    nothing but newlines is the tail itself, clean; anything else was never synced, a torn
    tail of the bytes up to the last that is not a newline."""
    result.valid_ends[name] = base + start
    length = len(data.rstrip(FILL)) - start
    if length > 0:
        result.damage = Damage(
            "torn_tail",
            name,
            base + start,
            length,
            f"the last {length} bytes were never synced (they reach the preallocated tail)",
        )


def read_last_record(journal_dir: Path, segment: str | None = None) -> Record | None:
    """The last intact record (of the journal, or of one segment), read from the end."""
    for name in [segment] if segment else reversed(list_segments(journal_dir)):
        fd = durable.open_read(journal_dir / name)
        try:
            with durable.environment("read", journal_dir / name):
                found = _last_in(fd, name)
        finally:
            os.close(fd)
        if found is not None:
            return found
    return None


def _last_in(fd: int, name: str) -> Record | None:
    """The last intact record of the segment open at `fd`, read back from its end."""
    size = os.fstat(fd).st_size
    limit = codec.MAX_SEGMENT_BYTES
    if size > limit:
        raise IntegrityError(
            f"journal segment {name} is {size} bytes, more than the {limit} a segment can hold"
        )
    block = 64 * 1024
    while True:
        start = max(0, size - block)
        data = os.pread(fd, size - start, start)
        # Nothing after the first empty line counts (a preallocated tail, and what was
        # written over it unsynced): the window holds it, as it holds the whole tail.
        data = data[: codec.records_end(data, from_start=start == 0)]
        lines = data.split(b"\n")
        complete = lines[1:] if start > 0 else lines
        end = start + len(data)
        for index in range(len(complete) - 1, -1, -1):
            content = complete[index]
            if check_content(content) is not None:
                offset = end - len(b"\n".join(complete[index:]))
                return Record.decode(content, name, offset)
        if start == 0:
            break
        block *= 4
    return None


def read_record_at(journal_dir: Path, segment: str, offset: int) -> Record | None:
    """The intact record that starts at `offset` of `segment`, or None: one pread, no scan."""
    found = read_line_at(journal_dir, segment, offset)
    return found[0] if found else None


def read_line_at(journal_dir: Path, segment: str, offset: int) -> tuple[Record, bytes] | None:
    """`read_record_at`, with the record's line (without its newline) beside it."""
    if not segment.endswith(SEGMENT_SUFFIX) or "/" in segment or offset < 0:
        return None
    try:
        fd = durable.open_read(journal_dir / segment)
    except FileNotFoundError:
        return None
    try:
        line = bytearray()
        position = offset
        with durable.environment("read", journal_dir / segment):
            while b"\n" not in line:
                if len(line) > records.MAX_RECORD_BYTES:
                    return None  # no record is this long
                block = os.pread(fd, 1 << 16, position)
                if not block:
                    break
                line += block
                position += len(block)
    finally:
        os.close(fd)
    content = bytes(line.split(b"\n", 1)[0])
    if check_content(content) is None:
        return None
    try:
        return Record.decode(content, segment, offset), content
    except RecordInvalid:
        return None  # its content is damage, which a scan reports with its place
