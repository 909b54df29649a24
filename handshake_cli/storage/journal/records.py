"""What a journal record may hold: the decode boundary between a line's bytes and the folds.

A record's checksum proves that its bytes are the ones written, not that handshake wrote
them: someone can craft a line (invalid JSON, a raw NUL, `data` that is a string, a
`covers_seq` that is text) and seal it with a correct checksum and chain. Such a record is
damage, found here once, so that no fold, checkpoint loader or renderer ever sees a shape
the encoder never writes. This module owns:

- `parse`: bytes -> the record's JSON object, or `RecordInvalid` saying what is wrong;
- the per-type schema of the `data` fields the folds read (model, thread, history,
  checkpoints, recovery, inspect): each field, when present, has the type the runner writes;
  fields the readers index directly are required;
- `plain_chunk`: a cheap exact check of the commonest record (`model.chunk`) for scans that
  verify content without keeping records (`inspect --verify`);
- the size and depth limits of a record (docs/FORMAT.md, Limits), and
  `refuse_beyond_limits`, which keeps a store from appending what readers would call damage.

A checkpoint's `body` is not checked here beyond being present: `checkpoints.load` validates
it (a bad body is `checkpoint_invalid`, which recovery falls back from, not damage).

It sits inside the journal package because it is part of the journal's format, not a
service of storage at large: `codec` applies it when a line is decoded, and every store's
appender (the journal writer, the memory store) calls `refuse_beyond_limits` before a
record is appended. Other modules read `MAX_RECORD_BYTES` through this module when they use
it, so a test that scales the limit down patches one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from handshake_cli.errors import IntegrityError, UsageError

# The largest record (line, newline included) the writer appends and a reader accepts. The
# biggest legitimate records are a checkpoint snapshot (the whole thread, which is also what
# every model call sends, so it stays far below this) and `session.created` (the prompt).
MAX_RECORD_BYTES = 64 * 1024 * 1024
# Nesting of JSON objects and arrays in one record, the record itself counting 1.
MAX_DEPTH = 200


class RecordInvalid(IntegrityError):
    """A checksum-intact record whose content handshake never writes: journal damage."""


class RecordRefused(UsageError):
    """A record the writer will not append (too large, or nested too deep)."""

    code = "record_refused"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON handshake writes")


_DECODE = json.JSONDecoder(parse_constant=_no_constant).decode
_TOP_KEYS = ["seq", "ts", "type", "data", "prev", "sum"]
_TYPE = re.compile(r"[a-z][a-z_]*(?:\.[a-z_]+)+")
_TS = re.compile(r"[0-9A-Za-z:.+-]{1,64}")

_NONE = type(None)
_S = (str,)
_I = (int,)
_B = (bool,)
_D = (dict,)
_L = (list,)
_S0 = (str, _NONE)
_I0 = (int, _NONE)
_D0 = (dict, _NONE)
_B0 = (bool, _NONE)

# Per record type: field -> (allowed exact types, required). `bool` is not an `int` here
# (the check is on the exact type), and `None` is allowed only where the writer writes null.
# Readers take a missing field as its default (`data.get`), so absence is no damage, except
# where a reader needs a field (a tool call's id and tool, a model request's turn).
Spec = Mapping[str, tuple[tuple[type, ...], bool]]
_FIELDS: dict[str, Spec] = {
    "session.created": {
        "job_name": (_S0, False),
        "model": (_D, False),
        "prompt": (_D, False),
        "workspace": (_S0, False),
        "session_id": (_S, False),
        "format_version": (_I, False),
        "process": (_D, False),
    },
    "session.state_change": {"from": (_S, False), "to": (_S, False), "reason": (_S, False)},
    "model.request": {"turn": (_I, True), "message_count": (_I, False)},
    "model.retry": {
        "turn": (_I, False),
        "attempt": (_I, False),
        "reason": (_S, False),
        "delay_ms": (_I, False),
    },
    "model.chunk": {"turn": (_I, False), "index": (_I, False), "count": (_I, False), "text": (_S, False)},
    "model.tool_call_chunk": {
        "turn": (_I, False),
        "call": (_I, False),
        "index": (_I, False),
        "count": (_I, False),
        "name": (_S, False),
        "arguments": (_S, False),
    },
    "model.completed": {"turn": (_I, False), "message": (_D, False), "finish_reason": (_S0, False)},
    "model.stream_aborted": {"turn": (_I, False), "reason": (_S, False), "chunks": (_I, False)},
    "tool.intent": {
        "tool_call_id": (_S, False),
        "tool": (_S, False),
        "args": (_D, False),
        "idempotency_key": (_S0, False),
        "side_effect": (_S0, False),
        "idempotency": (_S0, False),
        "mcp": (_D, False),
    },
    "tool.result": {
        "tool_call_id": (_S, False),
        "tool": (_S0, False),
        "error": (_D0, False),
        "evidence": (_D0, False),
    },
    "checkpoint.created": {
        "checkpoint_id": (_S, False),
        "artifact_id": (_S, False),
        "covers_seq": (_I, False),
        "reason": (_S, False),
        "parent": (_S0, False),
        "snapshot": (_B, False),
        "process": (_D, False),
    },
    "recovery.started": {
        "action": (_S, False),
        "reason": (_S0, False),
        "checkpoint": (_S0, False),
        "skipped_checkpoints": (_L, False),
        "repaired_torn_tail": (_D0, False),
        "in_doubt": (_L, False),
        "stopped_mcp_servers": (_L, False),
        "accept_divergence": (_B, False),
        "process": (_D, False),
    },
    "recovery.resumed": {"checkpoint": (_S0, False), "in_flight": (_D0, False), "replaying": (_B0, False)},
    "recovery.blocked": {"reason": (_S, False), "detail": (_S0, False), "in_doubt": (_L, False)},
    "operator.resolution": {"tool_call_id": (_S, False), "resolution": (_S, False), "by": (_S0, False)},
    # MCP tool servers (docs/FORMAT.md): a server's listing when it starts, a server that
    # failed mid-call, a server stopped with the session (its stderr kept as an artifact);
    # what identifies a stdio server's process, for recovery to stop one a crash left running.
    "mcp.tools": {
        "server": (_S, True),
        "transport": (_S, False),
        "command": (_L, False),
        "url": (_S, False),
        "server_info": (_D0, False),
        "tools": (_L, True),
        "accepted": (_B, False),
    },
    "mcp.process": {
        "server": (_S, True),
        "pid": (_I, True),
        "pgid": (_I, True),
        "pid_start": (_I, True),
        "host": (_S, True),
    },
    "mcp.server_failed": {
        "server": (_S0, False),
        "tool_call_id": (_S, False),
        "tool": (_S, False),
        "reason": (_S, False),
        "stderr_artifact_id": (_S, False),
    },
    "mcp.stopped": {"server": (_S, True), "stderr_bytes": (_I, False), "stderr_artifact_id": (_S, False)},
    # LangGraph threads (handshake_cli/langgraph, docs/FORMAT.md "Records of a LangGraph
    # thread"): a checkpoint with its new channel values, a task's pending writes, checkpoints
    # removed (prune, delete_for_runs), a torn tail the saver cut when it opened the thread, the
    # saver's index of the thread kept as an artifact (so a long thread opens without a fold).
    "langgraph.checkpoint": {
        "thread_id": (_S, False),
        "checkpoint_ns": (_S, True),
        "checkpoint_id": (_S, True),
        "parent_checkpoint_id": (_S0, False),
        "run_id": (_S0, False),
        "step": (_I0, False),
        "source": (_S0, False),
        "checkpoint": (_D, True),
        "metadata": (_D, True),
        "blobs": (_L, False),
    },
    "langgraph.writes": {
        "checkpoint_ns": (_S, True),
        "checkpoint_id": (_S, True),
        "task_id": (_S, True),
        "task_path": (_S, False),
        "writes": (_L, True),
    },
    "langgraph.removed": {"checkpoints": (_L, True), "reason": (_S, False)},
    "langgraph.repaired": {"repaired_torn_tail": (_D, False)},
    "langgraph.index": {"artifact_id": (_S, True), "covers_seq": (_I, True), "thread_id": (_S, False)},
    "session.completed": {"reason": (_S0, False), "turns": (_I, False)},
    "session.failed": {"reason": (_S0, False), "turns": (_I, False)},
    "session.cancelled": {"reason": (_S0, False), "turns": (_I, False)},
}

KNOWN_TYPES = frozenset(_FIELDS)

_MODEL_FIELDS: Spec = {"id": (_S0, False), "provider": (_S0, False)}
_PROMPT_FIELDS: Spec = {"system": (_S0, False), "user": (_S0, False)}
_MESSAGE_FIELDS: Spec = {"role": (_S, False), "content": (_S0, False), "tool_calls": (_L, False)}
_CALL_FIELDS: Spec = {
    "tool_call_id": (_S, True),
    "tool": (_S, True),
    "args": (_D, False),
    "invalid_args": (_S, False),
}


def _fields(value: dict[str, Any], spec: Spec, where: str) -> str | None:
    for key, (allowed, required) in spec.items():
        if key in value:
            kind = type(value[key])
            # A StrEnum member (a state, a decision) is written as its string: it is a str.
            if kind not in allowed and not (str in allowed and issubclass(kind, str)):
                names = " or ".join("null" if t is _NONE else t.__name__ for t in allowed)
                return f"{where}{key} is {_kind(value[key])}, not {names}"
        elif required:
            return f"{where}{key} is missing"
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def data_problem(type_: str, data: dict[str, Any]) -> str | None:
    """Why `data` is not what handshake writes for a record of `type_`, or None.

    Types handshake does not know are accepted (readers ignore them: FORMAT section 5)."""
    spec = _FIELDS.get(type_)
    if spec is None:
        return None
    problem = _fields(data, spec, "data.")
    if problem or type_ not in _NESTED:
        return problem
    return _NESTED[type_](data)


def writer_problem(type_: str, data: dict[str, Any]) -> str | None:
    """What readers would find wrong in a record the writer is asked to append, or None."""
    if type_ not in KNOWN_TYPES and not _TYPE.fullmatch(type_):
        return "its type is not a type name"
    return data_problem(type_, data)


def _session_created(data: dict[str, Any]) -> str | None:
    return _fields(data.get("model") or {}, _MODEL_FIELDS, "data.model.") or _fields(
        data.get("prompt") or {}, _PROMPT_FIELDS, "data.prompt."
    )


def _model_completed(data: dict[str, Any]) -> str | None:
    message = data.get("message") or {}
    problem = _fields(message, _MESSAGE_FIELDS, "data.message.")
    if problem:
        return problem
    for index, call in enumerate(message.get("tool_calls") or []):
        if type(call) is not dict:
            return f"data.message.tool_calls[{index}] is {_kind(call)}, not dict"
        problem = _fields(call, _CALL_FIELDS, f"data.message.tool_calls[{index}].")
        if problem:
            return problem
    return None


def _value_problem(ref: object, where: str) -> str | None:
    """A LangGraph value reference: `{type, b64}` inline, or `{type, artifact, [pack, offset],
    bytes}` naming an artifact."""
    if type(ref) is not dict:
        return f"{where} is {_kind(ref)}, not dict"
    if type(ref.get("type")) is not str:
        return f"{where}.type is not a string"
    if "b64" in ref:
        return None if type(ref["b64"]) is str else f"{where}.b64 is not a string"
    if type(ref.get("artifact")) is not str:
        return f"{where} has neither b64 nor artifact"
    if "pack" in ref and (type(ref["pack"]) is not str or type(ref.get("offset")) is not int):
        return f"{where}.pack and offset are not a location"
    return None


def _langgraph_checkpoint(data: dict[str, Any]) -> str | None:
    problem = _value_problem(data["checkpoint"], "data.checkpoint") or _value_problem(
        data["metadata"], "data.metadata"
    )
    for index, blob in enumerate(data.get("blobs") or []):
        where = f"data.blobs[{index}]"
        if type(blob) is not dict or type(blob.get("channel")) is not str or "version" not in blob:
            return f"{where} is not a channel value"
        problem = problem or _value_problem(blob.get("value"), f"{where}.value")
    return problem


def _langgraph_writes(data: dict[str, Any]) -> str | None:
    for index, write in enumerate(data["writes"]):
        where = f"data.writes[{index}]"
        if (
            type(write) is not dict
            or type(write.get("idx")) is not int
            or type(write.get("channel")) is not str
        ):
            return f"{where} is not a write"
        problem = _value_problem(write.get("value"), f"{where}.value")
        if problem:
            return problem
    return None


def _langgraph_removed(data: dict[str, Any]) -> str | None:
    for index, pair in enumerate(data["checkpoints"]):
        if type(pair) is not list or len(pair) != 2 or not all(type(p) is str for p in pair):
            return f"data.checkpoints[{index}] is not [checkpoint_ns, checkpoint_id]"
    return None


_NESTED = {
    "session.created": _session_created,
    "model.completed": _model_completed,
    "langgraph.checkpoint": _langgraph_checkpoint,
    "langgraph.writes": _langgraph_writes,
    "langgraph.removed": _langgraph_removed,
}


# For `depth_exceeds`: every byte but opening brackets; an escaped backslash or quote; every
# byte but quotes and brackets; and both kinds of bracket as one.
_NOT_OPENING = bytes(b for b in range(256) if b not in b"[{")
_ESCAPED = re.compile(rb'\\[\\"]')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_ONE_KIND = bytes.maketrans(b"[]", b"{}")


def depth_exceeds(content: bytes, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests deeper than `limit`; `content` is JSON text that nests exactly as
    deep (the record's line, for the record or for {"data": its data}). Cheap for almost
    every record: nesting needs at least `limit` opening brackets, which one C-speed pass
    (every other byte deleted) rules out.

    Otherwise it is measured on the text, at C speed (a walk of the decoded value costs a
    Python step per container: ~10 ms for a 450 KB checkpoint snapshot). Escaped backslashes
    and quotes go first (pairs taken from the left, as a JSON reader takes escapes: one
    regular expression, which finds a backslash far faster than `bytes.replace`), then
    everything but quotes and brackets. What lies between quotes is inside a string, and
    goes: first every two quotes side by side (a string that holds no bracket, or the empty
    gap between two strings, which leaves the brackets outside strings as they were and the
    quotes still opening and closing in turn), then what is left of strings. The rest are the
    brackets outside strings, properly nested (`content` is valid JSON: what the encoder
    wrote, or what the decoder read), so each pass that removes the innermost pairs, both
    kinds as one, removes one level of the deepest."""
    if len(content.translate(None, _NOT_OPENING)) < limit:  # one pass, ~2x faster than two counts
        return False
    text = _ESCAPED.sub(b"", content).translate(None, _NOT_STRUCTURE)
    text = text.replace(b'""', b"")
    if b'"' in text:
        text = b"".join(text.split(b'"')[::2])
    brackets = text.translate(_ONE_KIND)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"{}", b"")
    return bool(brackets)


