"""`recover --all`: every interrupted session recovered in turn, one row each.

A session that cannot be recovered gets a row with its `error` and the others go on, except
after a failed write or fsync, which is fatal to the writing process. The batch exits with
the worst outcome among its rows (`errors.worst_exit_code`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Required, TypedDict

from handshake_cli.errors import DurabilityError, HandshakeError, worst_exit_code
from handshake_cli.recovery.execute import Options, recover, sessions_to_recover
from handshake_cli.session.status import ErrorObject, session_problem
from handshake_cli.storage.contract import SessionStore


class SessionRecovered(TypedDict, total=False):
    """One row of `recover --all` (JSON.md: the `sessions` of its JSON)."""

    session_id: Required[str]
    state_before: str  # absent when the session could not be recovered
    action: Required[str]  # the plan's action, or "error"
    reason: Required[str]  # the plan's reason, or the error's code
    state: Required[str | None]
    exit_code: Required[int]
    message: str  # with "error": the error's message
    error: ErrorObject
    guidance: Required[list[str]]


@dataclass
class RecoveredAll:
    sessions: list[SessionRecovered] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The worst exit code among the sessions; 0 when there were none."""
        return worst_exit_code(row["exit_code"] for row in self.sessions)

    def as_json(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "exit_code": self.exit_code}


def recover_all(store: SessionStore, options: Options) -> RecoveredAll:
    """Recover every session that is not terminal and that nobody holds, in id order."""
    done = RecoveredAll()
    for session_id in sessions_to_recover(store):
        try:
            outcome = recover(store, session_id, options)
            done.sessions.append(
                {
                    "session_id": session_id,
                    "state_before": outcome.plan.state,
                    "action": outcome.plan.action,
                    "reason": outcome.plan.reason,
                    "state": outcome.state,
                    "exit_code": outcome.exit_code,
                    "guidance": outcome.guidance,
                }
            )
        except Exception as exc:  # one session that cannot be recovered must not stop the others
            problem = session_problem(exc)
            done.sessions.append(
                {
                    "session_id": session_id,
                    "action": "error",
                    "reason": problem["code"],
                    "state": None,
                    "exit_code": problem["exit_code"],
                    "message": problem["message"],
                    "error": problem,
                    "guidance": exc.guidance if isinstance(exc, HandshakeError) else [],
                }
            )
            if isinstance(exc, DurabilityError):
                break  # a failed write or fsync is fatal to the writing process: no more sessions
    return done
