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

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypedDict

from handshake_cli.paths import Paths
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


@dataclass(frozen=True)
class CheckpointRequest:
    """A request `handshake checkpoint` left for a running session: its nonce and reason."""

    nonce: str
    reason: str | None


class SessionFile(Protocol):
    """One file of a session as a bundle holds it (docs/FORMAT.md's layout), open for one read."""

    name: str  # below the session, '/'-separated: "session.toml", "journal/00000001.jsonl"
    size: int
    mtime: int  # seconds since the epoch

    def read(self, n: int = -1) -> bytes:
        """Up to `n` (all, when negative) of the `size` bytes not read yet; `SessionChanged`
        when the bytes end before `size` (a live session's file was cut meanwhile)."""
        ...


class ArtifactCheck(TypedDict):
    """What `SessionStore.check_artifacts` found: how many artifacts were hashed, what was
    wrong (each a problem object of JSON.md's integrity report: `kind` `artifact_corrupt`,
    `pack_corrupt` or `pack_torn_tail`, with `artifact_id` or where), and every id present."""

    checked: int
    problems: list[dict[str, Any]]
    present: set[str]


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

    def sync_artifacts(self) -> None:
        """Make every artifact added so far durable, now (records stay as they are). The
        writer calls it before each append, so a record never reaches the store before an
        artifact it names, even one that a crash makes durable unasked."""
        ...

    def close(self) -> None:
        """Let go; never raises. What was not synced may be lost at a crash."""
        ...


class Lease(Protocol):
    """The right to change one session; `SessionStore.acquire` hands it out."""

    session_id: str
    holder: LockHolder  # who holds it (pid, host, since, command): what a refused writer is told

    def open_journal(
        self, *, clock: Clock | None = None, start: Start | None = None, segment_bytes: int | None = None
    ) -> JournalAppender:
        """An appender after the journal's last record, once the journal is verified:
        `IntegrityError` for corruption, `JournalNeedsRepair` for a torn tail. `start` is a
        record the caller already verified (recovery's view): only the journal from it on
        need be verified again. `segment_bytes` is where a store that keeps the journal in
        segments starts a new one (a hint; a store without segments ignores it)."""
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

    def pending_requests(self) -> list[CheckpointRequest]:
        """The checkpoint requests not answered yet, oldest first (`SessionStore.submit_request`)."""
        ...

    def answer_request(self, request: CheckpointRequest, payload: dict[str, Any]) -> bool:
        """Answer a request with the checkpoint taken for it, and take it off the pending list;
        whether the answer was kept. Never fatal: the asker times out instead."""
        ...

    def remove_session(self) -> None:
        """Remove the session whole, as its lease holder (gc): gone from `session_ids` at once,
        never half there, and durable when this returns; the lease ends with it. Holding the
        lease is what keeps a writer out between the caller's last look and the removal."""
        ...

    def drop_artifacts(self, artifact_ids: Collection[str]) -> int:
        """Remove these artifacts (ones no record names: the caller checked, under this lease)
        durably; the bytes freed. One kept together with artifacts that stay (a pack segment
        holding others) stays: only what can go alone goes."""
        ...

    def release(self) -> None:
        """Let go of the session; never raises."""
        ...

    def __enter__(self) -> Lease: ...

    def __exit__(self, *exc: object) -> None: ...


