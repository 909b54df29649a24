"""`inspect --verify`: every record's checksum and chain, every artifact's hash, the job
session.toml holds against the one record 1 was written with, and head.json against the
journal, summed up as a verdict (intact, repairable, damaged).

Bundle import verifies a session it lands with the same check, and `inspect SESSION` shows
this report for a journal small enough to read whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from handshake_cli.session.state import fold
from handshake_cli.session.status import no_intact_record
from handshake_cli.session.thread import named_artifacts
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.scan import DamageJson, ScanResult
from handshake_cli.storage.store import JOB_BOUND, JOB_CHANGED, job_binding
from handshake_cli.vocabulary import Verdict


class MissingArtifact(TypedDict):
    """An artifact a `tool.result` names that is neither loose nor in a pack."""

    artifact_id: str
    named_by_seq: int
    repairable: bool


class HeadDifference(TypedDict):
    """A field of head.json that disagrees with the journal's fold."""

    head: Any
    journal: Any


class JournalCheck(TypedDict):
    records: int
    last_seq: int
    damage: DamageJson | None


class ArtifactCheck(TypedDict):
    checked: int
    problems: list[dict[str, Any]]  # loose objects, pack frames, checkpoints: each its own keys
    missing: list[MissingArtifact]


class HeadCheck(TypedDict):
    matches: bool
    differences: dict[str, HeadDifference]


class VerificationJson(TypedDict):
    """`inspect --verify` (after its `session_id`) and an import's `integrity` (JSON.md)."""

    verdict: Verdict
    journal: JournalCheck
    artifacts: ArtifactCheck
    head: HeadCheck
    job: str


@dataclass
class Verification:
    journal: ScanResult
    artifacts_checked: int
    artifact_problems: list[dict[str, Any]]
    head_differences: dict[str, HeadDifference]
    missing_artifacts: list[MissingArtifact]
    job: str = JOB_BOUND  # store.JOB_*: is session.toml's [job] the one record 1 was written with?

    @property
    def verdict(self) -> Verdict:
        if (
            self.journal.corruption
            or self.job == JOB_CHANGED
            or any(not p.get("repairable") for p in [*self.artifact_problems, *self.missing_artifacts])
        ):
            return Verdict.DAMAGED
        if (
            self.journal.torn_tail
            or self.artifact_problems
            or self.missing_artifacts
            or self.head_differences
        ):
            return Verdict.REPAIRABLE
        return Verdict.INTACT

    def damage_message(self, session_id: str) -> str:
        """Why a damaged session is beyond what recovery repairs, in one sentence."""
        damage = self.journal.corruption
        return f"session {session_id} is damaged beyond what recovery repairs" + (
            f": {damage.detail} ({damage.segment}, byte {damage.offset})"
            if damage
            else ": the [job] in session.toml is not the one record 1 was written with"
            if self.job == JOB_CHANGED
            else ""
        )

    def as_json(self) -> VerificationJson:
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


def verify(store: SessionStore, session_id: str, result: ScanResult | None = None) -> Verification:
    """Every record's checksum and chain, every artifact's hash, head.json against the journal."""
    from handshake_cli.session.checkpoints import body_problem

    job = job_binding(store.read_config(session_id, check_job=False), store.first_record(session_id))
    # Only the records the checks read are decoded; every record's checksum and link is verified.
    result = result or store.scan(session_id, decode=VERIFY_DECODES)
    if result.last_seq == 0 and result.damage is None:  # record 1 comes with the session: none is damage
        raise no_intact_record(store, session_id)
    artifacts = store.check_artifacts(session_id)
    checked, problems, present = artifacts["checked"], artifacts["problems"], artifacts["present"]
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
    missing: list[MissingArtifact] = []
    reported: set[str] = set()
    for record in result.records:
        if record.type != "tool.result":
            continue
        for ident in named_artifacts(record.data):
            if ident not in present and ident not in reported:
                reported.add(ident)
                missing.append({"artifact_id": ident, "named_by_seq": record.seq, "repairable": False})
    folded = fold(session_id, result.records)
    folded.last_seq = result.last_seq  # the last record may be of a type not decoded here
    head = store.read_head(session_id)
    differences: dict[str, HeadDifference] = {}
    if store.holder(session_id) is not None:
        pass  # a live writer refreshes head.json at transitions only: a lag is expected
    elif head is None:
        differences["head.json"] = {"head": None, "journal": "missing or unreadable"}
    else:
        for name, value in folded.head().items():
            if name != "checkpoint_location" and head.get(name) != value:
                differences[name] = {"head": head.get(name), "journal": value}
    return Verification(result, checked, problems, differences, missing, job)
