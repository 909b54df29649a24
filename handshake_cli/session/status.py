"""A session's status as every reader sees it: the one derivation of each rule.

- The stored state: head.json when it agrees with the journal's last record, else a fold of
  the journal (`head_or_fold`).
- The state a reader shows: ACTIVE with nobody holding the lock is INTERRUPTED
  (`effective_state`).
- The listing of a root: one row per session, cheaply; a session that cannot be read gets a
  row of its own (UNREADABLE, with its `error`) and the others are served as usual.

`inspect`, `recover --all`, `gc` and bundles all read sessions through here.
"""

from __future__ import annotations

from typing import NamedTuple, Required, TypedDict

from handshake_cli.errors import (
    EnvironmentFailure,
    ExitCode,
    HandshakeError,
    IntegrityError,
    NotFound,
    worst_exit_code,
)
from handshake_cli.session.state import (
    ACTIVE,
    BLOCKED,
    INTERRUPTED,
    PAUSED,
    STATES,
    ModelSession,
    fold,
)
from handshake_cli.storage import lock
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.vocabulary import SessionState


def effective_state(stored: str, holder: lock.LockHolder | None) -> str:
    """ACTIVE in the journal with nobody holding the lock means the writer died."""
    return INTERRUPTED if stored == ACTIVE and holder is None else stored


# The state of a session whose files cannot be read (its row carries an `error`).
UNREADABLE = SessionState.UNREADABLE


class ErrorObject(TypedDict):
    """Why one session of a root could not be served: the `error` of its row in the listing,
    `recover --all` and `gc` (JSON.md), shaped as a command's own error."""

    code: str
    exit_code: int
    message: str


class SessionRow(TypedDict, total=False):
    """One row of the listing (`inspect` without a session; JSON.md). A row for a session
    whose files cannot be read (UNREADABLE) holds only the required keys and its `error`."""

    session_id: Required[str]
    job_name: str | None
    state: Required[str]
    created_at: str | None
    updated_at: str | None
    last_checkpoint_at: str | None
    checkpoint_count: int
    size_bytes: int
    lock_holder: lock.LockHolderJson | None
    head_matches: bool
    error: ErrorObject  # UNREADABLE rows only
    needs_attention: Required[bool]


def session_problem(exc: Exception) -> ErrorObject:
    """Why one session of a root could not be served, as the `error` object of its row in the
    listing, `recover --all` and `gc`: {code, exit_code, message}, as a command's own error."""
    if isinstance(exc, HandshakeError):
        code, exit_code, message = exc.code, int(exc.exit_code), exc.message
    elif isinstance(exc, OSError):  # EIO, EACCES ...: the machine, not the files' content
        where = f"{exc.filename}: " if exc.filename else ""
        code, exit_code = EnvironmentFailure.code, int(ExitCode.ENVIRONMENT)
        message = f"{where}{exc.strerror or exc}"
    else:
        code, exit_code = "internal", int(ExitCode.INTERNAL)
        message = f"internal error: {type(exc).__name__}: {exc}. This is a bug in handshake; please report it"
    return {"code": code, "exit_code": exit_code, "message": message}


class StoredSession(NamedTuple):
    """What `head_or_fold` found."""

    record: ModelSession
    head_trusted: bool  # False: head.json disagreed with the journal, which was folded
    last_record: Record  # the journal record `record` is as of


def head_or_fold(store: SessionStore, session_id: str, *, refuse_corruption: bool = False) -> StoredSession:
    """The session record from head.json when it agrees with the journal's last record and
    names a state handshake writes, else folded from the journal.

    A fold stops at damage in the journal and folds the records before it, as a listing
    should; `refuse_corruption` raises IntegrityError instead for damage other than a torn
    tail (gc, which must not decide a removal from part of a journal)."""
    head = store.read_head(session_id)
    last = store.last_record(session_id)
    if head and last and head.get("last_seq") == last.seq and head.get("state") in STATES:
        record = ModelSession(session_id)
        for name in (
            "state",
            "checkpoint_artifact_id",
            "last_checkpoint_at",
            "checkpoint_count",
            "last_seq",
            "checkpoint_location",
        ):
            if name in head:
                setattr(record, name, head[name])
        record.updated_at = last.ts
        return StoredSession(record, True, last)
    result = store.scan(session_id)
    if refuse_corruption and result.corruption:
        damage = result.corruption
        raise IntegrityError(
            f"journal is corrupt at {damage.segment} offset {damage.offset}: {damage.detail}"
        )
    if not result.records:  # record 1 is written with the session: its absence is damage
        raise no_intact_record(store, session_id)
    return StoredSession(fold(session_id, result.records), False, result.records[-1])


def no_intact_record(store: SessionStore, session_id: str, where: str = "") -> IntegrityError:
    """Record 1 is written with the session: a journal without an intact record is damage."""
    journal = f"{store.location(session_id)}/journal"
    return IntegrityError(f"session {session_id}: the journal holds no intact record ({journal}){where}")


def vanished(store: SessionStore, session_id: str, what: str) -> NotFound | IntegrityError:
    """Something of the session was not there as it was read: the session was removed (by gc)
    meanwhile, which readers never block (NotFound), or, while it is still listed, damaged."""
    if session_id not in store.session_ids():
        return NotFound(f"session {session_id} was removed (by gc) while it was being read")
    return IntegrityError(f"session {session_id} has no {what}")


def list_sessions(store: SessionStore) -> list[SessionRow]:
    """One row per session, cheaply: head.json checked against the journal's last record.

    A session that cannot be read gets a row of its own (state UNREADABLE, and its `error`)
    and the others are listed as usual. Damage in the middle of a journal is found by
    `describe` and `verify`, which read it all.
    """
    rows: list[SessionRow] = []
    for session_id in store.session_ids():
        try:
            rows.append(_row(store, session_id))
        except Exception as exc:  # one broken session must not hide the others
            if session_id not in store.session_ids():
                continue  # removed (by gc) since the listing began
            rows.append(
                {
                    "session_id": session_id,
                    "state": UNREADABLE,
                    "error": session_problem(exc),
                    "needs_attention": True,
                }
            )
    return rows


def listing_exit_code(rows: list[SessionRow]) -> int:
    """The listing's exit code: the worst of its unreadable sessions' errors, else 0."""
    return worst_exit_code(row["error"]["exit_code"] for row in rows if row.get("error"))


def _row(store: SessionStore, session_id: str) -> SessionRow:
    config = store.read_config(session_id)  # refuses links and files out of place
    record, head_matches, _ = head_or_fold(store, session_id)
    holder = store.holder(session_id)
    state = effective_state(record.state, holder)
    return {
        "session_id": session_id,
        "job_name": (config.get("job") or {}).get("name"),
        "state": state,
        "created_at": config.get("created_at"),
        "updated_at": record.updated_at,
        "last_checkpoint_at": record.last_checkpoint_at,
        "checkpoint_count": record.checkpoint_count,
        "size_bytes": store.session_bytes(session_id),
        "lock_holder": holder.as_json() if holder else None,
        # A head that lags the journal is what a crash leaves behind: worth a look.
        "head_matches": head_matches,
        # (while a writer runs, head.json lags by design: that is no reason to look)
        "needs_attention": state in (INTERRUPTED, BLOCKED, PAUSED) or (not head_matches and holder is None),
    }
