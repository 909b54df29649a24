"""The session-store contract: what any store of sessions must do, whatever keeps the bytes.

A store keeps sessions: each one's configuration, its journal of records, its artifacts,
the head cache, the bytes recovery cut off (quarantine), and the lease that lets one writer
at a time change it. The filesystem store (`storage.filesystem`) is the default; the
in-memory store (`storage.memory`) is the reference the contract is checked against; a
database store is meant to be the third. A store is anything that passes the conformance
suite (tests/conformance/test_session_store.py), which is written against this module only.

Encoding is not storage. A record's line (its JSON, `prev` chaining it to the record before,
`sum` proving its bytes) is the journal codec's (`storage.journal.codec`: `encode`,
`check_content`, `Record.decode`, `genesis`). Every store keeps exactly the codec's line
bytes, so a session reads the same and exports the same from any of them, and every store
verifies those bytes with the codec when it reads them back: a record whose bytes were
damaged is reported as `Damage`, never returned.

Words the contract uses:

- durable: survives the machine failing. Files: fsynced, and a new name's directory too. A
  database: committed (synchronous_commit on). A failed sync is fatal to the writer that
  asked for it: it raises `DurabilityError` and the appender is unusable from then on.
- position: where a record is, `(segment, offset)`, handed out by the store in a `Record`
  and only ever handed back (`record_at`, a `Start` to scan from). Callers never compute one.
- lease: the right to change one session, held by one writer at a time and released when
  its holder ends, however it ends (an flock dropped by the kernel; a database session's
  lock dropped with its connection). Readers never take it and are never blocked by it.

Errors come from the one family in `handshake_cli.errors`: `NotFound`, `SessionExists`,
`InvalidSessionId`, `SessionLocked` (its details name the holder), `IntegrityError`,
`JournalNeedsRepair`, `ArtifactCorrupt`, `DurabilityError`, `EnvironmentFailure`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol, TypedDict

from handshake_cli.storage.journal.codec import Clock, Record
from handshake_cli.storage.journal.scan import Damage, ScanResult, Start
from handshake_cli.storage.lock import LockHolder


class Durability(StrEnum):
    """How durable an append is when it returns."""

    NOW = "now"  # durable before `append` returns, with everything appended before it
    NEXT_SYNC = "next_sync"  # rides on the next sync (a group commit): a crash may lose it


class TailRepair(TypedDict):
    """What cutting a torn tail did: where, how many bytes, and the quarantine name they kept."""

    segment: str
    offset: int
    length: int
    quarantined: str | None  # None when the tail was only a missing final newline


HeadFor = Callable[[Record], dict[str, Any]]


class JournalAppender(Protocol):
    """Appends to one session's journal, for its lease holder (`Lease.open_journal`)."""

    @property
    def last_seq(self) -> int: ...

    def append(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        durability: Durability = Durability.NOW,
        encoded: bytes | None = None,
    ) -> Record:
        """Append one record (encoded by the codec; `encoded` is `data` already as JSON).

        A record the codec refuses (beyond its limits) raises `RecordRefused` and nothing is
        written. With `Durability.NOW` the record, every record before it and every artifact
        added before it are durable when this returns."""
        ...

    def add_artifact(self, data: bytes) -> str:
        """Keep `data` as an artifact, riding on the next sync; its content id. Durable before
        any record made durable by that sync, so a record may name it."""
        ...

    def sync(self) -> None:
        """Make every artifact, then every record, added so far durable."""
        ...

    def close(self) -> None:
        """Let go; never raises. What was not synced may be lost at a crash."""
        ...


