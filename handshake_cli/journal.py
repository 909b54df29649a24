"""The append-only journal: record framing, appends with a durability level, and the scanner.

A record is one line of UTF-8 JSON whose fields always come in this order:

    {"seq":N,"ts":"...","type":"...","data":{...},"prev":"<32 hex>","sum":"<32 hex>"}

`sum` is BLAKE2b-128 over every byte of the line before `,"sum":"`; `prev` is the `sum` of
the record before it (for the first record, a value derived from the session id). So each
line proves its own bytes, and the chain proves the order: a record removed, duplicated or
moved in the middle breaks it. Because the two hashes sit at fixed offsets from the end of
the line, the scanner checks a record without decoding its JSON.

Segments are named after the seq of their first record (`00000001.jsonl`) and rotated by
size. Appends happen under the session lock as one `os.write` per record; `sync=True`
makes the record, and every unsynced one before it, durable before `append` returns.

A checksum proves bytes, not that this encoder wrote them: a decoded record's content is
checked by `records.parse` (a crafted one is corrupt damage), the writer refuses records
beyond the limits (`MAX_RECORD_BYTES`, `records.MAX_DEPTH`), and no reader loads more of a
segment file than `MAX_SEGMENT_BYTES`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import durable, records
from .errors import DurabilityError, IntegrityError, JournalNeedsRepair, NotFound
from .records import MAX_RECORD_BYTES, RecordInvalid, RecordRefused

__all__ = ["MAX_RECORD_BYTES", "MAX_SEGMENT_BYTES", "RecordInvalid", "RecordRefused"]

SEGMENT_SUFFIX = ".jsonl"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
# The most a segment file can hold as handshake writes it: a writer rotates before a record
# that would take a segment past DEFAULT_SEGMENT_BYTES, unless the segment is empty, so the
# last record can take it at most one record further. Readers never load more than this.
MAX_SEGMENT_BYTES = DEFAULT_SEGMENT_BYTES + MAX_RECORD_BYTES

_SEQ_OPEN = b'{"seq":'
_SUM_KEY = b',"sum":"'
_PREV_KEY = b',"prev":"'
_HEX = 32
_SUM_TAIL = len(_SUM_KEY) + _HEX + 2  # ,"sum":"<hex>"}
_PREV_FIELD = len(_PREV_KEY) + _HEX + 1  # ,"prev":"<hex>"


# Built once: json.dumps/json.loads re-create these on every call with non-default options.
_ENCODE_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_ENCODE_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


# What a scan decodes: every record; none (checksums, seq and chain only: what a writer
# checks before appending); or only these types, in which case the content of every record
# is still checked (what `inspect --verify` does).
Decode = bool | frozenset[str]


def checksum(prefix: bytes) -> str:
    return hashlib.blake2b(prefix, digest_size=16).hexdigest()


def genesis(session_id: str) -> str:
    """The `prev` of record 1: binds a journal to its session, so one cannot be swapped in for another."""
    return checksum(b"handshake.journal.v1\0" + session_id.encode("ascii"))


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:08d}{SEGMENT_SUFFIX}"


def encode(
    seq: int, ts: str, type_: str, data: dict[str, Any], prev: str, encoded: bytes | None = None
) -> tuple[bytes, str]:
    """Frame one record; returns the line (with its newline) and its `sum`.

    `encoded` is `data` already as JSON text (valid UTF-8, one line), for a caller that has
    it anyway: a checkpoint's body is hashed in exactly the bytes the record carries.
    """
    if encoded is not None:
        head = _ENCODE_ASCII({"seq": seq, "ts": ts, "type": type_}).encode("ascii")
        tail = _ENCODE_ASCII({"prev": prev}).encode("ascii")
        prefix = head[:-1] + b',"data":' + encoded + b"," + tail[1:-1]
        digest = checksum(prefix)
        return prefix + _SUM_KEY + digest.encode("ascii") + b'"}\n', digest
    body = {"seq": seq, "ts": ts, "type": type_, "data": data, "prev": prev}
    try:
        encoded = _ENCODE_UTF8(body).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape everything rather than fail the append
        encoded = _ENCODE_ASCII(body).encode("ascii")
    prefix = encoded[:-1]
    digest = checksum(prefix)
    return prefix + _SUM_KEY + digest.encode("ascii") + b'"}\n', digest


_KEY_LEN = len(_SUM_KEY)
_SEQ_LEN = len(_SEQ_OPEN)
_PREV_FROM = _PREV_FIELD - len(_PREV_KEY)  # distance back from `cut` to where prev's hex starts
_blake2b = hashlib.blake2b
_plain_chunk = records.plain_chunk


def check_content(content: bytes) -> tuple[int, str, str] | None:
    """Return (seq, prev, sum) when `content` (a line without its newline) is an intact record.

    This runs once per record of every scan, so it is written for speed: fixed offsets, no
    JSON decoding."""
    size = len(content)
    if size < 60 or content[:_SEQ_LEN] != _SEQ_OPEN or content[-2:] != b'"}':
        return None
    cut = size - _SUM_TAIL
    if content[cut : cut + _KEY_LEN] != _SUM_KEY:
        return None
    stored = content[cut + _KEY_LEN : cut + _KEY_LEN + _HEX].decode("ascii", "replace")
    if _blake2b(content[:cut], digest_size=16).hexdigest() != stored:
        return None
    # The checksum vouches for the bytes, not that the encoder above wrote them: a crafted
    # line may carry anything. A seq that is not a number is reported as 0 (never a valid seq),
    # which the chain check turns into damage; the content itself is checked when decoded.
    prev = content[cut - _PREV_FROM : cut - 1].decode("ascii", "replace")
    return _seq_of(content), prev, stored


def _seq_of(content: bytes) -> int:
    """The seq a record's framing states, or 0 when it is not a plain decimal number."""
    digits = content[_SEQ_LEN : content.find(b",", _SEQ_LEN)]
    return int(digits) if digits.isdigit() and len(digits) < 19 else 0


