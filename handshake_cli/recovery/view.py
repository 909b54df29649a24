"""A session as recovery sees it: rebuilt from its newest valid checkpoint plus the journal
after it, with everything recovery relies on verified first.

Cost is proportional to the journal after that checkpoint, not to the whole journal: the
newest checkpoint is found by searching the segments from the end (no head.json needed,
since the runner refreshes it only at transitions), its body is verified by sha256, and the
journal is verified from that record to the end. What lies before the checkpoint is
summarised by it; damage there is for `inspect --verify` to report. When no checkpoint loads, the whole
journal is scanned and the state folded from its start. A bad checkpoint is never loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

from handshake_cli.engine.jobs import Job
from handshake_cli.session.checkpoints import CheckpointInvalid, CheckpointRef, LoadedCheckpoint, load
from handshake_cli.session.state import ModelSession
from handshake_cli.session.status import no_intact_record
from handshake_cli.session.thread import Thread, fold_thread
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.scan import Damage, ScanResult, Start


class SkippedCheckpoint(TypedDict):
    """A checkpoint recovery passed over because it failed validation (`skipped_checkpoints`)."""

    checkpoint_id: str
    seq: int
    reason: str


@dataclass
class SessionView:
    store: SessionStore
    session_id: str
    records: list[Record]  # the verified records recovery read (from the base checkpoint on)
    record: ModelSession
    thread: Thread
    base: CheckpointRef | None  # the checkpoint the state was rebuilt from
    newest_checkpoint: CheckpointRef | None  # parent for the next checkpoint
    skipped: list[SkippedCheckpoint] = field(default_factory=list)  # checkpoints that failed validation
    damage: Damage | None = None
    last_seq: int = 0
    scanned_from: int = 1  # the first seq recovery read
    # session.toml and its [job], read (and the job checked against record 1) on first use
    _config: dict[str, Any] | None = field(default=None, repr=False)
    _job: Job | None = field(default=None, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        """session.toml, checked (`SessionStore.read_config`: a [job] edited since record 1 is JobChanged)."""
        if self._config is None:
            self._config = self.store.read_config(self.session_id)
        return self._config

    @property
    def job(self) -> Job:
        """The stored job, read back as strictly as a job file (JobConfigError if it does not)."""
        if self._job is None:
            self._job = Job.from_config(
                self.config.get("job") or {}, origin=job_origin(self.store, self.session_id)
            )
        return self._job

    @property
    def start(self) -> Start | None:
        """The first record recovery verified, as a starting point for later scans."""
        if not self.records:
            return None
        first = self.records[0]
        return Start(first.segment, first.offset, first.seq, first.prev)

    @property
    def torn_tail(self) -> Damage | None:
        return self.damage if self.damage and self.damage.repairable else None

    @property
    def corruption(self) -> Damage | None:
        return self.damage if self.damage and not self.damage.repairable else None


def job_origin(store: SessionStore, session_id: str) -> str:
    """Where a session's stored job is, for a message about it: its session.toml."""
    return f"{store.location(session_id)}/session.toml [job]"


def rebuild(
    store: SessionStore,
    session_id: str,
    *,
    at: int | None = None,
    read_job: bool = True,
    lazy_thread: bool = False,
    config: dict[str, Any] | None = None,
) -> SessionView:
    """The session now, or as it stood at record `at` (nearest checkpoint at or before it,
    plus the records up to it).

    session.toml and its job are read first (a [job] edited since record 1 is refused),
    unless `read_job` is False: then they are read when the view's `config` or `job` is
    first used (by a plan, only for calls in doubt). With `lazy_thread`, the checkpoint's
    messages, ledger and abandoned calls are read when the thread's are first used
    (`checkpoints.load(lazy=True)`): planning a long session's recovery then costs its
    newest checkpoint's own record and the journal after it, as `recover --dry-run` does. A
    resume needs the whole thread and reads it before it decides anything (`lazy_thread`
    False), so a checkpoint whose delta chain is broken is passed over there, as always.
    `config` is session.toml as the caller already read it (`read_config`), not read again."""
    view: SessionView
    job: Job | None = None
    lazy = lazy_thread
    if read_job:
        config = store.read_config(session_id) if config is None else config
        job = Job.from_config(config.get("job") or {}, origin=job_origin(store, session_id))
    skipped: list[SkippedCheckpoint] = []
    base = _newest_loadable(store, session_id, at, skipped, lazy)
    if base is not None:  # the search's segment is released by now: one in memory at a time
        candidate, loaded = base
        result = _upto(_scan_from(store, session_id, candidate), at)
        view = _assemble(
            store, session_id, result.records, loaded, skipped, result.damage, result.last_seq, lazy
        )
    else:
        result = _upto(store.scan(session_id), at)
        if not result.records:  # record 1 is written with the session: without it, nothing says what ran
            where = (
                f" (damage at {result.damage.segment} offset {result.damage.offset})" if result.damage else ""
            )
            raise no_intact_record(store, session_id, where)
        view = _assemble(
            store, session_id, result.records, None, skipped, result.damage, result.last_seq, lazy
        )
    view._config, view._job = config, job
    return view


