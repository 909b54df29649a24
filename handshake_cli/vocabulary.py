"""The words of handshake's domain, as types: a session's states, what recovery decides, what
a verification concludes, what a command's JSON says it did.

Each is a `StrEnum`, so a member *is* its string: every byte of JSON and TOML handshake
writes stays the same, comparisons with strings read from disk keep working, and mypy can
tell a state from a decision. The modules that own each rule keep their short names for the
members (`session.state.ACTIVE is SessionState.ACTIVE`); a tool call's status lives with its
rule in `session/calls.py`.
"""

from __future__ import annotations

from enum import StrEnum


class SessionState(StrEnum):
    """A session's state (DESIGN section 3). The first seven are stored; the others are what a
    reader derives and never written to the journal."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    BLOCKED = "BLOCKED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"  # ACTIVE in the journal while nobody holds the lock
    UNREADABLE = "UNREADABLE"  # a listing's row for a session whose files cannot be read


class PlanAction(StrEnum):
    """What recovery will do with a session as a whole."""

    NOTHING = "nothing"  # terminal: there is nothing to recover
    RESUME = "resume"  # settle the calls in doubt, then drive the session on
    BLOCKED = "blocked"  # stop with a reason and the commands that move it on
    CANCEL = "cancel"  # the operator asked to end it CANCELLED


class Decision(StrEnum):
    """What recovery does with a call whose intent is on record but whose result is not."""

    RERUN = "rerun"  # idempotent: run it again
    RERUN_WITH_KEY = "rerun_with_key"  # idempotent_with_key: again, with the same key
    PROBE = "probe"  # non_idempotent with a probe: the probe decides
    BLOCK = "block"  # non_idempotent without a probe: an operator decides
    RESOLVED_DONE = "resolved_done"  # the operator said it took effect: never run
    RESOLVED_RETRY = "resolved_retry"  # the operator said it did not: run it once more


class Verdict(StrEnum):
    """What `inspect --verify` (and an import) concludes about a session's files."""

    INTACT = "intact"
    REPAIRABLE = "repairable"  # a torn tail, a stale head.json: recovery repairs it
    DAMAGED = "damaged"  # recovery will not repair it


class Status(StrEnum):
    """The `status` of a command's `--json` envelope."""

    OK = "ok"
    BLOCKED = "blocked"
    FAILED = "failed"
    STOPPED = "stopped"
    ERROR = "error"
