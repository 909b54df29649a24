"""Checkpoints: what they hold, how one is written on the back of a journal sync, and how
one is read back and checked.

A checkpoint holds the ModelSession record, the message thread, the tool calls still
pending, the ledger of finished calls, the model turn in flight, the journal seq it covers,
its reason and its parent. Its bytes are the canonical JSON of that body, and its artifact
id is their sha256: content-addressed and immutable, verified on every read.

Where it lives: inside the `checkpoint.created` record itself (`data.body`), in the
journal. So the checkpoint is durable exactly when its record is, and costs no sync of its
own: it rides on the sync the boundary needs anyway (DESIGN section 2, rule 2). Artifacts
named by earlier records (large tool output, in a pack) are synced first.

Size: a checkpoint stores only the messages and ledger entries added since its parent (a
delta); a full snapshot is written when the deltas since the last snapshot add up to as
many bytes as that snapshot. Snapshot sizes grow geometrically, so the bytes written for
checkpoints over a session stay linear in the number of messages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from handshake_cli.errors import IntegrityError
from handshake_cli.faults import crash_point
from handshake_cli.session.state import ModelSession
from handshake_cli.session.thread import LazyThread, Parts, Thread, canonical, digest
from handshake_cli.storage.contract import Durability, JournalAppender, SessionStore
from handshake_cli.storage.journal.codec import HEX, SUM_TAIL, Record

CHECKPOINT_FORMAT = 1


def record_at(store: SessionStore, session_id: str, segment: str, offset: int) -> tuple[Record, bytes] | None:
    """How a checkpoint's record is read (one read, the line kept for the body's hash); a name
    of this module's own, so the tests can count the reads."""
    return store.record_line_at(session_id, segment, offset)


class CheckpointInvalid(IntegrityError):
    """A checkpoint failed validation. Never loaded: recovery falls back to an earlier one."""

    code = "checkpoint_invalid"


