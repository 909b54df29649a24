"""What one gc did (or, on a dry run, would do): the sessions removed and skipped, the debris
swept, the errors, and the exit code they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from handshake_cli.errors import worst_exit_code
from handshake_cli.maintenance.gc.policy import Policy
from handshake_cli.session.status import ErrorObject


class Removed(TypedDict):
    """A session gc removed (or, on a dry run, would remove)."""

    session_id: str
    state: str
    last_record_at: str | None
    age_seconds: float
    bytes: int


class Skipped(TypedDict):
    """A session past the age that gc left, and why."""

    session_id: str
    state: str
    reason: str  # locked, unfinished, changed, damaged
    detail: str
    last_record_at: str | None
    error: NotRequired[ErrorObject]  # damaged only: why its files cannot be trusted


class Swept(TypedDict):
    """Debris gc deleted."""

    kind: str  # trash, staging, temp, request, quarantine, artifact, pack
    path: str  # relative to the root
    bytes: int


class RemovalError(TypedDict):
    """Something gc could not remove, and the error that stopped it."""

    path: str
    error: str


@dataclass
class Report:
    policy: Policy
    removed: list[Removed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    swept: list[Swept] = field(default_factory=list)
    errors: list[RemovalError] = field(default_factory=list)
    kept: int = 0  # sessions left alone for their age (or because no age was given)
    notes: list[str] = field(default_factory=list)

    @property
    def reclaimed_bytes(self) -> int:
        return sum(item["bytes"] for item in [*self.removed, *self.swept])

    @property
    def exit_code(self) -> int:
        """The worst error among the sessions skipped as damaged; 0 when there is none."""
        return worst_exit_code(item["error"]["exit_code"] for item in self.skipped if item.get("error"))

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.policy.dry_run,
            "removed": self.removed,
            "skipped": self.skipped,
            "swept": self.swept,
            "reclaimed_bytes": self.reclaimed_bytes,
            "kept": self.kept,
            "errors": self.errors,
            "policy": self.policy.as_json(),
            "notes": self.notes,
        }