@dataclass(frozen=True)
class Record:
    seq: int
    ts: str
    type: str
    data: dict[str, Any]
    prev: str
    sum: str
    segment: str
    offset: int

    @classmethod
    def decode(cls, content: bytes, segment: str, offset: int) -> Record:
        """The record of a checksum-intact line (`check_content` passed). Its content is
        checked against what handshake writes (records.parse); RecordInvalid if it is not,
        naming the segment and offset."""
        cut = len(content) - _SUM_TAIL
        prev, digest = content[cut - _PREV_FROM : cut - 1], content[cut + _KEY_LEN : cut + _KEY_LEN + _HEX]
        try:
            obj = records.parse(content, _seq_of(content), prev, digest)
        except RecordInvalid as exc:
            raise RecordInvalid(f"journal record at {segment} offset {offset}: {exc.message}") from None
        return cls(obj["seq"], obj["ts"], obj["type"], obj["data"], obj["prev"], obj["sum"], segment, offset)

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "type": self.type, "data": self.data}


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

    def as_json(self) -> dict[str, Any]:
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
        data, size = read_segment(journal_dir / name)
        _scan_segment(data, name, index == len(segments) - 1 and size == len(data), result, decode, offset)
        offset = 0
        if size > len(data):  # never a torn tail: no crash leaves a segment this long
            at = result.damage.offset if result.damage else len(data)
            result.valid_ends[name] = at
            result.damage = Damage(
                "corrupt",
                name,
                at,
                size - at,
                f"the segment is {size} bytes, more than the {MAX_SEGMENT_BYTES} a segment can hold",
            )
        if result.damage:
            break
    return result


