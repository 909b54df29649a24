"""What `inspect` reports, computed from a session's files without taking its lock.

Readers see a consistent prefix of a live session: the journal is append-only and each
record proves itself, so a scan simply stops at the last record written so far (a record
half-written at that instant looks like a torn tail and is reported as such, never cut).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from handshake_cli.errors import HandshakeError, IntegrityError
from handshake_cli.session.history import IN_DOUBT, PENDING, replay
from handshake_cli.session.state import fold, read_head
from handshake_cli.session.status import effective_state
from handshake_cli.session.thread import fold_thread, named_artifacts
from handshake_cli.storage import lock
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.scan import ScanResult, scan
from handshake_cli.storage.store import JOB_BOUND, JOB_CHANGED, SessionDir, Store


@dataclass
class Verification:
    journal: ScanResult
    artifacts_checked: int
    artifact_problems: list[dict[str, Any]]
    head_differences: dict[str, Any]
    missing_artifacts: list[dict[str, Any]]
    job: str = JOB_BOUND  # store.JOB_*: is session.toml's [job] the one record 1 was written with?

    @property
    def verdict(self) -> str:
        """intact | repairable (a torn tail, a stale head) | damaged (recovery will not repair it)."""
        if (
            self.journal.corruption
            or self.job == JOB_CHANGED
            or any(not p.get("repairable") for p in [*self.artifact_problems, *self.missing_artifacts])
        ):
            return "damaged"
        if (
            self.journal.torn_tail
            or self.artifact_problems
            or self.missing_artifacts
            or self.head_differences
        ):
            return "repairable"
        return "intact"

    def as_json(self) -> dict[str, Any]:
        damage = self.journal.damage
        return {
            "verdict": self.verdict,
            "journal": {
                "records": self.journal.count,
                "last_seq": self.journal.last_seq,
                "damage": damage.as_json() if damage else None,
            },
            "artifacts": {
                "checked": self.artifacts_checked,
                "problems": self.artifact_problems,
                "missing": self.missing_artifacts,
            },
            "head": {"matches": not self.head_differences, "differences": self.head_differences},
            "job": self.job,
        }


# The record types verify() reads: the session's state, its checkpoints, and tool results (for
# the artifacts they name).
VERIFY_DECODES = frozenset(
    {
        "session.created",
        "session.state_change",
        "session.completed",
        "session.failed",
        "session.cancelled",
        "checkpoint.created",
        "tool.result",
    }
)

FALLBACK_NOTE = "a checkpoint: recovery falls back to an earlier one, or to the journal"


def verify(session: SessionDir, result: ScanResult | None = None) -> Verification:
    """Every record's checksum and chain, every artifact's hash, head.json against the journal."""
    from handshake_cli.session.checkpoints import body_problem

    job = session.job_binding(session.read_config(check_job=False))
    # Only the records the checks read are decoded; every record's checksum and link is verified.
    result = result or scan(session.journal, session.session_id, decode=VERIFY_DECODES)
    if result.last_seq == 0 and result.damage is None:  # record 1 comes with the session: none is damage
        raise IntegrityError(
            f"session {session.session_id}: the journal holds no intact record ({session.journal})"
        )
    store = session.artifact_store()
    checked, problems = store.verify()
    present = set(store.loose_ids()) | {frame.artifact_id for frame in store.frames()}
    for record in result.records:
        if record.type != "checkpoint.created":
            continue
        checked += 1
        problem = body_problem(record)
        if problem:
            # A checkpoint only summarises the journal before it: losing one is repairable.
            problems.append(
                {
                    "kind": "checkpoint_invalid",
                    "artifact_id": record.data.get("artifact_id"),
                    "seq": record.seq,
                    "detail": problem,
                    "repairable": True,
                    "note": FALLBACK_NOTE,
                }
            )
    missing: list[dict[str, Any]] = []
    reported: set[str] = set()
    for record in result.records:
        if record.type != "tool.result":
            continue
        for ident in named_artifacts(record.data):
            if ident not in present and ident not in reported:
                reported.add(ident)
                missing.append({"artifact_id": ident, "named_by_seq": record.seq, "repairable": False})
    folded = fold(session.session_id, result.records)
    folded.last_seq = result.last_seq  # the last record may be of a type not decoded here
    head = read_head(session.path)
    differences: dict[str, Any] = {}
    if lock.holder(session.path) is not None:
        pass  # a live writer refreshes head.json at transitions only: a lag is expected
    elif head is None:
        differences["head.json"] = {"head": None, "journal": "missing or unreadable"}
    else:
        for name, value in folded.head().items():
            if name != "checkpoint_location" and head.get(name) != value:
                differences[name] = {"head": head.get(name), "journal": value}
    return Verification(result, checked, problems, differences, missing, job)


# Journals up to this size are verified in full by `inspect SESSION`; larger ones from their
# newest checkpoint on, so the summary of a long session costs what its tail costs.
FULL_CHECK_BYTES = 8 * 1024 * 1024


def journal_bytes(session: SessionDir) -> int:
    try:
        return sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(session.journal))
    except FileNotFoundError:
        return 0


def describe(store: Store, session: SessionDir) -> dict[str, Any]:
    """Everything `inspect SESSION` shows: the record, the thread, tool calls, lock, integrity,
    and the plan `recover` would follow."""
    from handshake_cli.recovery.view import SessionView, rebuild

    config = session.read_config()
    holder = lock.holder(session.path)
    view: SessionView | None
    try:
        view = rebuild(session)
    except HandshakeError:
        view = None  # e.g. a job config this version cannot read: fall back to the journal alone
    if view is None or journal_bytes(session) <= FULL_CHECK_BYTES:
        result = scan(session.journal, session.session_id)
        record = fold(session.session_id, result.records)
        history = replay(result.records)
        messages, turns = history.messages, history.turns
        integrity = {"scope": "full", **verify(session, result).as_json()}
        abandoned = abandoned_streams(fold_thread(result.records).abandoned, result.records)
    else:
        record = view.record
        history = replay(view.records)
        messages, turns = view.thread.messages, view.thread.turn
        integrity = _tail_integrity(view)
        history.tool_calls = _calls_from_view(view, history)
        abandoned = abandoned_streams(view.thread.abandoned, view.records)
    state = effective_state(record.state, holder)
    calls = list(history.tool_calls.values())
    if holder is not None:  # a live writer: an open intent is running, not in doubt
        for call in calls:
            if call.get("state") == IN_DOUBT:
                call["state"] = "running"
    return {
        "session_id": session.session_id,
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
        "pending_tool_calls": [c["tool_call_id"] for c in calls if c.get("state") == PENDING],
        "in_doubt_tool_calls": [c["tool_call_id"] for c in calls if c.get("state") == IN_DOUBT],
        "lock_holder": holder.as_json() if holder else None,
        "integrity": integrity,
        "recovery_plan": _plan(store, view, holder),
        "anomalies": record.anomalies,
    }


def abandoned_streams(abandoned: list[dict[str, Any]], records: list[Record]) -> list[dict[str, Any]]:
    """Model calls that gave no answer, with the text they had streamed (masked, as journaled).

    The text comes from the records at hand; for a call older than them (a long session read
    from its newest checkpoint) it is null, and `inspect --events --since-seq` shows it."""
    first = records[0].seq if records else None
    chunks = [r for r in records if r.type == "model.chunk"]
    streams = []
    for entry in abandoned:
        since, until = entry.get("request_seq") or 0, entry.get("ended_seq") or 0
        text = None
        if first is not None and since >= first:
            text = "".join(
                str(r.data.get("text", ""))
                for r in chunks
                if since < r.seq < until and r.data.get("turn") == entry.get("turn")
            )
        streams.append(
            {
                "turn": entry.get("turn"),
                "reason": entry.get("reason"),
                "request_seq": since,
                "ended_seq": until,
                "text": text,
            }
        )
    return streams


def _plan(store: Store, view: Any, holder: lock.LockHolder | None) -> dict[str, Any] | None:
    """What `recover` would do now; None while a live process holds the session."""
    from handshake_cli.recovery.plan import make_plan

    if holder is not None or view is None:
        return None
    try:
        plan = make_plan(view, store.paths.root_args())
    except HandshakeError as error:
        return {"action": "refused", "reason": error.code, "message": error.message}
    data = plan.as_json()
    return {key: data[key] for key in ("action", "reason", "in_doubt", "in_flight", "checkpoint", "commands")}


def _tail_integrity(view: Any) -> dict[str, Any]:
    damage = view.damage
    verdict = "damaged" if view.corruption else "repairable" if view.torn_tail else "intact"
    return {
        "scope": "from_checkpoint",
        "checked_from_seq": view.scanned_from,
        "verdict": verdict,
        "journal": {
            "records": view.last_seq,
            "last_seq": view.last_seq,
            "damage": damage.as_json() if damage else None,
        },
        "full_check": f"handshake inspect {view.session.session_id} --verify",
    }


def _calls_from_view(view: Any, tail: Any) -> dict[str, dict[str, Any]]:
    """Tool calls of a long session: finished ones from the checkpoint's ledger, open ones from
    the thread, with the details the tail's records add."""
    calls: dict[str, dict[str, Any]] = {}
    for entry in view.thread.ledger:
        calls[entry["tool_call_id"]] = {
            "tool_call_id": entry["tool_call_id"],
            "tool": entry.get("tool"),
            "idempotency_key": entry.get("idempotency_key"),
            "state": "failed" if entry.get("outcome") == "failed" else "done",
        }
    for call in view.thread.pending:
        calls[call["tool_call_id"]] = {
            "tool_call_id": call["tool_call_id"],
            "tool": call.get("tool"),
            "args": call.get("args"),
            "idempotency_key": call.get("idempotency_key"),
            "state": IN_DOUBT if call.get("intent_seq") else PENDING,
        }
    for call_id, detail in tail.tool_calls.items():
        if call_id in calls:
            calls[call_id] = {**calls[call_id], **detail}
    return calls