class SessionStore(Protocol):
    """Every session of one store, read by anyone and changed under a lease."""

    # The root as the user gave it (a directory or a URL): guidance repeats
    # `paths.root_args()`, messages show `paths.shown_root` (never a password).
    paths: Paths
    # How often (seconds) a lease holder looks for checkpoint requests by itself, at its
    # boundaries; None when it looks only when woken, by a SIGUSR1 from its own machine. A
    # store that gives a number answers an asker on any machine, which never signals then.
    request_poll: float | None

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

    def remove_unchanged(self, session_id: str, last: Record) -> int | None:
        """gc's removal: under the session's lease, taken without waiting (`SessionLocked`
        when someone holds it), if the journal's last intact record is still `last` (its seq
        and sum), remove the session whole and durably, as `remove_session` does, and let the
        lease go; the bytes it took (`session_bytes` under the lease). None, with nothing changed, when the
        journal moved; `NotFound` when the session is gone. Taking the lease, the check and
        the removal are one step against a writer: none can slip in between."""
        ...

    def read_config(self, session_id: str, *, check_job: bool = True) -> dict[str, Any]:
        """The config the session was created with, checked as it is read: `UnsupportedFormat`
        for a newer `format_version`, `IntegrityError` for another session's. Unless
        `check_job` is False, a `job` that no longer hashes to record 1's `job_sha256` (edited
        after the session began) is `JobChanged`."""
        ...

    def location(self, session_id: str) -> str:
        """Where the session is kept, for messages: a directory, or the store's address
        (never a password) and the id."""
        ...

    def session_bytes(self, session_id: str) -> int:
        """What the session takes in the store, in bytes (the listing's `size_bytes`)."""
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

    def record_line_at(self, session_id: str, segment: str, offset: int) -> tuple[Record, bytes] | None:
        """`record_at`, with the record's line (the codec's bytes, without the newline) beside
        it: a checkpoint's body is hashed in the bytes it was written in."""
        ...

    def first_record(self, session_id: str) -> Record | None:
        """Record 1 when it is intact, else None; one read, no scan."""
        ...

    def start_near(self, session_id: str, seq: int) -> Start | None:
        """A place to begin a scan that reaches record `seq`: an intact record at or before it
        (cheaply found: a segment's first record, say), or None to scan from the start."""
        ...

    def find_backwards(
        self, session_id: str, type_: str, *, at_most: int | None = None
    ) -> Iterator[tuple[Record, bytes]]:
        """The intact records of `type_` (with seq at most `at_most`), newest first, each with
        its line, found from the journal's end without reading all of it. A record's checksum
        proves its bytes, not its place: each one yielded links (seq and `prev`) to the
        intact record just before it, so a stale copy of an old line is never yielded."""
        ...

    def journal_bytes(self, session_id: str) -> int:
        """How many bytes the journal's lines take: `inspect` verifies a small journal whole."""
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

    def artifact_sizes(self, session_id: str) -> dict[str, int]:
        """Every artifact the session keeps, by id, with its bytes (nothing hashed): what
        `gc --keep-checkpoints` compares with the ids the journal names."""
        ...

    def check_artifacts(self, session_id: str) -> ArtifactCheck:
        """Hash every artifact the session keeps (`inspect --verify`); never raises for damage."""
        ...

    # -- bundles: a session as files (export), files as a session (import) ---------------------

    def session_files(self, session_id: str, skipped: list[dict[str, str]]) -> Iterator[str | SessionFile]:
        """The session as the files of a bundle (docs/FORMAT.md, "Bundles"), without the lease:
        a directory as its name, a file as a `SessionFile` open until the next item is asked
        for. head.json first, then session.toml, then the journal in seq order (so a live
        session gives a consistent prefix: artifacts are durable before the records naming
        them), then the rest. The same session gives the same files from any store. What
        cannot travel (what describes a writer's process; a name no store writes) is left out,
        the latter added to `skipped` as {path, reason}."""
        ...

    def staging_area(self, session_id: str) -> Path:
        """A new, empty, private directory where a bundle's session is assembled for
        `import_session`; the caller removes it afterwards, whatever happened."""
        ...

    def import_session(self, session_id: str, staged: Path) -> None:
        """Make `staged` (a directory holding `sessions/<session_id>/` in the bundle layout,
        each file checked against its manifest, possibly a damaged session) one of this store's
        sessions, byte for byte, whole or not at all: `SessionExists` when the id is taken."""
        ...

    # -- the lease ------------------------------------------------------------------------------

    def acquire(self, session_id: str, *, command: str | None = None) -> Lease:
        """Take the session's lease without waiting; `SessionLocked` naming the holder (in
        its message, and as `lock_holder` in its details) when someone has it."""
        ...

    def holder(self, session_id: str) -> LockHolder | None:
        """Who holds the lease, if a live holder does. Never takes it."""
        ...

    # -- asking a running session for a checkpoint ----------------------------------------------

    def submit_request(self, session_id: str, reason: str | None) -> CheckpointRequest:
        """Leave a checkpoint request for the lease holder (`Lease.pending_requests`), without
        the lease. The asker then wakes the holder as it can (a signal on the same machine),
        or, on a store with a `request_poll`, lets the holder find it."""
        ...

    def wait_for_answer(
        self,
        session_id: str,
        request: CheckpointRequest,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any] | None:
        """The holder's answer (`Lease.answer_request`), consumed; None when `timeout` seconds
        pass without one, or as soon as `alive` says the holder is gone."""
        ...

    def withdraw_request(self, session_id: str, request: CheckpointRequest) -> None:
        """Take an unanswered request back, so a later run does not answer it; never raises."""
        ...
