"""The one exception family of handshake, and the exit codes it maps to.

Every error the core raises on purpose is a `HandshakeError`. Each class carries its
exit code (DESIGN section 6), a stable `code` string for `--json`, and optional
guidance: the exact commands that would move things on. The CLI catches this family
in one place; anything else that escapes is a bug and exits 1 (except an `OSError` that is
the machine failing, a full disk or an I/O error: exit 74, see durable.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    BLOCKED = 3
    LOCKED = 4
    INTEGRITY = 5
    NOT_FOUND = 6
    JOB_FAILED = 7
    ENVIRONMENT = 74
    STOPPED = 75


# A command over many sessions (`recover --all`, the `inspect` listing, `gc`) exits with its
# worst outcome: a bug, then damage, then what needs a person (blocked), a failed job, the
# machine failing us, a lock, bad input, a stop, a session gone.
SEVERITY = (
    ExitCode.INTERNAL,
    ExitCode.INTEGRITY,
    ExitCode.BLOCKED,
    ExitCode.JOB_FAILED,
    ExitCode.ENVIRONMENT,
    ExitCode.LOCKED,
    ExitCode.USAGE,
    ExitCode.STOPPED,
    ExitCode.NOT_FOUND,
    ExitCode.OK,
)


def worst_exit_code(codes: Iterable[int]) -> int:
    """The first of SEVERITY among `codes`; 0 when there are none."""
    found = set(codes)
    return int(next((code for code in SEVERITY if code in found), ExitCode.OK))


class HandshakeError(Exception):
    """Base of every deliberate failure. Subclasses set `exit_code` and `code`."""

    exit_code: ExitCode = ExitCode.INTERNAL
    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        guidance: list[str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.guidance = guidance or []
        self.details = details or {}


class UsageError(HandshakeError):
    exit_code = ExitCode.USAGE
    code = "usage"


class InvalidSessionId(UsageError):
    code = "invalid_session_id"


class SessionExists(UsageError):
    code = "session_exists"


class InvalidConfig(UsageError):
    """handshake.toml does not check out: the message names the file and the key."""

    code = "invalid_config"


class SessionLocked(HandshakeError):
    exit_code = ExitCode.LOCKED
    code = "locked"


class IntegrityError(HandshakeError):
    exit_code = ExitCode.INTEGRITY
    code = "integrity"


class UnsupportedFormat(UsageError):
    """Files written by a newer handshake: nothing is wrong with them, this version can't read them."""

    code = "unsupported_format"


class ArtifactCorrupt(IntegrityError):
    code = "artifact_corrupt"


class JobChanged(IntegrityError):
    """session.toml's job is not the one the session's first record was written with."""

    code = "job_changed"


class JournalNeedsRepair(IntegrityError):
    """The journal ends in a torn tail; appending now would bury it mid-journal."""

    code = "journal_needs_repair"


class EnvironmentFailure(HandshakeError):
    """The machine failed us (a full disk, an I/O error, a lost database): not a bug, and
    nothing acknowledged is lost. The message names the file and the cause."""

    exit_code = ExitCode.ENVIRONMENT
    code = "environment"


class DurabilityError(EnvironmentFailure):
    """A write or fsync failed. Fatal to the writing process: never retried and acknowledged."""

    code = "durability"


class NotFound(HandshakeError):
    exit_code = ExitCode.NOT_FOUND
    code = "not_found"


# -- export / import --------------------------------------------------------------------


class OutputExists(UsageError):
    code = "output_exists"


class InvalidBundle(UsageError):
    """Not a bundle `handshake export` wrote, or one that tries to reach outside its session."""

    code = "invalid_bundle"


class BundleDamaged(IntegrityError):
    """A member's bytes do not match the manifest, or the archive is cut short."""

    code = "bundle_damaged"


class SessionChanged(SessionLocked):
    """A file shrank while it was read: only a writer holding the lock (recovery) does that."""

    code = "session_changed"
