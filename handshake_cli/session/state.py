"""The ModelSession record and its state machine, folded from journal records.

The journal is the truth; `head.json` is a cache of the fold's result that is replaced
atomically and may lag behind (it need not be rewritten at every checkpoint). Whoever
reads it checks it against the journal's last record and folds again when they disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handshake_cli.storage import head
from handshake_cli.storage.contract import Lease, SessionStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.vocabulary import SessionState

CREATED = SessionState.CREATED
ACTIVE = SessionState.ACTIVE
PAUSED = SessionState.PAUSED
BLOCKED = SessionState.BLOCKED
COMPLETED = SessionState.COMPLETED
FAILED = SessionState.FAILED
CANCELLED = SessionState.CANCELLED
# Derived, never stored: ACTIVE in the journal while nobody holds the lock.
INTERRUPTED = SessionState.INTERRUPTED

STATES = (CREATED, ACTIVE, PAUSED, BLOCKED, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
TRANSITIONS: dict[str, frozenset[SessionState]] = {
    CREATED: frozenset({ACTIVE, FAILED, CANCELLED}),
    ACTIVE: frozenset({PAUSED, BLOCKED, COMPLETED, FAILED, CANCELLED}),
    PAUSED: frozenset({ACTIVE, BLOCKED, FAILED, CANCELLED}),
    BLOCKED: frozenset({ACTIVE, FAILED, CANCELLED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}
# Records that end a session, and the state each one leaves it in.
ENDINGS = {"session.completed": COMPLETED, "session.failed": FAILED, "session.cancelled": CANCELLED}

HEAD_FILE = head.HEAD_FILE
HEAD_FIELDS = ("state", "checkpoint_artifact_id", "last_checkpoint_at", "checkpoint_count", "last_seq")


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


@dataclass
class ModelSession:
    session_id: str
    state: str = CREATED
    model_id: str | None = None
    backend: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    checkpoint_artifact_id: str | None = None
    checkpoint_location: dict[str, Any] | None = None
    last_checkpoint_at: str | None = None
    checkpoint_count: int = 0
    last_seq: int = 0
    # State changes the journal records but the machine does not allow: kept, not hidden.
    anomalies: list[str] = field(default_factory=list)

    def apply(self, record: Record) -> None:
        data = record.data
        self.last_seq = record.seq
        self.updated_at = record.ts
        kind = record.type
        if kind == "session.created":
            model = data.get("model") or {}
            self.model_id = model.get("id")
            self.backend = model.get("provider")
            self.created_at = record.ts
        elif kind == "session.state_change":
            self._move(str(data.get("to")), record)
        elif kind in ENDINGS:
            if self.state != ENDINGS[kind]:
                self._move(ENDINGS[kind], record)
        elif kind == "checkpoint.created":
            self.checkpoint_artifact_id = data.get("artifact_id")
            self.checkpoint_location = {"seq": record.seq, "segment": record.segment, "offset": record.offset}
            self.last_checkpoint_at = record.ts
            self.checkpoint_count += 1

    def _move(self, target: str, record: Record) -> None:
        if target not in STATES:
            self.anomalies.append(f"seq {record.seq}: unknown state {target!r}")
            return
        if target != self.state and not can_transition(self.state, target):
            self.anomalies.append(f"seq {record.seq}: {self.state} -> {target} is not allowed")
            if self.state in TERMINAL:
                return  # terminal states are sticky, whatever a later record says
        self.state = target

    def head(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HEAD_FIELDS} | {
            "checkpoint_location": self.checkpoint_location
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "state": self.state,
            "model_id": self.model_id,
            "backend": self.backend,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "checkpoint_artifact_id": self.checkpoint_artifact_id,
            "last_checkpoint_at": self.last_checkpoint_at,
            "checkpoint_count": self.checkpoint_count,
            "last_seq": self.last_seq,
        }


def fold(session_id: str, records: Iterable[Record]) -> ModelSession:
    session = ModelSession(session_id)
    for record in records:
        session.apply(record)
    return session


def write_head(session_dir: Path, session: ModelSession) -> bool:
    """Replace head.json with `session`'s fields; whether it was written (a cache: a failure
    to write it never stops a session)."""
    return head.write(session_dir, session.head())


def refresh_head(store: SessionStore, lease: Lease, session: ModelSession) -> bool:
    """Rewrite the head if it disagrees with `session` (the journal, folded) on any field
    `inspect --verify` compares; whether it did. A crash between a session's last record and
    the head that follows it leaves such a head, and nothing else would rewrite it."""
    cached = store.read_head(lease.session_id)
    if cached is not None and all(cached.get(name) == getattr(session, name) for name in HEAD_FIELDS):
        return False
    return lease.write_head(session.head())


def read_head(session_dir: Path) -> dict[str, Any] | None:
    """The cached head, or None when it is missing or unreadable (it is only a cache)."""
    return head.read(session_dir)


def initial_head(created: Record) -> dict[str, Any]:
    """The head.json a new session starts with, from its `session.created` record."""
    session = ModelSession(str(created.data["session_id"]))
    session.apply(created)
    return session.head()
