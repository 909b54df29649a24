"""`inspect SESSION`: one session described from its files, without taking its lock.

The record, the thread, every tool call with its status, the model calls that gave no
answer, the lock, an integrity report and the plan `recover` would follow. A journal small
enough is read whole and verified in full; a larger one is read as recovery reads it, from
its newest checkpoint on, so describing a long session costs what its tail (and its thread)
costs. session.toml is read once.

Readers see a consistent prefix of a live session: the journal is append-only and each
record proves itself, so a scan simply stops at the last record written so far (a record
half-written at that instant looks like a torn tail and is reported as such, never cut).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handshake_cli.errors import HandshakeError, NotFound
from handshake_cli.readers.langgraph import thread_summary
from handshake_cli.readers.verify import verify
from handshake_cli.recovery.plan import make_plan
from handshake_cli.recovery.view import SessionView, rebuild
from handshake_cli.session.calls import ToolCallStatus, status_seen
from handshake_cli.session.history import calls_since_checkpoint, replay
from handshake_cli.session.state import fold
from handshake_cli.session.status import effective_state, vanished
from handshake_cli.session.thread import fold_thread
from handshake_cli.storage import lock
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.vocabulary import Verdict

# Journals up to this size are verified in full by `inspect SESSION`; larger ones from their
# newest checkpoint on, so the summary of a long session costs what its tail costs. At 256 KiB
# (about a thousand records) the full check costs about what start-up does; it was 8 MiB, and
# a 10,000-record session took longer to describe than a 1,000,000-record one (issue 13).
FULL_CHECK_BYTES = 256 * 1024

# The keys of the plan `inspect SESSION` shows (the whole plan is `recover --dry-run`'s).
PLAN_SHOWN = ("action", "reason", "in_doubt", "in_flight", "checkpoint", "commands")


def describe(store: SessionStore, session_id: str) -> dict[str, Any]:
    """Everything `inspect SESSION` shows: the record, the thread, tool calls, lock, integrity,
    and the plan `recover` would follow. A file that vanishes while it is read (gc removed the
    session, which readers never block) is NotFound, not a crash."""
    config = store.read_config(session_id)  # a session that is not there is NotFound, as usual
    try:
        return _describe(store, session_id, config)
    except FileNotFoundError as exc:
        what = Path(exc.filename).name if exc.filename else "file it was reading"
        raise vanished(store, session_id, what) from exc
    except NotFound as exc:
        raise vanished(store, session_id, "record it was reading") from exc


def _describe(store: SessionStore, session_id: str, config: dict[str, Any]) -> dict[str, Any]:
    holder = store.holder(session_id)
    view: SessionView | None
    try:
        view = rebuild(store, session_id, config=config)
    except HandshakeError:
        view = None  # e.g. a job config this version cannot read: fall back to the journal alone
    if view is None or store.journal_bytes(session_id) <= FULL_CHECK_BYTES:
        result = store.scan(session_id)
        record = fold(session_id, result.records)
        history = replay(result.records)
        messages, turns = history.messages, history.turns
        integrity = {"scope": "full", **verify(store, session_id, result).as_json()}
        abandoned = abandoned_streams(fold_thread(result.records).abandoned, result.records)
        tool_calls = history.tool_calls
    else:
        record = view.record
        messages, turns = view.thread.messages, view.thread.turn
        integrity = _tail_integrity(view)
        tool_calls = calls_since_checkpoint(view.thread, replay(view.records))
        abandoned = abandoned_streams(view.thread.abandoned, view.records)
    state = effective_state(record.state, holder)
    calls = list(tool_calls.values())
    for call in calls:
        if "state" in call:
            call["state"] = status_seen(call["state"], writer_live=holder is not None)
    described = {
        "session_id": session_id,
        "job_name": (config.get("job") or {}).get("name"),
        "state": state,
        "stored_state": record.state,
        "model": {"id": record.model_id, "backend": record.backend},
        "workspace": config.get("workspace"),
        "created_at": config.get("created_at"),
        "updated_at": record.updated_at,
        "checkpoint_count": record.checkpoint_count,
        "checkpoint_artifact_id": record.checkpoint_artifact_id,
        "last_checkpoint_at": record.last_checkpoint_at,
        "last_seq": record.last_seq,
        "turns": turns,
        "messages": messages,
        "abandoned_streams": abandoned,
        "tool_calls": calls,
        "pending_tool_calls": [c["tool_call_id"] for c in calls if c.get("state") == ToolCallStatus.PENDING],
        "in_doubt_tool_calls": [
            c["tool_call_id"] for c in calls if c.get("state") == ToolCallStatus.IN_DOUBT
        ],
        "lock_holder": holder.as_json() if holder else None,
        "integrity": integrity,
        "recovery_plan": _recovery_plan(store, view, holder),
        "anomalies": record.anomalies,
    }
    langgraph = thread_summary(store, session_id, config)
    if langgraph is not None:  # a LangGraph thread's session (readers/langgraph.py)
        described["langgraph"] = langgraph
    return described


def abandoned_streams(abandoned: list[dict[str, Any]], records: list[Record]) -> list[dict[str, Any]]:
    """Model calls that gave no answer, with the text they had streamed (masked, as journaled).

    The text comes from the records at hand; for a call older than them (a long session read
    from its newest checkpoint) it is null, and `inspect --events --since-seq` shows it."""
    first = records[0].seq if records else None
    chunks = [r for r in records if r.type == "model.chunk" or r.type == "model.tool_call_chunk"]
    streams = []
    for entry in abandoned:
        since, until = entry.get("request_seq") or 0, entry.get("ended_seq") or 0
        text = None
        calls: list[dict[str, Any]] | None = None
        if first is not None and since >= first:
            mine = [r for r in chunks if since < r.seq < until and r.data.get("turn") == entry.get("turn")]
            text = "".join(str(r.data.get("text", "")) for r in mine if r.type == "model.chunk")
            calls = _streamed_calls([r for r in mine if r.type == "model.tool_call_chunk"])
        streams.append(
            {
                "turn": entry.get("turn"),
                "reason": entry.get("reason"),
                "request_seq": since,
                "ended_seq": until,
                "text": text,
                "tool_calls": calls,
            }
        )
    return streams


def _streamed_calls(pieces: list[Record]) -> list[dict[str, Any]]:
    """The tool calls an abandoned stream had begun, as far as they streamed: `call` (the
    server's index), `name` (null if it never came), `arguments` (the text so far)."""
    calls: dict[int, dict[str, Any]] = {}
    for record in pieces:
        index = record.data.get("call", 0)
        call = calls.setdefault(index, {"call": index, "name": None, "arguments": ""})
        if call["name"] is None and record.data.get("name") is not None:
            call["name"] = record.data["name"]
        call["arguments"] += str(record.data.get("arguments", ""))
    return [calls[index] for index in sorted(calls)]


def _recovery_plan(
    store: SessionStore, view: SessionView | None, holder: lock.LockHolder | None
) -> dict[str, Any] | None:
    """What `recover` would do now; None while a live process holds the session."""
    if holder is not None or view is None:
        return None
    try:
        plan = make_plan(view, store.paths.root_args())
    except HandshakeError as error:
        return {"action": "refused", "reason": error.code, "message": error.message}
    data: Mapping[str, Any] = plan.as_json()
    return {key: data[key] for key in PLAN_SHOWN}


def _tail_integrity(view: SessionView) -> dict[str, Any]:
    """The integrity of the records recovery read (from the newest checkpoint that loads on):
    no artifact or head.json findings, and the command that checks everything."""
    damage = view.damage
    verdict = Verdict.DAMAGED if view.corruption else Verdict.REPAIRABLE if view.torn_tail else Verdict.INTACT
    return {
        "scope": "from_checkpoint",
        "checked_from_seq": view.scanned_from,
        "verdict": verdict,
        "journal": {
            "records": view.last_seq,
            "last_seq": view.last_seq,
            "damage": damage.as_json() if damage else None,
        },
        "full_check": f"handshake inspect {view.session_id} --verify",
    }