def read_segment(path: Path) -> tuple[bytes, int]:
    """A segment's bytes, at most MAX_SEGMENT_BYTES of them, and the file's size: a file
    larger than any segment handshake writes is damage, and is never loaded whole."""
    fd = durable.open_read(path)
    try:
        chunks = []
        remaining = MAX_SEGMENT_BYTES
        with durable.environment("read", path):  # an I/O error names the segment
            size = os.fstat(fd).st_size
            while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
                chunks.append(chunk)
                remaining -= len(chunk)
        data = b"".join(chunks)
        return data, max(size, len(data))
    finally:
        os.close(fd)


def _scan_segment(
    data: bytes, name: str, is_last: bool, result: ScanResult, decode: Decode, pos: int = 0
) -> None:
    first_seq = int(name[: -len(SEGMENT_SUFFIX)])
    if pos == 0 and first_seq != result.last_seq + 1 and data:
        result.damage = Damage(
            "corrupt",
            name,
            0,
            len(data),
            f"segment starts at seq {first_seq}, expected {result.last_seq + 1}",
        )
        return
    pos = _scan_intact_lines(data, name, result, decode, pos)
    size = len(data)
    # What the fast loop did not take: nothing, a last line without its newline, or damage.
    while pos < size:
        newline = data.find(b"\n", pos)
        end = newline if newline != -1 else size
        content = data[pos:end]
        parsed = check_content(content)
        if parsed is None:
            intact_end = _intact_prefix(content)
            if intact_end is not None and _accept(content[:intact_end], name, pos, result, decode):
                _classify_bad_region(data, name, is_last, pos + intact_end, result)
            elif result.damage is None:
                _classify_bad_region(data, name, is_last, pos, result)
            return
        if not _accept_parsed(parsed, content, name, pos, result, decode):
            return
        if newline == -1:
            # An intact record whose newline never reached the disk: keep it, repair the ending.
            _classify_bad_region(data, name, is_last, size, result)
            return
        pos = newline + 1
    result.valid_ends[name] = size


def _scan_intact_lines(data: bytes, name: str, result: ScanResult, decode: Decode, pos: int) -> int:
    """Accept whole lines from `pos` for as long as each is an intact record that follows the
    one before it; return where it stopped (the end of the last newline, or the first line it
    did not accept, which `_scan_segment` then looks at line by line).

    The checks are `check_content`'s and `_accept_parsed`'s, inlined and done on bytes: this
    loop is what `inspect --verify` and every recovery spend their time in."""
    lines = (data[pos:] if pos else data).split(b"\n")
    lines.pop()  # after the last newline: empty, or a line the slow path must look at
    wanted = None if isinstance(decode, bool) else frozenset(t.encode() for t in decode)
    last_seq, last_sum, count, start = result.last_seq, result.last_sum.encode("ascii"), 0, pos
    blake2b, records, plain_chunk = _blake2b, result.records, _plain_chunk
    for content in lines:
        cut = len(content) - _SUM_TAIL
        stored = content[cut + _KEY_LEN : cut + _KEY_LEN + _HEX]
        if (
            cut < 60 - _SUM_TAIL
            or not content.startswith(_SEQ_OPEN)
            or not content.endswith(b'"}')
            or content[cut : cut + _KEY_LEN] != _SUM_KEY
            or blake2b(content[:cut], digest_size=16).hexdigest().encode("ascii") != stored
            or content[cut - _PREV_FROM : cut - 1] != last_sum
            or not (digits := content[_SEQ_LEN : content.find(b",", _SEQ_LEN)]).isdigit()
            or len(digits) > 18
            or int(digits) != last_seq + 1
        ):
            break
        try:
            if decode is True:
                records.append(Record.decode(content, name, pos))
            elif wanted is not None:
                at = content.find(b'"type":"', 0, 128) + 8
                if content[at : content.find(b'"', at)] in wanted:
                    records.append(Record.decode(content, name, pos))
                elif not plain_chunk(content):
                    Record.decode(content, name, pos)  # its content is checked, the record not kept
        except RecordInvalid:
            break  # `_scan_segment` looks at this line again and reports it
        last_seq, last_sum = last_seq + 1, stored
        count += 1
        pos += len(content) + 1
    if pos != start:
        result.count += count
        result.last_seq, result.last_sum = last_seq, last_sum.decode("ascii")
        result.valid_ends[name] = pos
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
    at = content.find(_SUM_KEY)
    while at != -1:
        end = at + _SUM_TAIL
        if check_content(content[:end]) is not None:
            return end
        at = content.find(_SUM_KEY, at + 1)
    return None