class Lease(Protocol):
    """The right to change one session; `SessionStore.acquire` hands it out."""

    session_id: str
    holder: LockHolder  # who holds it (pid, host, since, command): what a refused writer is told

    def open_journal(self, *, clock: Clock | None = None) -> JournalAppender:
        """An appender after the journal's last record, once the journal is verified:
        `IntegrityError` for corruption, `JournalNeedsRepair` for a torn tail."""
        ...

    def put_artifact(self, data: bytes) -> str:
        """Keep `data` as an artifact, durably, now; its content id (sha256 hex)."""
        ...

    def write_head(self, fields: dict[str, Any]) -> bool:
        """Replace the head cache; whether it was written. Never durable by itself and never
        fatal: the journal can always rebuild it."""
        ...

    def repair_torn_tail(self, damage: Damage) -> TailRepair:
        """Cut a torn tail (a scan's `torn_tail`) off the journal, its bytes kept in
        quarantine first, durably. Quarantine never overwrites: bytes cut at a position
        already used get a new name. Corruption (`damage.repairable` false) is refused
        with `IntegrityError`: it is never cut."""
        ...

    def release(self) -> None:
        """Let go of the session; never raises."""
        ...

    def __enter__(self) -> Lease: ...

    def __exit__(self, *exc: object) -> None: ...


class SessionStore(Protocol):
    """Every session of one store, read by anyone and changed under a lease."""

    # -- sessions -------------------------------------------------------------------------

    def session_ids(self) -> list[str]:
        """Every session's id, in id order (time order for generated ids)."""
        ...

    def create_session(
        self,
        config: dict[str, Any],
        created_data: dict[str, Any],
        *,
        head_for: HeadFor,
        session_id: str | None = None,
        clock: Clock | None = None,
    ) -> str:
        """Make a session whole or not at all: its config (`format_version`, `session_id`
        and `created_at` added), record 1 (`session.created`: `created_data` with
        `session_id`, `format_version` and `job_sha256`), durable, and the head `head_for`
        makes from that record. Its id, generated unless given (`InvalidSessionId`,
        `SessionExists`)."""
        ...

    def remove_session(self, session_id: str) -> None:
        """Remove a session whole: gone from `session_ids` at once, never half there.
        `SessionLocked` while a lease is held; `NotFound` when there is no such session."""
        ...

    def read_config(self, session_id: str) -> dict[str, Any]:
        """The config the session was created with, checked as it is read."""
        ...

    # -- the journal --------------------------------------------------------------------------

    def scan(
        self, session_id: str, *, start: Start | None = None, decode: bool | frozenset[str] = True
    ) -> ScanResult:
        """Every record (or from `start`, a record the caller already trusts), verified by
        the codec: checksum, seq and chain. Stops at the first damage, which is a torn tail
        when no intact record follows it and corruption otherwise. `decode` keeps every
        record, none (checking only), or those of the given types."""
        ...

    def last_record(self, session_id: str) -> Record | None:
        """The last intact record, without reading the whole journal."""
        ...

    def record_at(self, session_id: str, segment: str, offset: int) -> Record | None:
        """The intact record at a position the store handed out, or None."""
        ...

    # -- artifacts, the head cache, quarantine -------------------------------------------------

    def get_artifact(self, session_id: str, artifact_id: str) -> bytes:
        """An artifact's bytes, checked against its id: `ArtifactCorrupt` when they no longer
        match (or the id is not one), `NotFound` when there is no such artifact."""
        ...

    def read_head(self, session_id: str) -> dict[str, Any] | None:
        """The head cache as last written (with the store's `format_version`), or None when
        missing or unreadable. It may lag the journal; the journal wins."""
        ...

    def quarantined(self, session_id: str) -> list[str]:
        """The names of the byte runs kept in quarantine, sorted."""
        ...

    def read_quarantined(self, session_id: str, name: str) -> bytes:
        """The bytes kept under one quarantine name (as `TailRepair.quarantined` gave it)."""
        ...

    # -- the lease ------------------------------------------------------------------------------

    def acquire(self, session_id: str, *, command: str | None = None) -> Lease:
        """Take the session's lease without waiting; `SessionLocked` naming the holder (in
        its message, and as `lock_holder` in its details) when someone has it."""
        ...

    def holder(self, session_id: str) -> LockHolder | None:
        """Who holds the lease, if a live holder does. Never takes it."""
        ...
