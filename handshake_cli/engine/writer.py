"""The session writer: how records and artifacts are appended to a session and head.json
follows them, and the session (its ModelSession record and its Thread) as they leave it.

`open_writer()` owns the order: the lease, the journal with its artifacts (refused if it
needs repair), the fold; closed in reverse, the lease last. Everything goes through the
session-store contract (`storage.contract`): the filesystem store's appender is a journal
writer and a pack writer (where the named crash points of `faults` are), another store's
is its own. Its clients are the run loop,
recovery's executor, `handshake checkpoint` on a stopped session, `recover --fork` and the
benchmarks. DESIGN section 2's durability rules, as kept here:

1. `append(..., sync=True)` is on disk when it returns: the loop writes a tool's intent so
   before the tool starts (a read tool's rides on the next sync). Every result is made
   durable by the `checkpoint()` or `sync()` after it, before the next model request.
2. Artifacts before the records that name them: `append` syncs the pack first whenever it
   holds unsynced artifacts (`store_large_output`), and `checkpoint()` syncs it before its
   synced `checkpoint.created` record. head.json, a cache, is rewritten after: at
   transitions and ends, not at every checkpoint (a rename per tool call would cost as much
   as the checkpoint).
3. `sync=False` records (chunks, requests, completions) ride on the next sync.
4. A failed fsync is fatal: the journal and pack writers refuse every later write.
5. A torn tail is recovery's to cut before a writer opens: the journal refuses to open over it.
6. Every writer holds the session's lease, from before the journal opens to after it closes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

from handshake_cli import faults
from handshake_cli.engine.jobs import CheckpointPolicy, Job
from handshake_cli.engine.secrets import SecretMasker
from handshake_cli.session.checkpoints import CheckpointRef, CheckpointWriter
from handshake_cli.session.state import (
    BLOCKED,
    CANCELLED,
    COMPLETED,
    FAILED,
    PAUSED,
    ModelSession,
    fold,
)
from handshake_cli.session.status import no_intact_record
from handshake_cli.session.thread import Thread, fold_thread
from handshake_cli.storage.contract import Durability, JournalAppender, Lease, SessionStore
from handshake_cli.storage.journal.codec import DEFAULT_SEGMENT_BYTES, Record
from handshake_cli.storage.journal.scan import Start

ENDING_RECORD: dict[str, str] = {
    COMPLETED: "session.completed",
    FAILED: "session.failed",
    CANCELLED: "session.cancelled",
}


class WriteObserver(Protocol):
    """What a front end may show of the writes (the loop's Observer is one)."""

    def checkpoint(self, ref: CheckpointRef, reason: str) -> None: ...
    def state(self, before: str, after: str, reason: str) -> None: ...


class _Unobserved:
    def checkpoint(self, ref: CheckpointRef, reason: str) -> None:
        pass

    def state(self, before: str, after: str, reason: str) -> None:
        pass


class Standing(Protocol):
    """Where a session stands, as a caller has already read and verified it (recovery's view)."""

    @property
    def record(self) -> ModelSession: ...
    @property
    def thread(self) -> Thread: ...
    @property
    def newest_checkpoint(self) -> CheckpointRef | None: ...
    @property
    def start(self) -> Start | None: ...


def session_masker(job: Job | None, environ: Mapping[str, str] | None = None) -> SecretMasker:
    """The masker for everything written for a job: its `secret_env` and its provider's key."""
    return SecretMasker.from_environment(job.masked_variables if job else (), environ)


class SessionWriter:
    """Appends to one session and folds every record into `record` and `thread`."""

    def __init__(
        self,
        store: SessionStore,
        lease: Lease,
        journal: JournalAppender,
        standing: Standing,
        *,
        masker: SecretMasker,
        policy: CheckpointPolicy,
        observer: WriteObserver,
    ) -> None:
        self.store = store
        self.lease = lease
        self.session_id = lease.session_id
        self.record = standing.record
        self.thread = standing.thread
        self.masker = masker
        self.observer = observer
        self.reason = ""  # why the session is in its state: the reason of the last transition
        self._journal = journal
        self._policy = policy
        self._checkpoints = CheckpointWriter(
            lease.session_id,
            journal,
            count=standing.record.checkpoint_count,
            parent=standing.newest_checkpoint,
        )

    @property
    def last_seq(self) -> int:
        return self._journal.last_seq

    @property
    def checkpoint_bytes(self) -> int:
        """Bytes of checkpoint bodies this writer wrote."""
        return self._checkpoints.bytes_written

    def append(self, type_: str, data: dict[str, Any], *, sync: bool) -> Record:
        self._journal.sync_artifacts()  # rule 2: this record may name artifacts stored since the last sync
        durability = Durability.NOW if sync else Durability.NEXT_SYNC
        record = self._journal.append(type_, data, durability=durability)
        self.record.apply(record)
        self.thread.apply(record)
        return record

    def sync(self) -> None:
        self._journal.sync()

    def sync_artifacts(self) -> None:
        self._journal.sync_artifacts()

    def store_large_output(self, data: bytes) -> str:
        """Tool output too large for a record: masked, then packed (durable with the next sync)."""
        masked = self.masker.mask(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        return self._journal.add_artifact(masked)

    def put_artifact(self, data: bytes) -> str:
        """Keep `data` (already what it should be: a fork's copy) as an artifact, durably, now."""
        return self.lease.put_artifact(data)

    def checkpoint(self, reason: str) -> CheckpointRef:
        ref, record = self._checkpoints.take(reason, self.thread, self.record)
        self.record.apply(record)
        self.observer.checkpoint(ref, reason)
        return ref

    def transition(
        self, target: str, reason: str, *, checkpoint_reason: str | None = None
    ) -> CheckpointRef | None:
        """Move the session to `target`; returns the checkpoint taken with the move, if any."""
        before = self.record.state
        self.append("session.state_change", {"from": before, "to": target, "reason": reason}, sync=False)
        self.reason = reason
        self.observer.state(before, target, reason)
        ref = None
        # Always before PAUSED or BLOCKED, and at every transition unless the job says otherwise.
        if self._policy.on_state_change or target in (PAUSED, BLOCKED):
            ref = self.checkpoint(checkpoint_reason or f"state change to {target}")
        else:
            self.sync()
        self.write_head()
        return ref

    def end(self, state: str, reason: str) -> None:
        """COMPLETED, FAILED or CANCELLED, with its ending record durable."""
        self.transition(state, reason)
        self.append(ENDING_RECORD[state], {"reason": reason, "turns": self.thread.turn}, sync=True)
        faults.crash_point("after_ending")
        self.write_head()

    def block(self, reason: str, detail: str, *, in_doubt: Sequence[Mapping[str, Any]] | None = None) -> None:
        """BLOCKED, with a checkpoint and the reason on record, durably."""
        self.transition(BLOCKED, reason)
        self.append(
            "recovery.blocked", {"reason": reason, "detail": detail, "in_doubt": in_doubt or []}, sync=True
        )
        faults.crash_point("after_ending")
        self.write_head()

    def write_head(self) -> None:
        self.lease.write_head(self.record.head())


@contextmanager
def open_writer(
    store: SessionStore,
    session_id: str,
    *,
    job: Job | None = None,
    environ: Mapping[str, str] | None = None,
    observer: WriteObserver | None = None,
    command: str | None = None,
    lease: Lease | None = None,
    standing: Standing | None = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> Iterator[SessionWriter]:
    """A writer for the session, under its lease: taken here (the holder named by `command`),
    or `lease`, already held by a caller that planned under it (recovery) and releases it.

    `job` gives the masker and the checkpoint policy (None: no variables to mask, the
    default policy). The session stands where `standing` says, or as its journal folds."""
    with ExitStack() as stack:
        if lease is None:
            lease = store.acquire(session_id, command=command)
            stack.callback(lease.release)
        start = standing.start if standing else None
        journal = lease.open_journal(start=start, segment_bytes=segment_bytes)
        stack.callback(journal.close)
        yield SessionWriter(
            store,
            lease,
            journal,
            standing or _folded(store, session_id),
            masker=session_masker(job, environ),
            policy=job.checkpoint if job else CheckpointPolicy(),
            observer=observer or _Unobserved(),
        )


class _Folded:
    def __init__(self, records: list[Record], session_id: str) -> None:
        self.record = fold(session_id, records)
        self.thread = fold_thread(records)
        last = next((r for r in reversed(records) if r.type == "checkpoint.created"), None)
        self.newest_checkpoint = CheckpointRef.from_record(last) if last else None
        self.start: Start | None = None


def _folded(store: SessionStore, session_id: str) -> _Folded:
    records = store.scan(session_id).records
    if not records:  # record 1 is written with the session: appending would start a journal anew
        raise no_intact_record(store, session_id)
    return _Folded(records, session_id)