def refuse_beyond_limits(line: bytes, type_: str, data: dict[str, Any]) -> None:
    """A record readers would call damage is never written: every store refuses it, with
    RecordRefused, before any byte is. `line` is the record as `codec.encode` framed it."""
    problem = writer_problem(type_, data)
    if problem:
        raise RecordRefused(
            f"a {type_!r} record is not one handshake writes ({problem}); nothing was written"
        )
    if len(line) > MAX_RECORD_BYTES:
        raise RecordRefused(
            f"a {type_} record of {len(line)} bytes is larger than the journal's limit of "
            f"{MAX_RECORD_BYTES} bytes per record; nothing was written"
        )
    if depth_exceeds(line, {"data": data}, MAX_DEPTH):
        raise RecordRefused(
            f"a {type_} record nests deeper than the journal's limit of {MAX_DEPTH} levels; "
            "nothing was written"
        )


def parse(content: bytes, seq: int, prev: bytes, digest: bytes) -> dict[str, Any]:
    """The JSON object of a checksum-intact record line (no newline), checked; `seq`,
    `prev` and `digest` are what the framing says, read from the bytes.
    Raises RecordInvalid with what is wrong (the caller adds where)."""
    if len(content) >= MAX_RECORD_BYTES:  # with its newline, past the limit
        raise RecordInvalid(f"record is {len(content) + 1} bytes, more than the limit of {MAX_RECORD_BYTES}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordInvalid(f"record bytes are not UTF-8 (at byte {exc.start})") from None
    try:
        obj = _DECODE(text)
    except RecursionError:
        raise RecordInvalid("record nests deeper than a JSON reader can follow") from None
    except ValueError as exc:
        raise RecordInvalid(f"record is not JSON handshake writes: {exc}") from None
    problem = _record_problem(obj, seq, prev, digest)
    if problem is None and depth_exceeds(content, obj):
        problem = f"record nests deeper than {MAX_DEPTH} levels"
    if problem:
        raise RecordInvalid(problem)
    return obj  # type: ignore[no-any-return]


def _record_problem(obj: Any, seq: int, prev: bytes, digest: bytes) -> str | None:
    if type(obj) is not dict or list(obj) != _TOP_KEYS:
        return "record is not an object of the six keys seq, ts, type, data, prev, sum"
    if type(obj["seq"]) is not int or obj["seq"] != seq:
        return f"record's seq field says {obj['seq']!r}, its framing {seq}"
    if obj["prev"] != prev.decode("ascii", "replace") or obj["sum"] != digest.decode("ascii", "replace"):
        return "record's prev or sum field disagrees with its framing"
    type_, ts, data = obj["type"], obj["ts"], obj["data"]
    if type(type_) is not str or not _TYPE.fullmatch(type_):
        return f"record type {type_!r} is not a type name handshake writes"
    if type(ts) is not str or not _TS.fullmatch(ts):
        return f"record ts {ts!r} is not a time handshake writes"
    if type(data) is not dict:
        return f"record data is {_kind(data)}, not an object"
    problem = data_problem(type_, data)
    return f"{type_} record: {problem}" if problem else None


# A model.chunk exactly as the runner writes it, checked without decoding: a JSON string
# (no raw control character, only valid escapes) and small non-negative integers.
_INT = rb"(?:0|[1-9][0-9]{0,17})"
_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"'
_PLAIN_CHUNK = re.compile(
    b"".join(
        (
            rb'\{"seq":' + _INT + rb',"ts":"[0-9A-Za-z:.+-]{1,64}","type":"model\.chunk",',
            rb'"data":\{"turn":' + _INT + rb',"index":' + _INT + rb'(?:,"count":' + _INT + rb")?,",
            rb'"text":' + _STRING + rb'\},"prev":"[0-9a-f]{32}","sum":"[0-9a-f]{32}"\}',
        )
    )
)


def plain_chunk(content: bytes) -> bool:
    """Whether `content` is a model.chunk record in exactly the shape the runner writes (so
    decoding it would find nothing wrong). False means: decode it and see."""
    if _PLAIN_CHUNK.fullmatch(content) is None:
        return False
    if content.isascii():
        return True
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
