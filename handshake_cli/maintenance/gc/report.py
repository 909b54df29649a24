"""What one gc did (or, on a dry run, would do): the sessions removed and skipped, the debris
swept, the errors, and the exit code they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handshake_cli.errors import worst_exit_code
from handshake_cli.maintenance.gc.policy import Policy


@dataclass
class Report:
    policy: Policy
    removed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    swept: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
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
