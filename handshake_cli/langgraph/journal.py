"""A LangGraph thread's session as the saver holds it: its lease, its appender, its index.

`OpenThread` writes through the session-store contract only, so a thread lives on any store
(a directory, a PostgreSQL database): each record is appended with `Durability.NOW`, large
values are artifacts added through the appender (durable with the record that names them),
the index snapshot is an artifact too. `FilesystemThread` is the filesystem's fast path, and
this module is the one place that knows it: values go to the session's pack at a location the
record keeps (read back without a search), and appends are a group commit (one fdatasync of
the journal for every record written meanwhile, made outside the saver's lock).
`open_thread` and `artifact_source` pick between them by the store's type.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any

from handshake_cli.errors import DurabilityError, HandshakeError, UsageError
from handshake_cli.langgraph.values import ArtifactSink, ArtifactSource
from handshake_cli.session.langgraph_thread import ThreadIndex
from handshake_cli.session.state import COMPLETED, ModelSession
from handshake_cli.storage import durable
from handshake_cli.storage.artifacts import Location
from handshake_cli.storage.contract import Durability, JournalAppender, Lease, SessionStore
from handshake_cli.storage.filesystem import FilesystemAppender, FilesystemLease, FilesystemStore
from handshake_cli.storage.journal.codec import DEFAULT_SEGMENT_BYTES, PREALLOCATE_BYTES, Record, utc_now
from handshake_cli.storage.journal.scan import ScanResult, Start, list_segments
from handshake_cli.storage.journal.writer import JournalWriter

# Records that carry a thread on, which a finished thread refuses (pruning it is fine).
_GOING_ON = frozenset({"langgraph.checkpoint", "langgraph.writes", "tool.intent"})


class StoreArtifacts:
    """A session's artifacts read through the store (no location: a store may have none)."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id

    def get(self, ident: str, location: Any = None) -> bytes:
        return self.store.get_artifact(self.session_id, ident)


class AppenderArtifacts:
    """Values added through the appender: durable with the next record appended `NOW`."""

    def __init__(self, appender: JournalAppender) -> None:
        self.appender = appender

    def add(self, data: bytes) -> tuple[str, Any]:
        return self.appender.add_artifact(data), None


class OpenThread:
    """A thread this saver holds, written through the contract.

    `write` appends a record (under the saver's lock) and `settle` returns once it is
    durable: here every record is durable when `write` returns (`Durability.NOW`), so
    `settle` has nothing to wait for. `append` is both, for callers that hold the lock."""

    def __init__(
        self,
        store: SessionStore,
        lease: Lease,
        appender: JournalAppender,
        index: ThreadIndex,
        session: ModelSession,
    ) -> None:
        self.store = store
        self.lease = lease
        self.appender = appender
        self.index = index
        self.session = session  # the session record, for the head
        self.indexed_seq = 0  # the seq of the newest index snapshot
        self.snapshot_at: dict[str, Any] | None = None  # where its record is, for the head
        self.artifacts: ArtifactSource = artifact_source(store, lease.session_id)
        self.sink: ArtifactSink = AppenderArtifacts(appender)
        self.appended: threading.Condition | None = None  # notified when durable_seq moves on
        self.durable_seq = appender.last_seq  # every record up to it is durable
        self.broken: str | None = None  # a failed sync: no record is acknowledged after it
        self._writing = threading.Lock()  # the appender's state (innermost lock)
        self._syncing = threading.Lock()  # one group sync at a time

    @property
    def session_id(self) -> str:
        return self.lease.session_id

    def write(self, type_: str, data: dict[str, Any]) -> Record:
        """Write one record (the artifacts it names durable first, DESIGN section 2) and fold
        it into the index; durable once `settle(record.seq)` returns. The caller holds the
        saver's lock."""
        if self.session.state == COMPLETED and type_ in _GOING_ON:
            raise UsageError(
                f"LangGraph thread {self.index.thread_id!r} was finished (finish_thread): it takes no "
                "more records; copy_thread it to a new thread to go on"
            )
        with self._writing:
            if self.broken is not None:
                raise DurabilityError(f"the thread's journal is unusable after a failed sync: {self.broken}")
            try:
                record = self._put(type_, data)
            except DurabilityError as exc:
                self.broken = exc.message  # never retried and acknowledged (DESIGN rule 4)
                raise
        self.index.apply(record)
        self.session.apply(record)
        if self.durable_seq >= record.seq:
            self._notify()  # durable already (`Durability.NOW`): whoever waits for it wakes
        return record

    def _notify(self) -> None:
        if self.appended is not None:
            with self.appended:
                self.appended.notify_all()

    def _put(self, type_: str, data: dict[str, Any]) -> Record:
        """Append under `_writing`: durable now, with every artifact added before it."""
        record = self.appender.append(type_, data, durability=Durability.NOW)
        self.durable_seq = record.seq
        return record

    def append(self, type_: str, data: dict[str, Any]) -> Record:
        """Append one record durably and fold it into the index."""
        record = self.write(type_, data)
        self.settle(record.seq)
        return record

    def settle(self, seq: int) -> None:
        """Return once record `seq` (and every one before it) is durable."""
        moved = False
        with self._syncing:
            if self.durable_seq < seq:
                moved = self._sync()
        if moved:
            self._notify()

    def _sync(self) -> bool:
        """Make what was written durable (under `_syncing`); whether `durable_seq` moved."""
        with self._writing:
            if self.broken is not None:
                raise DurabilityError(f"the thread's journal is unusable: {self.broken}")
            try:
                self.appender.sync()
            except DurabilityError as exc:
                self.broken = exc.message
                raise
            self.durable_seq = self.appender.last_seq
        return True

    def close(self) -> None:
        """The index kept as a snapshot when the thread grew since the last one, the head
        brought up to date and pointing at it (a cache: a crash leaves it behind, which
        `inspect` reports and the next saver or `recover` mends), then the journal and the
        lease. Never raises: what a snapshot would save is only time."""
        try:
            self.settle(self.appender.last_seq)
            snapshot = (
                self._write_snapshot() if self.appender.last_seq > self.indexed_seq else self.snapshot_at
            )
            head = self.session.head()
            if snapshot is not None:
                head["langgraph_index"] = snapshot
            self.lease.write_head(head)
        except HandshakeError:
            pass
        finally:
            with self._writing:
                self.appender.close()
            self.lease.release()

    def _write_snapshot(self) -> dict[str, Any]:
        snapshot = {**self.index.snapshot(), "session": dataclasses.asdict(self.session)}
        ident, location = self.sink.add(json.dumps(snapshot, separators=(",", ":")).encode())
        data: dict[str, Any] = {"thread_id": self.index.thread_id, "artifact_id": ident}
        if location is not None:
            data.update(pack=location.pack, offset=location.offset)
        with self._writing:
            record = self.appender.append(
                "langgraph.index", {**data, "covers_seq": self.appender.last_seq}, durability=Durability.NOW
            )
            self.durable_seq = record.seq
        self.session.apply(record)
        self.indexed_seq = record.seq
        self.snapshot_at = {"seq": record.seq, "segment": record.segment, "offset": record.offset}
        return self.snapshot_at


