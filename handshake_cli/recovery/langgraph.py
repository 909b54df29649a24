"""`recover` on a LangGraph thread's session: repair what belongs to storage, record the
operator's answers, and say how to resume from LangGraph. It never runs the graph: only the
program that owns the graph can (`graph.invoke(None, config)`).

What it does, under the session's lock (a live `HandshakeSaver` holding the thread is
`SessionLocked`, exit 4):
- a torn tail is cut into `quarantine/` (a `langgraph.repaired` record says so);
  corruption is never cut (exit 5);
- each `--resolve CALL=done|retry` becomes an `operator.resolution` record for a gated
  call in doubt (the gate reads it when the graph resumes: `done` records the call as done
  without running it, `retry` runs it again with the same idempotency key);
- head.json is rewritten from the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.errors import ExitCode, IntegrityError, SessionLocked, UsageError
from handshake_cli.session.langgraph_thread import KIND, RECORD_TYPES, ThreadIndex
from handshake_cli.session.state import ModelSession
from handshake_cli.storage.contract import Durability, SessionStore, TailRepair
from handshake_cli.storage.journal.scan import ScanResult


def is_langgraph_session(config: dict[str, Any]) -> bool:
    return config.get("kind") == KIND


@dataclass
class ThreadRecovery:
    session_id: str
    thread_id: str
    dry_run: bool
    checkpoints: int
    newest_checkpoint: str | None
    repaired_torn_tail: TailRepair | dict[str, Any] | None
    resolved: dict[str, str]
    in_doubt: list[dict[str, Any]]
    guidance: list[str] = field(default_factory=list)
    exit_code: int = ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "kind": KIND,
            "thread_id": self.thread_id,
            "dry_run": self.dry_run,
            "checkpoints": self.checkpoints,
            "newest_checkpoint": self.newest_checkpoint,
            "repaired_torn_tail": self.repaired_torn_tail,
            "resolved": self.resolved,
            "in_doubt": self.in_doubt,
            "resume": resume_snippet(self.thread_id),
            "exit_code": self.exit_code,
        }


def resume_snippet(thread_id: str) -> str:
    return f'graph.invoke(None, {{"configurable": {{"thread_id": {json.dumps(thread_id)}}}}})'


def recover_thread(
    store: SessionStore, session_id: str, resolutions: dict[str, str], *, dry_run: bool
) -> ThreadRecovery:
    config = store.read_config(session_id)
    thread_id = str((config.get(KIND) or {}).get("thread_id", ""))
    root_args = store.paths.root_args()
    if dry_run:
        holder = store.holder(session_id)
        if holder is not None:
            raise _locked(session_id, holder.describe())
        scan = _checked_scan(store, session_id)
        damage = dict(scan.torn_tail.as_json()) if scan.torn_tail else None
        return _outcome(
            session_id, thread_id, _fold(thread_id, scan), damage, {}, resolutions, root_args, True
        )
    try:
        lease = store.acquire(session_id, command=f"handshake recover {session_id}")
    except SessionLocked as exc:
        raise _locked(session_id, str(exc.message)) from None
    with lease:
        scan = _checked_scan(store, session_id)
        repaired = lease.repair_torn_tail(scan.torn_tail) if scan.torn_tail else None
        index = _fold(thread_id, scan)
        doubt = _in_doubt(index)
        unknown = sorted(set(resolutions) - set(doubt))
        if unknown:
            raise UsageError(
                f"--resolve names {', '.join(unknown)}, not a call in doubt in session {session_id}"
                + (f" (in doubt: {', '.join(doubt)})" if doubt else " (none is in doubt)")
            )
        appender = lease.open_journal()
        try:
            if repaired is not None:
                appender.append("langgraph.repaired", {"repaired_torn_tail": dict(repaired)})
            for call_id, answer in resolutions.items():
                appender.append(
                    "operator.resolution",
                    {"tool_call_id": call_id, "resolution": answer, "by": "handshake recover"},
                    durability=Durability.NOW,
                )
                index.calls[call_id].resolution = answer
        finally:
            appender.close()
        session = ModelSession(session_id)
        for record in store.scan(session_id).records:
            session.apply(record)
        head = session.head()
        kept = (store.read_head(session_id) or {}).get("langgraph_index")
        if kept is not None:  # the saver's snapshot: still valid (the saver checks it anyway)
            head["langgraph_index"] = kept
        lease.write_head(head)
    return _outcome(session_id, thread_id, index, repaired, resolutions, {}, root_args, False)


def _locked(session_id: str, holder: str) -> SessionLocked:
    return SessionLocked(
        f"session {session_id} is held by {holder}: a HandshakeSaver has the thread open. "
        "Close it (saver.close(), or leave its `with` block) and run recover again; a saver "
        "repairs a torn tail itself when it opens the thread.",
    )


def _checked_scan(store: SessionStore, session_id: str) -> ScanResult:
    scan = store.scan(session_id, decode=RECORD_TYPES)
    if scan.corruption:
        damage = scan.corruption
        raise IntegrityError(
            f"session {session_id}: the journal is corrupt at {damage.segment} offset {damage.offset}: "
            f"{damage.detail}; it is never cut off",
            guidance=[f"handshake inspect {session_id} --verify"],
        )
    return scan


def _fold(thread_id: str, scan: ScanResult) -> ThreadIndex:
    index = ThreadIndex(thread_id)
    for record in scan.records:
        index.apply(record)
    return index


def _in_doubt(index: ThreadIndex) -> dict[str, dict[str, Any]]:
    return {
        call_id: entry.intent
        for call_id, entry in index.calls.items()
        if entry.result is None and entry.resolution is None
    }


def _outcome(
    session_id: str,
    thread_id: str,
    index: ThreadIndex,
    repaired: TailRepair | dict[str, Any] | None,
    resolved: dict[str, str],
    would_resolve: dict[str, str],
    root_args: list[str],
    dry_run: bool,
) -> ThreadRecovery:
    doubt = [
        {
            "tool_call_id": call_id,
            "tool": intent.get("tool"),
            "idempotency": intent.get("idempotency"),
            "idempotency_key": intent.get("idempotency_key"),
            "args": intent.get("args"),
        }
        for call_id, intent in _in_doubt(index).items()
        if call_id not in would_resolve
    ]
    newest = max(index.checkpoints.get("", {}), default=None)
    guidance = [
        " ".join(
            ["handshake", "recover", session_id, *root_args, "--resolve", f"{call['tool_call_id']}=done"]
        )
        for call in doubt
        if call["idempotency"] == "non_idempotent"
    ]
    guidance.append(f"resume from LangGraph: {resume_snippet(thread_id)}")
    return ThreadRecovery(
        session_id,
        thread_id,
        dry_run,
        sum(len(entries) for entries in index.checkpoints.values()),
        newest,
        repaired,
        resolved,
        doubt,
        guidance,
    )
