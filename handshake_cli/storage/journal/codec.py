"""The journal's record framing: one record as one line of bytes, and back.

A record is one line of UTF-8 JSON whose fields always come in this order:

    {"seq":N,"ts":"...","type":"...","data":{...},"prev":"<32 hex>","sum":"<32 hex>"}

`sum` is BLAKE2b-128 over every byte of the line before `,"sum":"`; `prev` is the `sum` of
the record before it (for the first record, `genesis`, a value derived from the session
id). So each line proves its own bytes, and the chain proves the order: a record removed,
duplicated or moved in the middle breaks it. Because the two hashes sit at fixed offsets
from the end of the line, `check_content` checks a record without decoding its JSON; the
scanner's fast loop inlines the same checks with the offsets below. `Record.decode` turns
a checksum-intact line into a `Record`, its content checked by `records.parse`.

This module also names segments (after the seq of their first record) and their sizes, and
stamps records with the time. It reads and writes no file: `scan` and `writer` do.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from handshake_cli.storage.journal import records
from handshake_cli.storage.journal.records import MAX_RECORD_BYTES, RecordInvalid

SEGMENT_SUFFIX = ".jsonl"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
# The most a segment file can hold as handshake writes it: a writer rotates before a record
# that would take a segment past DEFAULT_SEGMENT_BYTES, unless the segment is empty, so the
# last record can take it at most one record further. Readers never load more than this.
MAX_SEGMENT_BYTES = DEFAULT_SEGMENT_BYTES + MAX_RECORD_BYTES

# A writer may keep the last segment's file longer than its records: a preallocated tail of
# newline bytes that the next records are written over in place (an fdatasync that does not
# grow the file commits no filesystem metadata; FORMAT.md section 4). No record holds an empty
# line, so the records of the last segment end where its first empty line begins.
FILL = b"\n"
PREALLOCATE_BYTES = 16 * 1024


def records_end(data: bytes, *, from_start: bool = True) -> int:
    """Where the records of a last segment's bytes `data` end: before the first empty line,
    which begins its preallocated tail, or at the end of `data`. Anything after it was never
    synced (a record is acknowledged only once every byte before it is on disk, and none of
    those is an empty line), whatever it holds. `from_start`: `data` begins at a line's start
    (the segment's, or a record's), so a newline there is an empty line; a window read from
    the segment's end begins inside a line, and its first byte says nothing alone."""
    if from_start and data[:1] == FILL:
        return 0
    at = data.find(FILL + FILL)
    return len(data) if at == -1 else at + 1


# The framing's fixed places, shared with the scanner's inlined fast loop.
SEQ_OPEN = b'{"seq":'
SUM_KEY = b',"sum":"'
HEX = 32
SUM_TAIL = len(SUM_KEY) + HEX + 2  # ,"sum":"<hex>"}
KEY_LEN = len(SUM_KEY)
SEQ_LEN = len(SEQ_OPEN)
_PREV_KEY = b',"prev":"'
_PREV_FIELD = len(_PREV_KEY) + HEX + 1  # ,"prev":"<hex>"
PREV_FROM = _PREV_FIELD - len(_PREV_KEY)  # distance back from `cut` to where prev's hex starts


def json_encoder(*, sort_keys: bool = False, ensure_ascii: bool, allow_nan: bool) -> Callable[[Any], str]:
    """`json.JSONEncoder(separators=(",", ":"), ...).encode`, the same text, with its C
    encoder made once: `encode` makes a new one at every call, which costs a small record's
    encoding time again. (No check for circular values, which no record holds: one would end
    in RecursionError instead of ValueError.) Plain `encode` where the C encoder is missing."""
    reference = json.JSONEncoder(
        sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=(",", ":")
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return reference.encode
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    chunks = make(None, reference.default, quote, None, ":", ",", sort_keys, False, allow_nan)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


# Built once: json.dumps/json.loads re-create these on every call with non-default options.
_ENCODE_UTF8 = json_encoder(ensure_ascii=False, allow_nan=False)
_ENCODE_ASCII = json_encoder(ensure_ascii=True, allow_nan=False)
_blake2b = hashlib.blake2b
_quote = encode_basestring_ascii  # a str as JSON text, all ASCII (C speed)

Clock = Callable[[], str]


def checksum(prefix: bytes) -> str:
    return hashlib.blake2b(prefix, digest_size=16).hexdigest()


def genesis(session_id: str) -> str:
    """The `prev` of record 1: binds a journal to its session, so one cannot be swapped in for another."""
    return checksum(b"handshake.journal.v1\0" + session_id.encode("ascii"))


_second: list[Any] = [None, ""]  # the second last stamped, and its text up to the seconds


def utc_now() -> str:
    """The time as `2026-11-24T04:00:00.123456Z`: UTC, microseconds. Every record is stamped,
    so the text of the current second is kept and only the microseconds are formatted anew."""
    now = time.time_ns() // 1000
    second, micros = divmod(now, 1_000_000)
    if second != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second[0] = second
    return f"{_second[1]}.{micros:06d}Z"


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
        prefix = b'{"seq":%d,"ts":%s,"type":%s,"data":%s,"prev":%s' % (
            seq,
            _quote(ts).encode("ascii"),
            _quote(type_).encode("ascii"),
            encoded,
            _quote(prev).encode("ascii"),
        )
        digest = checksum(prefix)
        return prefix + SUM_KEY + digest.encode("ascii") + b'"}\n', digest
    body = {"seq": seq, "ts": ts, "type": type_, "data": data, "prev": prev}
    try:
        encoded = _ENCODE_UTF8(body).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape everything rather than fail the append
        encoded = _ENCODE_ASCII(body).encode("ascii")
    prefix = encoded[:-1]
    digest = checksum(prefix)
    return prefix + SUM_KEY + digest.encode("ascii") + b'"}\n', digest


def check_content(content: bytes) -> tuple[int, str, str] | None:
    """Return (seq, prev, sum) when `content` (a line without its newline) is an intact record.

    This runs once per record of every scan, so it is written for speed: fixed offsets, no
    JSON decoding."""
    size = len(content)
    if size < 60 or content[:SEQ_LEN] != SEQ_OPEN or content[-2:] != b'"}':
        return None
    cut = size - SUM_TAIL
    if content[cut : cut + KEY_LEN] != SUM_KEY:
        return None
    stored = content[cut + KEY_LEN : cut + KEY_LEN + HEX].decode("ascii", "replace")
    if _blake2b(content[:cut], digest_size=16).hexdigest() != stored:
        return None
    # The checksum vouches for the bytes, not that the encoder above wrote them: a crafted
    # line may carry anything. A seq that is not a number is reported as 0 (never a valid seq),
    # which the chain check turns into damage; the content itself is checked when decoded.
    prev = content[cut - PREV_FROM : cut - 1].decode("ascii", "replace")
    return _seq_of(content), prev, stored


def _seq_of(content: bytes) -> int:
    """The seq a record's framing states, or 0 when it is not a plain decimal number."""
    digits = content[SEQ_LEN : content.find(b",", SEQ_LEN)]
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
        cut = len(content) - SUM_TAIL
        prev, digest = content[cut - PREV_FROM : cut - 1], content[cut + KEY_LEN : cut + KEY_LEN + HEX]
        try:
            obj = records.parse(content, _seq_of(content), prev, digest)
        except RecordInvalid as exc:
            raise RecordInvalid(f"journal record at {segment} offset {offset}: {exc.message}") from None
        return cls(obj["seq"], obj["ts"], obj["type"], obj["data"], obj["prev"], obj["sum"], segment, offset)

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "type": self.type, "data": self.data}