def _newest_loadable(
    store: SessionStore, session_id: str, at: int | None, skipped: list[SkippedCheckpoint], lazy: bool
) -> tuple[Record, LoadedCheckpoint] | None:
    """The newest checkpoint candidate whose body loads; those that fail go to `skipped`."""
    for candidate, content in store.find_backwards(session_id, "checkpoint.created", at_most=at):
        ref = CheckpointRef.from_record(candidate)
        try:
            return candidate, load(store, ref, session_id, lazy=lazy, record=candidate, content=content)
        except CheckpointInvalid as exc:
            skipped.append({"checkpoint_id": ref.checkpoint_id, "seq": ref.seq, "reason": exc.message})
    return None


def _upto(result: ScanResult, at: int | None) -> ScanResult:
    """The records up to `at` only (for `inspect --at`); damage after it does not matter."""
    if at is None or (result.last_seq <= at and result.damage is None):
        return result
    records = [r for r in result.records if r.seq <= at]
    damage = result.damage if records and records[-1].seq < at else None
    last = records[-1] if records else None
    return ScanResult(
        records=records,
        count=len(records),
        last_seq=last.seq if last else 0,
        last_sum=last.sum if last else "",
        damage=damage,
    )


def checkpoint_candidates(
    store: SessionStore, session_id: str, *, at_most: int | None = None
) -> Iterator[Record]:
    """Intact `checkpoint.created` records that sit where their seq says, newest first, found
    from the journal's end (`SessionStore.find_backwards`): one that does not link to the
    record before it is skipped, and the scan from an older checkpoint then meets it as
    damage, as `inspect --verify` does."""
    for record, _ in store.find_backwards(session_id, "checkpoint.created", at_most=at_most):
        yield record


def _scan_from(store: SessionStore, session_id: str, record: Record) -> ScanResult:
    """Verify from `record` (already checked: its checksum, and for a checkpoint its body) to
    the end of the journal: every later record's checksum, seq and link to the one before."""
    return store.scan(session_id, start=Start(record.segment, record.offset, record.seq, record.prev))


def _assemble(
    store: SessionStore,
    session_id: str,
    records: list[Record],
    hinted: LoadedCheckpoint | None,
    skipped: list[SkippedCheckpoint],
    damage: Damage | None,
    last_seq: int,
    lazy: bool,
) -> SessionView:
    """Pick the newest checkpoint that loads among those read, and fold what follows it."""
    newest: CheckpointRef | None = None
    base: LoadedCheckpoint | None = None
    for item in reversed(records):
        if item.type != "checkpoint.created":
            continue
        ref = CheckpointRef.from_record(item)
        if hinted is not None and ref.seq == hinted.ref.seq:
            base = hinted
        else:
            try:
                base = load(store, ref, session_id, lazy=lazy, record=item)
            except CheckpointInvalid as exc:
                if all(item["seq"] != ref.seq for item in skipped):
                    skipped.append(
                        {"checkpoint_id": ref.checkpoint_id, "seq": ref.seq, "reason": exc.message}
                    )
                continue
        newest = ref
        break
    if base is None and hinted is not None:
        base, newest = hinted, hinted.ref
    if base is None:
        state = ModelSession(session_id)
        thread = fold_thread(records)
        for item in records:
            state.apply(item)
    else:
        covers = base.ref.covers_seq
        after = [r for r in records if r.seq > covers]
        state = ModelSession(**{**base.body["session"], "session_id": session_id})
        thread = fold_thread(after, base=base.thread)
        for item in after:
            state.apply(item)
    view = SessionView(
        store=store,
        session_id=session_id,
        records=records,
        record=state,
        thread=thread,
        base=base.ref if base else None,
        newest_checkpoint=newest,
        skipped=skipped,
        damage=damage,
        last_seq=last_seq,
        scanned_from=records[0].seq if records else 1,
    )
    return view


def in_flight_text(view: SessionView) -> str | None:
    """What the model call cut short had streamed (masked), when one was in flight: read from
    its `model.request` record on, even when that lies before the checkpoint."""
    flight = view.thread.in_flight
    if not flight:
        return None
    turn, since = flight.get("turn"), int(flight.get("request_seq", 0))
    records = view.records
    if since < view.scanned_from:
        request = view.store.record_at(
            view.session_id, str(flight.get("segment")), int(flight.get("offset", -1))
        )
        if request is None or request.seq != since:
            records = view.store.scan(view.session_id).records
        else:
            records = _scan_from(view.store, view.session_id, request).records
    parts = [
        str(r.data.get("text", ""))
        for r in records
        if r.seq > since and r.type == "model.chunk" and r.data.get("turn") == turn
    ]
    return "".join(parts)