def _classify_bad_region(data: bytes, name: str, is_last: bool, start: int, result: ScanResult) -> None:
    length = len(data) - start
    result.valid_ends[name] = start
    if not is_last:
        result.damage = Damage(
            "corrupt", name, start, length, "damaged bytes in a segment that is not the last"
        )
        return
    # From `start` itself: a newline lost between two intact records leaves the second one
    # starting exactly where the damage does.
    probe = data.find(_SEQ_OPEN, start)
    while probe != -1:
        newline = data.find(b"\n", probe)
        if check_content(data[probe : newline if newline != -1 else len(data)]) is not None:
            result.damage = Damage(
                "corrupt",
                name,
                start,
                probe - start,
                f"damaged bytes followed by an intact record at offset {probe}",
            )
            return
        probe = data.find(_SEQ_OPEN, probe + 1)
    if length == 0:
        result.damage = Damage("torn_tail", name, start, 0, "the last record lacks its final newline")
    else:
        result.damage = Damage(
            "torn_tail", name, start, length, f"the last {length} bytes are an incomplete or damaged record"
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
    if size > MAX_SEGMENT_BYTES:
        raise IntegrityError(
            f"journal segment {name} is {size} bytes, more than the {MAX_SEGMENT_BYTES} a segment can hold"
        )
    block = 64 * 1024
    while True:
        start = max(0, size - block)
        data = os.pread(fd, size - start, start)
        lines = data.split(b"\n")
        complete = lines[1:] if start > 0 else lines
        for index in range(len(complete) - 1, -1, -1):
            content = complete[index]
            if check_content(content) is not None:
                offset = size - len(b"\n".join(complete[index:]))
                return Record.decode(content, name, offset)
        if start == 0:
            break
        block *= 4
    return None


Clock = Callable[[], str]


class JournalWriter:
    """Appends records to one session's journal. The caller holds the session lock."""

    def __init__(
        self,
        journal_dir: Path,
        session_id: str,
        *,
        last_seq: int,
        last_sum: str,
        segment: str | None,
        segment_size: int,
        segment_bytes: int,
        clock: Clock,
    ) -> None:
        self.journal_dir = journal_dir
        self.session_id = session_id
        self.last_seq = last_seq
        self.last_sum = last_sum
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.unsynced = 0
        self._segment = segment
        self._size = segment_size
        self._fd: int | None = None
        self._broken: str | None = None
        if segment is not None:
            with durable.environment("open for appending", journal_dir / segment):
                self._fd = os.open(
                    journal_dir / segment, os.O_WRONLY | os.O_APPEND | durable.NOFOLLOW | durable.CLOEXEC
                )

    @classmethod
    def create(
        cls,
        journal_dir: Path,
        session_id: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Clock = utc_now,
    ) -> JournalWriter:
        return cls(
            journal_dir,
            session_id,
            last_seq=0,
            last_sum=genesis(session_id),
            segment=None,
            segment_size=0,
            segment_bytes=segment_bytes,
            clock=clock,
        )

    @classmethod
    def open(
        cls,
        journal_dir: Path,
        session_id: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Clock = utc_now,
        start: Start | None = None,
    ) -> JournalWriter:
        """Open for appending after verifying the journal (all of it, or from `start`, a
        record the caller has already checked); refuses a journal that needs repair."""
        result = scan(journal_dir, session_id, decode=False, start=start)
        if result.corruption:
            damage = result.corruption
            raise IntegrityError(
                f"journal is corrupt at {damage.segment} offset {damage.offset}: {damage.detail}"
            )
        if result.torn_tail:
            damage = result.torn_tail
            raise JournalNeedsRepair(
                f"journal ends in a torn tail at {damage.segment} offset {damage.offset}; "
                "recovery must cut it off before anything is appended"
            )
        segments = list_segments(journal_dir)
        segment = segments[-1] if segments else None
        size = result.valid_ends.get(segment, 0) if segment else 0
        return cls(
            journal_dir,
            session_id,
            last_seq=result.last_seq,
            last_sum=result.last_sum,
            segment=segment,
            segment_size=size,
            segment_bytes=segment_bytes,
            clock=clock,
        )

    def append(
        self, type_: str, data: dict[str, Any], *, sync: bool = True, encoded: bytes | None = None
    ) -> Record:
        if self._broken:
            raise DurabilityError(f"journal writer is unusable after an earlier failure: {self._broken}")
        seq, prev = self.last_seq + 1, self.last_sum
        ts = self.clock()
        line, digest = encode(seq, ts, type_, data, prev, encoded)
        _refuse_beyond_limits(line, type_, data)
        if self._fd is None or (self._size and self._size + len(line) > self.segment_bytes):
            self._rotate(seq)
        assert self._fd is not None and self._segment is not None
        offset = self._size
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._undo_write()
            where = self.journal_dir / self._segment
            raise durable.durability_error(exc, "write to", where, "the record was not written") from exc
        self._size += len(line)
        self.last_seq = seq
        self.last_sum = digest
        self.unsynced += 1
        if sync:
            self.sync()
        return Record(seq, ts, type_, data, prev, digest, self._segment, offset)

    def sync(self) -> None:
        if self._broken:
            raise DurabilityError(f"journal writer is unusable after an earlier failure: {self._broken}")
        if self._fd is None or not self.unsynced:
            return
        try:
            durable.fsync_fd(self._fd, data_only=True, path=self.journal_dir / (self._segment or ""))
        except DurabilityError as exc:
            self._broken = exc.message
            raise
        self.unsynced = 0

    def close(self) -> None:
        """Let go of the segment. Never raises: what had to be durable was synced (and a
        failed close, reported by some filesystems, changes nothing already acknowledged)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _undo_write(self) -> None:
        """Cut a failed or partial write back to the last whole record."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            self._broken = f"a failed write could not be undone: {exc}"

    def _rotate(self, first_seq: int) -> None:
        if self._fd is not None:
            self.sync()  # everything in the old segment is durable before the new one takes over
            self.close()
        name = segment_name(first_seq)
        self._fd = durable.create_file(self.journal_dir / name, append=True)
        durable.fsync_dir(self.journal_dir)  # the new name is durable before any record in it
        self._segment = name
        self._size = 0

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse_beyond_limits(line: bytes, type_: str, data: dict[str, Any]) -> None:
    """A record readers would call damage is never written: refuse it before any byte is."""
    problem = records.writer_problem(type_, data)
    if problem:
        raise RecordRefused(
            f"a {type_!r} record is not one handshake writes ({problem}); nothing was written"
        )
    if len(line) > MAX_RECORD_BYTES:
        raise RecordRefused(
            f"a {type_} record of {len(line)} bytes is larger than the journal's limit of "
            f"{MAX_RECORD_BYTES} bytes per record; nothing was written"
        )
    if records.depth_exceeds(line, {"data": data}, records.MAX_DEPTH):
        raise RecordRefused(
            f"a {type_} record nests deeper than the journal's limit of {records.MAX_DEPTH} levels; "
            "nothing was written"
        )


def read_record_at(journal_dir: Path, segment: str, offset: int) -> Record | None:
    """The intact record that starts at `offset` of `segment`, or None: one pread, no scan."""
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
                if len(line) > MAX_RECORD_BYTES:
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
        return Record.decode(content, segment, offset)
    except RecordInvalid:
        return None  # its content is damage, which a scan reports with its place
