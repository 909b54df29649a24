"""`HandshakeSaver`: a LangGraph checkpointer whose storage is handshake sessions.

One LangGraph thread is one session under the root (`threads.session_id_for`). Its
checkpoints and pending writes are `langgraph.*` journal records, checksummed and chained
like every record; values larger than `values.INLINE_MAX_BYTES` are artifacts in the
session's pack, synced before the record that names them. The saver takes a thread's lock
the first time it touches the thread and keeps it until `close()`: it is that session's one
writer (a second process on the same thread gets `SessionLocked`).

Durability (DESIGN section 2): `put` and `put_writes` return only once their record is on
disk (an fdatasync of the pack when it grew, before the record is written; then of the
journal), so a task's writes are durable before LangGraph moves on, and a checkpoint before
its config is handed back. The journal's sync is a group commit (`OpenThread.settle`): the
calls LangGraph makes at once from its executor's threads share one fdatasync.

A journal a crash left with a torn tail is repaired when the saver opens the thread (the
torn bytes kept in `quarantine/`, a `langgraph.repaired` record saying so); corruption is
never cut and opening the thread fails with `IntegrityError` (exit 5 on the command line).

The async methods run the sync ones in a worker thread; one lock serialises them.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import os
import random
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.base import writes_sort_key as _writes_sort_key
from langgraph.checkpoint.serde.base import SerializerProtocol

from handshake_cli.errors import DurabilityError, HandshakeError, NotFound, UsageError
from handshake_cli.langgraph.values import decode_value, encode_value
from handshake_cli.paths import Paths
from handshake_cli.session.langgraph_thread import (
    KIND,
    RECORD_TYPES,
    SESSION_PREFIX,
    StoredCheckpoint,
    ThreadIndex,
    session_id_for,
)
from handshake_cli.session.state import ACTIVE, COMPLETED, ModelSession, initial_head
from handshake_cli.storage import durable
from handshake_cli.storage.artifacts import Location
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.filesystem import FilesystemAppender, FilesystemLease, FilesystemStore
from handshake_cli.storage.journal.codec import DEFAULT_SEGMENT_BYTES, Record, utc_now
from handshake_cli.storage.journal.scan import ScanResult, Start, list_segments
from handshake_cli.storage.journal.writer import JournalWriter

LOCK_COMMAND = "langgraph HandshakeSaver"
# Records that carry a thread on, which a finished thread refuses (pruning it is fine).
_GOING_ON = frozenset({"langgraph.checkpoint", "langgraph.writes", "tool.intent"})


class OpenThread:
    """A thread this saver holds: its lease, its appender, and its index.

    Appends are a group commit: `write` puts a record in the journal (under the saver's
    lock, artifacts it names synced first) and `settle` returns once it is durable, with one
    fdatasync made outside the saver's lock, so that the records other threads write
    meanwhile (LangGraph calls `put_writes` and `put` from its background executor, several
    at once) ride on the same sync. `append` is both, for callers that hold the lock."""

    def __init__(
        self, lease: FilesystemLease, appender: FilesystemAppender, index: ThreadIndex, session: ModelSession
    ) -> None:
        self.lease = lease
        self.appender = appender
        self.index = index
        self.session = session  # the session record, for head.json
        self.indexed_seq = 0  # the seq of the newest index snapshot
        self.snapshot_at: dict[str, Any] | None = None  # where its record is, for head.json
        self.artifacts = lease.session.artifact_store()
        self.appended: threading.Condition | None = None  # notified when durable_seq moves on
        self.durable_seq = appender.last_seq  # every record up to it is on disk
        self.broken: str | None = None  # a failed sync: no record is acknowledged after it
        self._writing = threading.Lock()  # the journal writer's state (innermost lock)
        self._syncing = threading.Lock()  # one group sync at a time

    @property
    def session_id(self) -> str:
        return self.lease.session_id

    def write(self, type_: str, data: dict[str, Any]) -> Record:
        """Write one record (the artifacts it names synced first, DESIGN section 2) and fold
        it into the index; durable only once `settle(record.seq)` returns. The caller holds
        the saver's lock."""
        if self.session.state == COMPLETED and type_ in _GOING_ON:
            raise UsageError(
                f"LangGraph thread {self.index.thread_id!r} was finished (finish_thread): it takes no "
                "more records; copy_thread it to a new thread to go on"
            )
        with self._writing:
            if self.broken is not None:
                raise DurabilityError(f"the thread's journal is unusable after a failed sync: {self.broken}")
            self.appender.pack.sync()
            record = self.appender.append(type_, data, durability=Durability.NEXT_SYNC)
        self.index.apply(record)
        self.session.apply(record)
        return record

    def append(self, type_: str, data: dict[str, Any]) -> Record:
        """Append one record durably and fold it into the index."""
        record = self.write(type_, data)
        self.settle(record.seq)
        return record

    def settle(self, seq: int) -> None:
        """Return once record `seq` (and every one before it) is on disk: one fdatasync of the
        journal for all the records written when it starts, whoever wrote them."""
        moved = False
        with self._syncing:
            if self.durable_seq < seq:
                with self._writing:
                    if self.broken is not None:
                        raise DurabilityError(f"the thread's journal is unusable: {self.broken}")
                    handle = self.appender.journal.sync_handle()
                if handle is None:  # closed: close() settles first, so this is a bug
                    raise DurabilityError(f"record {seq} was written to a journal closed before its sync")
                fd, written = handle
                try:
                    durable.fsync_fd(fd, data_only=True, path=self.lease.session.journal)
                except DurabilityError as exc:
                    self.broken = exc.message  # never retried and acknowledged (DESIGN rule 4)
                    raise
                finally:
                    os.close(fd)
                self.durable_seq = max(self.durable_seq, written)
                moved = True
        if moved and self.appended is not None:
            with self.appended:
                self.appended.notify_all()

    def close(self) -> None:
        """The index kept as a snapshot when the thread grew since the last one, head.json
        brought up to date and pointing at it (a cache: a crash leaves it behind, which
        `inspect` reports and the next saver or `recover` mends), then the journal and the
        lock. Never raises: what a snapshot would save is only time."""
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
        ident, location = self.appender.pack.add(json.dumps(snapshot, separators=(",", ":")).encode())
        with self._writing:
            record = self.appender.append(
                "langgraph.index",
                {
                    "thread_id": self.index.thread_id,
                    "artifact_id": ident,
                    "pack": location.pack,
                    "offset": location.offset,
                    "covers_seq": self.appender.last_seq,
                },
                durability=Durability.NOW,
            )
        self.session.apply(record)
        self.indexed_seq = record.seq
        self.snapshot_at = {"seq": record.seq, "segment": record.segment, "offset": record.offset}
        return self.snapshot_at


class HandshakeSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpoints kept as handshake sessions under `root`.

    `root` is handshake's root (`--root`, else `$HANDSHAKE_HOME`, else the platform's data
    directory). Use it as a context manager, or call `close()`, to release the threads'
    locks; a process that ends releases them too."""

    def __init__(self, root: str | os.PathLike[str] | Paths | None = None, *, serde: Any = None) -> None:
        super().__init__(serde=cast(SerializerProtocol | None, serde))
        if isinstance(root, Paths):
            self.paths = root
        else:
            self.paths = Paths.resolve(os.fspath(root) if root is not None else None)
        self.store = FilesystemStore(self.paths)
        self._open: dict[str, OpenThread] = {}
        self._lock = threading.RLock()
        self._appended = threading.Condition(self._lock)  # notified after every append

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for thread in self._open.values():
                thread.close()
            self._open.clear()

    def __enter__(self) -> HandshakeSaver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> HandshakeSaver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def gate_lock(self) -> threading.RLock:
        """The lock every change to this saver's threads holds (the tool gate's too)."""
        return self._lock

    # -- threads ----------------------------------------------------------------------------

    def session_id(self, thread_id: str) -> str:
        """The session a thread lives in."""
        return session_id_for(thread_id)

    def thread(self, thread_id: str, *, create: bool) -> OpenThread | None:
        """The open thread, opened (and made, when `create`) on first use; None when absent."""
        with self._lock:
            found = self._open.get(thread_id)
            if found is not None:
                return found
            session_id = session_id_for(thread_id)
            if not (self.paths.sessions / session_id).is_dir():
                if not create:
                    return None
                self.store.create_session(
                    {"kind": KIND, KIND: {"thread_id": thread_id}},
                    {"kind": KIND, "thread_id": thread_id},
                    head_for=initial_head,
                    session_id=session_id,
                )
            opened = self._open_session(session_id, thread_id)
            opened.appended = self._appended
            self._open[thread_id] = opened
            return opened

    def wait_for_checkpoints(self, thread_id: str, checkpoint_map: dict[str, str], timeout: float) -> bool:
        """Wait until every (namespace, checkpoint id) of `checkpoint_map` is on disk in the
        thread, as LangGraph's `durability="async"` puts a checkpoint in the background while
        the step's tasks already run. Whether they all are, within `timeout` seconds."""

        def durable() -> bool:
            opened = self.thread(thread_id, create=False)
            if opened is None:
                return False
            for ns, checkpoint_id in checkpoint_map.items():
                stored = opened.index.checkpoints.get(ns, {}).get(checkpoint_id)
                if stored is None or stored.seq > opened.durable_seq:  # written is not enough
                    return False
            return True

        with self._appended:
            return self._appended.wait_for(durable, timeout)

    def _open_session(self, session_id: str, thread_id: str) -> OpenThread:
        """Take the thread's lock and build its index: from the snapshot head.json points at
        (its record and artifact checked) plus the records after it, else by folding the whole
        journal. Either way every record read is verified, and the journal is opened for
        appending after the last one without reading it again."""
        lease = self.store.acquire(session_id, command=LOCK_COMMAND)
        try:
            index, session, start = self._snapshot(session_id)
            scan = self.store.scan(session_id, start=start, decode=RECORD_TYPES | {"session.created"})
            if scan.corruption is not None:
                lease.open_journal()  # raises IntegrityError, naming the damage
            repaired = lease.repair_torn_tail(scan.torn_tail) if scan.torn_tail is not None else None
            appender = self._appender(lease, scan) if repaired is None else lease.open_journal()
        except BaseException:
            lease.release()
            raise
        index = index or ThreadIndex(thread_id)
        session = session or ModelSession(session_id)
        for record in scan.records:
            index.apply(record)
            session.apply(record)
        opened = OpenThread(lease, appender, index, session)
        if start is not None:
            opened.indexed_seq = start.seq
            opened.snapshot_at = {"seq": start.seq, "segment": start.segment, "offset": start.offset}
        if repaired is not None:
            opened.append("langgraph.repaired", {"repaired_torn_tail": dict(repaired)})
        return opened

    def _snapshot(self, session_id: str) -> tuple[ThreadIndex | None, ModelSession | None, Start | None]:
        """The newest index snapshot, when head.json names one that checks out."""
        where = (self.store.read_head(session_id) or {}).get("langgraph_index")
        if not isinstance(where, dict):
            return None, None, None
        try:
            record = self.store.record_at(session_id, str(where["segment"]), int(where["offset"]))
            if record is None or record.type != "langgraph.index" or record.seq != where.get("seq"):
                return None, None, None
            data = record.data
            location = Location(str(data["pack"]), int(data["offset"])) if "pack" in data else None
            store = self.store.session(session_id).artifact_store()
            snapshot = json.loads(store.get(str(data["artifact_id"]), location))
            index = ThreadIndex.from_snapshot(snapshot)
            session = ModelSession(**snapshot["session"])
        except (HandshakeError, ValueError, KeyError, TypeError):
            return None, None, None  # a cache that does not check out: fold the journal
        return index, session, Start(record.segment, record.offset, record.seq, record.prev)

    def _appender(self, lease: FilesystemLease, scan: ScanResult) -> FilesystemAppender:
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

    def thread_ids(self) -> list[str]:
        """Every LangGraph thread under the root."""
        found = []
        for session_id in self.store.session_ids():
            if not session_id.startswith(SESSION_PREFIX):
                continue
            try:
                config = self.store.read_config(session_id)
            except NotFound:
                continue
            section = config.get(KIND)
            if config.get("kind") == KIND and isinstance(section, dict):
                found.append(str(section.get("thread_id")))
        return found

    def _forget(self, thread_id: str) -> None:
        opened = self._open.pop(thread_id, None)
        if opened is not None:
            opened.close()

    # -- reading ----------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns", ""))
        with self._lock:
            opened = self.thread(thread_id, create=False)
            if opened is None:
                return None
            entries = opened.index.checkpoints.get(ns, {})
            checkpoint_id = get_checkpoint_id(config) or max(entries, default=None)
            if checkpoint_id is None or checkpoint_id not in entries:
                return None
            return self._tuple(opened, entries[checkpoint_id])

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        with self._lock:
            found = self._list(config, filter, before, limit)
        yield from found

    def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointTuple]:
        configurable = config["configurable"] if config else {}
        thread_ids = [str(configurable["thread_id"])] if "thread_id" in configurable else self.thread_ids()
        wanted_ns = configurable.get("checkpoint_ns")
        wanted_id = configurable.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        found: builtins.list[CheckpointTuple] = []
        for thread_id in thread_ids:
            opened = self.thread(thread_id, create=False)
            if opened is None:
                continue
            for ns, entries in opened.index.checkpoints.items():
                if wanted_ns is not None and ns != wanted_ns:
                    continue
                for checkpoint_id in sorted(entries, reverse=True):
                    if wanted_id and checkpoint_id != wanted_id:
                        continue
                    if before_id and checkpoint_id >= before_id:
                        continue
                    stored = entries[checkpoint_id]
                    if filter:
                        metadata = self._load(opened, stored.metadata)
                        if not all(metadata.get(k) == v for k, v in filter.items()):
                            continue
                    if limit is not None and len(found) >= limit:
                        return found
                    found.append(self._tuple(opened, stored))
        return found

    def _load(self, opened: OpenThread, ref: dict[str, Any]) -> Any:
        return self.serde.loads_typed(decode_value(ref, opened.artifacts))

    def _tuple(self, opened: OpenThread, stored: StoredCheckpoint) -> CheckpointTuple:
        index, ns = opened.index, stored.checkpoint_ns
        checkpoint: Checkpoint = self._load(opened, stored.checkpoint)
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            ref = index.blobs.get((ns, channel, version))
            if ref is not None and ref["type"] != "empty":
                values[channel] = self._load(opened, ref)
        pending = index.writes.get((ns, stored.checkpoint_id), {})
        ordered = sorted(pending, key=lambda k: _writes_sort_key(pending[k][3], *k))

        def config_of(checkpoint_id: str) -> RunnableConfig:
            return {
                "configurable": {
                    "thread_id": index.thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                }
            }

        return CheckpointTuple(
            config=config_of(stored.checkpoint_id),
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self._load(opened, stored.metadata),
            parent_config=config_of(stored.parent_checkpoint_id) if stored.parent_checkpoint_id else None,
            pending_writes=[
                (task_id, channel, self._load(opened, ref))
                for task_id, channel, ref, _ in (pending[key] for key in ordered)
            ],
        )

    # -- writing ----------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns", ""))
        with self._lock:
            opened = self.thread(thread_id, create=True)
            assert opened is not None
            body = dict(checkpoint)
            values = cast(dict[str, Any], body.pop("channel_values", None) or {})
            blobs = [
                {"channel": channel, "version": version, "value": self._ref(opened, values, channel)}
                for channel, version in new_versions.items()
            ]
            full_metadata = get_checkpoint_metadata(config, metadata)
            run_id = full_metadata.get("run_id")
            step = full_metadata.get("step")
            source = full_metadata.get("source")
            record = opened.write(
                "langgraph.checkpoint",
                {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint["id"],
                    "parent_checkpoint_id": configurable.get("checkpoint_id"),
                    "run_id": str(run_id) if run_id is not None else None,
                    "step": step if type(step) is int else None,
                    "source": source if isinstance(source, str) else None,
                    "checkpoint": self.value_ref(opened, body),
                    "metadata": self.value_ref(opened, full_metadata),
                    "blobs": blobs,
                },
            )
        opened.settle(record.seq)  # outside the lock: other threads' records share the sync
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}
        }

    def _ref(self, opened: OpenThread, values: dict[str, Any], channel: str) -> dict[str, Any]:
        """A channel's new value; `empty` when the checkpoint has none for it (as LangGraph's
        own savers store it)."""
        if channel not in values:
            return encode_value(("empty", b""), opened.appender.pack)
        return self.value_ref(opened, values[channel])

    def value_ref(self, opened: OpenThread, value: Any) -> dict[str, Any]:
        return encode_value(self.serde.dumps_typed(value), opened.appender.pack)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = str(configurable["checkpoint_id"])
        with self._lock:
            opened = self.thread(thread_id, create=True)
            assert opened is not None
            stored = opened.index.writes.get((ns, checkpoint_id), {})
            entries = []
            for position, (channel, value) in enumerate(writes):
                idx = WRITES_IDX_MAP.get(channel, position)
                if idx >= 0 and (task_id, idx) in stored:
                    continue  # already durable: a regular write is never replaced
                entries.append({"idx": idx, "channel": channel, "value": self.value_ref(opened, value)})
            # Nothing new: the writes held may still be on their way to disk (another thread's).
            seq = opened.appender.last_seq
            if entries:
                seq = opened.write(
                    "langgraph.writes",
                    {
                        "checkpoint_ns": ns,
                        "checkpoint_id": checkpoint_id,
                        "task_id": task_id,
                        "task_path": task_path,
                        "writes": entries,
                    },
                ).seq
        opened.settle(seq)  # outside the lock: other threads' records share the sync

    def finish_thread(self, thread_id: str, reason: str = "finished by the application") -> None:
        """Mark a thread finished: its session ends COMPLETED, so `handshake gc` treats it as
        any finished session (LangGraph threads never end by themselves). A finished thread
        takes no more checkpoints; `copy_thread` it to go on."""
        with self._lock:
            opened = self.thread(thread_id, create=False)
            if opened is None:
                raise NotFound(f"no LangGraph thread {thread_id!r} under {self.paths.root}")
            if opened.session.state == COMPLETED:
                return
            opened.append(
                "session.state_change", {"from": opened.session.state, "to": ACTIVE, "reason": reason}
            )
            opened.append("session.completed", {"reason": reason})

    def delete_thread(self, thread_id: str) -> None:
        with self._lock:
            self._forget(thread_id)
            try:
                self.store.remove_session(session_id_for(thread_id))
            except NotFound:
                pass

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        wanted = {str(run_id) for run_id in run_ids}
        if not wanted:
            return
        with self._lock:
            for thread_id in self.thread_ids():
                opened = self.thread(thread_id, create=False)
                if opened is None:
                    continue
                doomed = [
                    [ns, checkpoint_id]
                    for ns, entries in opened.index.checkpoints.items()
                    for checkpoint_id, stored in entries.items()
                    if stored.run_id in wanted
                ]
                if doomed:
                    opened.append("langgraph.removed", {"checkpoints": doomed, "reason": "delete_for_runs"})

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        with self._lock:
            source = self.thread(source_thread_id, create=False)
            if source is None or not source.index.checkpoints:
                return
            target = self.thread(target_thread_id, create=True)
            assert target is not None
            for ns, entries in source.index.checkpoints.items():
                for stored in sorted(entries.values(), key=lambda s: s.seq):
                    self._copy_checkpoint(source, target, stored)
                    pending = source.index.writes.get((ns, stored.checkpoint_id), {})
                    by_task: dict[tuple[str, str], list[dict[str, Any]]] = {}
                    for (task_id, idx), (_, channel, ref, task_path) in pending.items():
                        value = self._carry(source, target, ref)
                        by_task.setdefault((task_id, task_path), []).append(
                            {"idx": idx, "channel": channel, "value": value}
                        )
                    for (task_id, task_path), entries_ in by_task.items():
                        target.append(
                            "langgraph.writes",
                            {
                                "checkpoint_ns": ns,
                                "checkpoint_id": stored.checkpoint_id,
                                "task_id": task_id,
                                "task_path": task_path,
                                "writes": entries_,
                            },
                        )

    def _copy_checkpoint(self, source: OpenThread, target: OpenThread, stored: StoredCheckpoint) -> None:
        ns = stored.checkpoint_ns
        checkpoint = self._load(source, stored.checkpoint)
        blobs = []
        for channel, version in checkpoint["channel_versions"].items():
            ref = source.index.blobs.get((ns, channel, version))
            if ref is not None and (ns, channel, version) not in target.index.blobs:
                blobs.append(
                    {"channel": channel, "version": version, "value": self._carry(source, target, ref)}
                )
        target.append(
            "langgraph.checkpoint",
            {
                "thread_id": target.index.thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": stored.checkpoint_id,
                "parent_checkpoint_id": stored.parent_checkpoint_id,
                "run_id": stored.run_id,
                "checkpoint": self._carry(source, target, stored.checkpoint),
                "metadata": self._carry(source, target, stored.metadata),
                "blobs": blobs,
            },
        )

    def _carry(self, source: OpenThread, target: OpenThread, ref: dict[str, Any]) -> dict[str, Any]:
        """A value reference valid in `target`: an artifact's bytes are copied into its pack."""
        if "b64" in ref:
            return ref
        return encode_value(decode_value(ref, source.artifacts), target.appender.pack)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        with self._lock:
            for thread_id in thread_ids:
                if strategy == "delete":
                    self.delete_thread(thread_id)
                    continue
                opened = self.thread(thread_id, create=False)
                if opened is None:
                    continue
                doomed = [
                    [ns, checkpoint_id]
                    for ns, entries in opened.index.checkpoints.items()
                    for checkpoint_id in sorted(entries)[:-1]
                ]
                if doomed:
                    opened.append("langgraph.removed", {"checkpoints": doomed, "reason": "prune"})

    def get_next_version(self, current: str | None, channel: None) -> str:
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- async: the sync methods in a worker thread ------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> builtins.list[CheckpointTuple]:
            with self._lock:
                return self._list(config, filter, before, limit)

        for item in await asyncio.to_thread(collect):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def default_root() -> Path:
    """Where handshake keeps sessions when no root is given."""
    return Paths.resolve(None).root
