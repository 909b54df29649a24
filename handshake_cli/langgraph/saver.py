"""`HandshakeSaver`: a LangGraph checkpointer whose storage is handshake sessions.

One LangGraph thread is one session of the root's store (`threads.session_id_for`): the
root is a directory or a `postgresql://` URL, opened as the command line opens it
(`storage.open.open_store`). Its checkpoints and pending writes are `langgraph.*` journal
records, checksummed and chained like every record; values larger than
`values.INLINE_MAX_BYTES` are content-addressed artifacts, durable before the record that
names them. The saver takes a thread's lease the first time it touches the thread and keeps
it until `close()`: it is that session's one writer (a second process on the same thread
gets `SessionLocked`).

Durability (DESIGN section 2): `put` and `put_writes` return only once their record is
durable, so a task's writes are durable before LangGraph moves on, and a checkpoint before
its config is handed back. How is `langgraph.journal`'s: on a directory a group commit (the
calls LangGraph makes at once from its executor's threads share one fdatasync), on another
store each record committed as it is appended.

A journal a crash left with a torn tail is repaired when the saver opens the thread (the
torn bytes kept in quarantine, a `langgraph.repaired` record saying so); corruption is
never cut and opening the thread fails with `IntegrityError` (exit 5 on the command line).

The async methods run the sync ones in a worker thread; one lock serialises them.
"""

from __future__ import annotations

import asyncio
import builtins
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

from handshake_cli.errors import HandshakeError, NotFound, SessionExists
from handshake_cli.langgraph.journal import OpenThread, artifact_source, open_thread, snapshot_location
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
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.scan import Start
from handshake_cli.storage.open import open_store

LOCK_COMMAND = "langgraph HandshakeSaver"


class HandshakeSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpoints kept as handshake sessions of `root`'s store.

    `root` is handshake's root, as `--root` takes it: a directory or a `postgresql://` URL
    (else `$HANDSHAKE_HOME`, else the platform's data directory). Use it as a context
    manager, or call `close()`, to release the threads' leases; a process that ends releases
    them too."""

    def __init__(self, root: str | os.PathLike[str] | Paths | None = None, *, serde: Any = None) -> None:
        super().__init__(serde=cast(SerializerProtocol | None, serde))
        if isinstance(root, Paths):
            self.paths = root
        else:
            self.paths = Paths.resolve(os.fspath(root) if root is not None else None)
        self.store: SessionStore = open_store(self.paths)
        self._open: dict[str, OpenThread] = {}
        self._lock = threading.RLock()
        self._appended = threading.Condition(self._lock)  # notified after every append

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for thread in self._open.values():
                thread.close()
            self._open.clear()
            close = getattr(self.store, "close", None)
            if close is not None:
                close()  # a database store's own connection (the next read opens another)

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
            if not self._exists(session_id):
                if not create:
                    return None
                try:
                    self.store.create_session(
                        {"kind": KIND, KIND: {"thread_id": thread_id}},
                        {"kind": KIND, "thread_id": thread_id},
                        head_for=initial_head,
                        session_id=session_id,
                    )
                except SessionExists:
                    pass  # made meanwhile by another process: its lease decides below
            opened = self._open_session(session_id, thread_id)
            opened.appended = self._appended
            self._open[thread_id] = opened
            return opened

    def _exists(self, session_id: str) -> bool:
        try:
            self.store.read_config(session_id, check_job=False)
        except NotFound:
            return False
        return True

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
            index = index or ThreadIndex(thread_id)
            session = session or ModelSession(session_id)
            for record in scan.records:
                index.apply(record)
                session.apply(record)
            opened = open_thread(self.store, lease, scan, start, index, session, reopen=repaired is not None)
        except BaseException:
            lease.release()
            raise
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
            artifacts = artifact_source(self.store, session_id)
            snapshot = json.loads(artifacts.get(str(data["artifact_id"]), snapshot_location(data)))
            index = ThreadIndex.from_snapshot(snapshot)
            session = ModelSession(**snapshot["session"])
        except (HandshakeError, ValueError, KeyError, TypeError):
            return None, None, None  # a cache that does not check out: fold the journal
        return index, session, Start(record.segment, record.offset, record.seq, record.prev)

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
            return encode_value(("empty", b""), opened.sink)
        return self.value_ref(opened, values[channel])

    def value_ref(self, opened: OpenThread, value: Any) -> dict[str, Any]:
        return encode_value(self.serde.dumps_typed(value), opened.sink)

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
                raise NotFound(f"no LangGraph thread {thread_id!r} in {self.paths.shown_root}")
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
        """A value reference valid in `target`: an artifact's bytes are copied into its session."""
        if "b64" in ref:
            return ref
        return encode_value(decode_value(ref, source.artifacts), target.sink)

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