class FilesystemThread(OpenThread):
    """The filesystem's fast path: values in the pack (their location in the record), a
    group commit and a preallocated journal tail. `write` puts a record in the journal
    (artifacts it names synced first); `settle` makes one fdatasync outside the saver's lock,
    so the records other threads write meanwhile (LangGraph calls `put_writes` and `put` from
    its background executor, several at once) ride on the same sync. The records are written
    over the segment's preallocated tail (JournalWriter.preallocate), so most of those syncs
    do not grow the file."""

    appender: FilesystemAppender
    lease: FilesystemLease

    def __init__(
        self,
        store: SessionStore,
        lease: FilesystemLease,
        appender: FilesystemAppender,
        index: ThreadIndex,
        session: ModelSession,
    ) -> None:
        super().__init__(store, lease, appender, index, session)
        self.sink = appender.pack
        self.journal_dir = lease.session.journal  # for a failed sync's message
        appender.journal.preallocate(PREALLOCATE_BYTES)

    def _put(self, type_: str, data: dict[str, Any]) -> Record:
        self.appender.pack.sync()
        return self.appender.append(type_, data, durability=Durability.NEXT_SYNC)

    def _sync(self) -> bool:
        """One fdatasync of the journal, outside `_writing`: what others write meanwhile waits
        for the next one."""
        with self._writing:
            if self.broken is not None:
                raise DurabilityError(f"the thread's journal is unusable: {self.broken}")
            handle = self.appender.journal.sync_handle()
        if handle is None:  # closed: close() settles first, so this is a bug
            raise DurabilityError("a record was written to a journal closed before its sync")
        fd, written = handle
        try:
            durable.fsync_fd(fd, data_only=True, path=self.journal_dir)
        except DurabilityError as exc:
            self.broken = exc.message  # never retried and acknowledged (DESIGN rule 4)
            raise
        finally:
            os.close(fd)
        self.durable_seq = max(self.durable_seq, written)
        return True


def artifact_source(store: SessionStore, session_id: str) -> ArtifactSource:
    """Where a session's values are read: its pack (by location) on the filesystem, else the store."""
    if isinstance(store, FilesystemStore):
        return store.session(session_id).artifact_store()
    return StoreArtifacts(store, session_id)


def open_thread(
    store: SessionStore,
    lease: Lease,
    scan: ScanResult,
    start: Start | None,
    index: ThreadIndex,
    session: ModelSession,
    *,
    reopen: bool,
) -> OpenThread:
    """The thread, its journal opened for appending after the last record `scan` verified
    (from `start`); `reopen` when a repair changed the journal since, so it is read again."""
    if isinstance(lease, FilesystemLease):
        fs_appender = lease.open_journal() if reopen else _after_scan(lease, scan)
        return FilesystemThread(store, lease, fs_appender, index, session)
    return OpenThread(store, lease, lease.open_journal(start=None if reopen else start), index, session)


def _after_scan(lease: FilesystemLease, scan: ScanResult) -> FilesystemAppender:
    """An appender after the last record the scan verified (no second read of the journal)."""
    segments = list_segments(lease.session.journal)
    if not segments or segments[-1] not in scan.valid_ends:
        return lease.open_journal()
    journal = JournalWriter(
        lease.session.journal,
        lease.session_id,
        last_seq=scan.last_seq,
        last_sum=scan.last_sum,
        segment=segments[-1],
        segment_size=scan.valid_ends[segments[-1]],
        segment_bytes=DEFAULT_SEGMENT_BYTES,
        clock=utc_now,
    )
    try:
        return FilesystemAppender(journal, lease.session.artifact_store().pack_writer())
    except BaseException:
        journal.close()
        raise


def snapshot_location(data: dict[str, Any]) -> Location | None:
    """Where a `langgraph.index` record says its snapshot is in the pack, when it says."""
    return Location(str(data["pack"]), int(data["offset"])) if "pack" in data else None