@dataclass(frozen=True)
class CheckpointRef:
    """Where a checkpoint is: the seq of its record, and that record's segment and offset."""

    checkpoint_id: str
    artifact_id: str
    seq: int
    segment: str
    offset: int
    covers_seq: int

    def as_json(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "artifact_id": self.artifact_id,
            "seq": self.seq,
            "segment": self.segment,
            "offset": self.offset,
            "covers_seq": self.covers_seq,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CheckpointRef:
        try:
            return cls(
                str(obj["checkpoint_id"]),
                str(obj["artifact_id"]),
                int(obj["seq"]),
                str(obj["segment"]),
                int(obj["offset"]),
                int(obj["covers_seq"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointInvalid(f"a checkpoint reference is incomplete: {exc}") from exc

    @classmethod
    def from_record(cls, record: Record) -> CheckpointRef:
        data = record.data
        return cls(
            str(data.get("checkpoint_id")),
            str(data.get("artifact_id")),
            record.seq,
            record.segment,
            record.offset,
            int(data.get("covers_seq", 0)),
        )


class CheckpointWriter:
    def __init__(
        self,
        session_id: str,
        journal: JournalAppender,
        *,
        count: int = 0,
        parent: CheckpointRef | None = None,
    ) -> None:
        self.session_id = session_id
        self.journal = journal
        self.count = count
        # A writer that continues a session starts with a snapshot: it keeps the parent for
        # the record, but assumes nothing about what that parent holds.
        self.parent = parent
        self._messages_written = 0
        self._ledger_written = 0
        self._abandoned_written = 0
        self._snapshot_bytes = 0
        self._delta_bytes = 0
        self.bytes_written = 0

    def take(self, reason: str, thread: Thread, session: ModelSession) -> tuple[CheckpointRef, Record]:
        snapshot = self._snapshot_bytes == 0 or self._delta_bytes >= self._snapshot_bytes
        messages_from = 0 if snapshot else self._messages_written
        ledger_from = 0 if snapshot else self._ledger_written
        checkpoint_id = f"ck-{self.count + 1}"
        covers = self.journal.last_seq
        body = {
            "format": CHECKPOINT_FORMAT,
            "checkpoint_id": checkpoint_id,
            "session_id": self.session_id,
            "covers_seq": covers,
            "reason": reason,
            "parent": self.parent.as_json() if self.parent else None,
            "snapshot": snapshot,
            "session": session.as_json(),
            "turn": thread.turn,
            "in_flight": thread.in_flight,
            "message_count": len(thread.messages),
            "message_thread_tail_id": digest(thread.messages[-1]) if thread.messages else None,
            "messages": {"from": messages_from, "items": thread.messages[messages_from:]},
            "ledger": {"from": ledger_from, "items": thread.ledger[ledger_from:]},
            "pending_tool_calls": thread.pending,
        }
        if thread.abandoned:  # absent until a model call is abandoned, like in older bodies
            abandoned_from = 0 if snapshot else self._abandoned_written
            body["abandoned"] = {"from": abandoned_from, "items": thread.abandoned[abandoned_from:]}
        data = canonical(body)
        fields = {
            "checkpoint_id": checkpoint_id,
            "artifact_id": hashlib.sha256(data).hexdigest(),
            "covers_seq": covers,
            "reason": reason,
            "parent": self.parent.checkpoint_id if self.parent else None,
            "snapshot": snapshot,
        }
        # The record carries the body in exactly the bytes that were hashed: encoded once.
        encoded = canonical(fields)[:-1] + b',"body":' + data + b"}"
        self.journal.sync_artifacts()  # artifacts named by the records this checkpoint covers come first
        crash_point("mid_checkpoint")
        record = self.journal.append(
            "checkpoint.created", {**fields, "body": body}, durability=Durability.NOW, encoded=encoded
        )
        crash_point("after_checkpoint")
        ref = CheckpointRef.from_record(record)
        self.count += 1
        self.bytes_written += len(data)
        if snapshot:
            self._snapshot_bytes, self._delta_bytes = len(data), 0
        else:
            self._delta_bytes += len(data)
        self.parent = ref
        self._messages_written = len(thread.messages)
        self._ledger_written = len(thread.ledger)
        self._abandoned_written = len(thread.abandoned)
        return ref, record


def body_problem(record: Record, content: bytes | None = None) -> str | None:
    """Why a checkpoint.created record's body cannot be trusted, or None when it can.

    `content` is the record's line (without its newline), when the caller has it: the body's
    sha256 is then taken over the bytes the record carries it in, as the writer hashed them,
    instead of over the body encoded again (which costs as much as the body is long). A
    record whose bytes do not show the body where the writer puts it is checked the old way."""
    data = record.data
    body = data.get("body")
    if not isinstance(body, dict):
        return "it carries no checkpoint body"
    if not (content is not None and _carried_bytes_match(data, content)) and digest(body) != data.get(
        "artifact_id"
    ):
        return "its body does not match its artifact id"
    if body.get("format") != CHECKPOINT_FORMAT:
        return f"its body has an unknown format {body.get('format')!r}"
    if body.get("checkpoint_id") != data.get("checkpoint_id") or body.get("covers_seq") != data.get(
        "covers_seq"
    ):
        return "its body names another checkpoint"
    if not isinstance(body.get("covers_seq"), int) or body["covers_seq"] >= record.seq:
        return "it covers records that come after it"
    return shape_problem(body)


_DATA_KEY = b',"data":'
_BODY_KEY = b',"body":'
_PREV_FIELD = len(b',"prev":"') + HEX + 1


def _carried_bytes_match(data: dict[str, Any], content: bytes) -> bool:
    """Whether the record's data is, byte for byte, its other fields in canonical JSON, then
    `"body":` and bytes whose sha256 is the artifact id: what `CheckpointWriter.take` writes.
    Then those bytes are the body's (the data decoded to `data`), and they hash to its id."""
    start = content.find(_DATA_KEY)
    end = len(content) - SUM_TAIL - _PREV_FIELD
    if start < 0 or end <= start or content[end - 1 : end] != b"}":
        return False
    fields = {key: value for key, value in data.items() if key != "body"}
    prefix = canonical(fields)[:-1] + _BODY_KEY
    start += len(_DATA_KEY)
    if not fields or not content.startswith(prefix, start):
        return False
    carried = content[start + len(prefix) : end - 1]
    return hashlib.sha256(carried).hexdigest() == data.get("artifact_id")


_NONE = type(None)
# What the loader and the folds after it read from a body, with the exact types the writer
# writes (bool is not an int here). A body is hashed, so only a crafted one can differ.
_BODY: dict[str, tuple[type, ...]] = {
    "checkpoint_id": (str,),
    "snapshot": (bool,),
    "parent": (dict, _NONE),
    "session": (dict,),
    "turn": (int,),
    "in_flight": (dict, _NONE),
    "message_count": (int,),
    "message_thread_tail_id": (str, _NONE),
    "messages": (dict,),
    "ledger": (dict,),
    "pending_tool_calls": (list,),
}
_SESSION: dict[str, tuple[type, ...]] = {
    "session_id": (str,),
    "state": (str,),
    "model_id": (str, _NONE),
    "backend": (str, _NONE),
    "created_at": (str, _NONE),
    "updated_at": (str, _NONE),
    "checkpoint_artifact_id": (str, _NONE),
    "last_checkpoint_at": (str, _NONE),
    "checkpoint_count": (int,),
    "last_seq": (int,),
}
_IN_FLIGHT: dict[str, tuple[type, ...]] = {
    "turn": (int,),
    "request_seq": (int,),
    "segment": (str,),
    "offset": (int,),
}
_CALL: dict[str, tuple[type, ...]] = {"tool_call_id": (str,), "tool": (str,)}
_ENTRY: dict[str, tuple[type, ...]] = {"tool_call_id": (str,)}


def _mismatch(value: dict[str, Any], spec: dict[str, tuple[type, ...]], exact: bool = False) -> str | None:
    for key, allowed in spec.items():
        if type(value.get(key)) not in allowed:
            return key
    if exact and set(value) != set(spec):
        return "its keys"
    return None


def shape_problem(body: dict[str, Any]) -> str | None:
    """Why a body whose hash checks out still cannot be loaded (a shape the writer never
    writes), or None."""
    key = _mismatch(body, _BODY)
    if key:
        return f"its body's {key} is not what a checkpoint holds"
    if _mismatch(body["session"], _SESSION, exact=True):
        return "its body's session record is not what a checkpoint holds"
    if body["in_flight"] is not None and _mismatch(body["in_flight"], _IN_FLIGHT):
        return "its body's in_flight is not what a checkpoint holds"
    parts = [("messages", None), ("ledger", _ENTRY)]
    if "abandoned" in body:
        parts.append(("abandoned", None))
    for name, spec in parts:
        part = body[name]
        if type(part) is not dict or type(part.get("from")) is not int or type(part.get("items")) is not list:
            return f"its body's {name} is not what a checkpoint holds"
        for item in part["items"]:
            if type(item) is not dict or (spec and _mismatch(item, spec)):
                return f"its body's {name} hold an item that is not what a checkpoint holds"
    for call in body["pending_tool_calls"]:
        if type(call) is not dict or _mismatch(call, _CALL) or type(call.get("args", {})) is not dict:
            return "its body's pending_tool_calls hold a call that is not what a checkpoint holds"
    return None


@dataclass
class LoadedCheckpoint:
    body: dict[str, Any]
    thread: Thread
    ref: CheckpointRef


def load(
    store: SessionStore,
    ref: CheckpointRef,
    session_id: str,
    *,
    max_chain: int = 100_000,
    lazy: bool = False,
    record: Record | None = None,
    content: bytes | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint and the deltas it builds on, checking every link. Raises CheckpointInvalid.

    With `lazy`, only the checkpoint's own record is read and checked here (one pread, or
    none when `record` is that record, already read, and `content` its line): its pending
    calls, turn and call in flight are at hand, and so are the checks the body allows on its
    own (its first link, its message count against its own messages, its tail id). Its
    messages, ledger and abandoned calls are read from the delta chain, every link checked
    as above, when the thread's are first used (a `LazyThread`; a broken link raises
    CheckpointInvalid then). So loading costs what its own record costs, whatever the
    session's length."""
    top = read_body(store, ref, session_id, record=record, content=content)
    pending = list(top.get("pending_tool_calls") or [])
    turn, in_flight = int(top.get("turn", 0)), top.get("in_flight")
    if lazy and not top.get("snapshot"):
        # What the body itself can show of its thread is checked now: its messages end where
        # its message count says, with the message its tail id names (when it adds any).
        # So is its first link: a delta names an older parent.
        _first_link(top, ref)
        part = top["messages"]
        items = part.get("items") or []
        if part.get("from") + len(items) != top["message_count"] or (
            items and digest(items[-1]) != top.get("message_thread_tail_id")
        ):
            raise CheckpointInvalid(
                f"checkpoint {top['checkpoint_id']}: the thread does not match its tail id"
            )
        thread: Thread = LazyThread(
            lambda: _parts(store, ref, session_id, top, max_chain), pending, turn, in_flight
        )
    else:
        messages, ledger, abandoned = _parts(store, ref, session_id, top, max_chain)
        thread = Thread(messages, ledger, pending, turn, in_flight, abandoned)
    return LoadedCheckpoint(top, thread, ref)


def _parts(
    store: SessionStore, ref: CheckpointRef, session_id: str, top: dict[str, Any], max_chain: int
) -> Parts:
    """The messages, ledger and abandoned calls of the checkpoint whose body is `top`: its
    deltas back to a snapshot, each read and checked, joined and checked against `top`'s
    message count and tail id."""
    chain: list[dict[str, Any]] = [top]
    body = top
    while not body.get("snapshot"):
        if len(chain) >= max_chain:
            raise CheckpointInvalid(
                f"checkpoint {ref.checkpoint_id}: its delta chain never reaches a snapshot"
            )
        body = read_body(store, _first_link(body, ref), session_id)
        chain.append(body)
    messages: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    abandoned: list[dict[str, Any]] = []
    for body in reversed(chain):
        for name, items in (("messages", messages), ("ledger", ledger), ("abandoned", abandoned)):
            if name == "abandoned" and name not in body and not items:
                continue  # nothing abandoned yet: the key is left out
            part = body.get(name) or {}
            if part.get("from") != (0 if body.get("snapshot") else len(items)):
                raise CheckpointInvalid(
                    f"checkpoint {body['checkpoint_id']}: its {name} do not follow its parent's"
                )
            del items[part["from"] :]
            items.extend(part.get("items") or [])
    if len(messages) != top.get("message_count") or (
        messages and digest(messages[-1]) != top.get("message_thread_tail_id")
    ):
        raise CheckpointInvalid(f"checkpoint {top['checkpoint_id']}: the thread does not match its tail id")
    return messages, ledger, abandoned


def _first_link(body: dict[str, Any], ref: CheckpointRef) -> CheckpointRef:
    """Where a delta's parent is: named, and older than the checkpoint being loaded (`ref`)."""
    parent = body.get("parent")
    if not parent:
        raise CheckpointInvalid(f"checkpoint {body['checkpoint_id']} is a delta without a parent")
    current = CheckpointRef.from_json(parent)
    if current.seq >= ref.seq:
        raise CheckpointInvalid(f"checkpoint {body['checkpoint_id']} names a parent that is not older")
    return current


def read_body(
    store: SessionStore,
    ref: CheckpointRef,
    session_id: str,
    *,
    record: Record | None = None,
    content: bytes | None = None,
) -> dict[str, Any]:
    """One checkpoint's body, read with one pread (none when `record` is the record at `ref`,
    already read and its checksum checked; `content` its line) and verified: record
    checksum, then sha256."""
    if record is None or (record.segment, record.offset) != (ref.segment, ref.offset):
        found = record_at(store, session_id, ref.segment, ref.offset)
        record, content = found if found else (None, None)
    if record is None:
        raise CheckpointInvalid(
            f"checkpoint {ref.checkpoint_id}: no intact record at {ref.segment} offset {ref.offset}"
        )
    if record.seq != ref.seq or record.type != "checkpoint.created":
        raise CheckpointInvalid(
            f"checkpoint {ref.checkpoint_id}: {ref.segment} offset {ref.offset} holds another record"
        )
    problem = body_problem(record, content)
    if problem or record.data.get("artifact_id") != ref.artifact_id:
        raise CheckpointInvalid(f"checkpoint {ref.checkpoint_id}: {problem or 'its artifact id changed'}")
    body: dict[str, Any] = record.data["body"]
    if body.get("session_id") != session_id:
        raise CheckpointInvalid(f"checkpoint {ref.checkpoint_id} belongs to another session")
    return body
