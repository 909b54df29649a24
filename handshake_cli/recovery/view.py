"""A session as recovery sees it: rebuilt from its newest valid checkpoint plus the journal
after it, with everything recovery relies on verified first.

Cost is proportional to the journal after that checkpoint, not to the whole journal:
head.json names the newest checkpoint it knows (a hint, checked like everything else), the
checkpoint's record is read with one pread and its body verified by sha256, and only the
records from it onward are scanned. What lies before it is summarised by the checkpoint;
damage there is for `inspect --verify` to report. Without a usable hint, or when the hinted
checkpoint fails validation, the whole journal is scanned and every checkpoint tried, newest
first, down to the journal's start. A bad checkpoint is never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handshake_cli.checkpoints import CheckpointInvalid, CheckpointRef, LoadedCheckpoint, load
from handshake_cli.jobs import Job
from handshake_cli.journal import Damage, Record, Start, read_record_at, scan
from handshake_cli.model import ModelSession, read_head
from handshake_cli.store import SessionDir
from handshake_cli.thread import Thread, fold_thread


@dataclass
class SessionView:
    session: SessionDir
    config: dict[str, Any]
    job: Job
    records: list[Record]  # the verified records recovery read (from the base checkpoint on)
    record: ModelSession
    thread: Thread
    base: CheckpointRef | None  # the checkpoint the state was rebuilt from
    newest_checkpoint: CheckpointRef | None  # parent for the next checkpoint
    skipped: list[dict[str, Any]] = field(default_factory=list)  # checkpoints that failed validation
    damage: Damage | None = None
    last_seq: int = 0
    scanned_from: int = 1  # the first seq recovery read

    @property
    def torn_tail(self) -> Damage | None:
        return self.damage if self.damage and self.damage.repairable else None

    @property
    def corruption(self) -> Damage | None:
        return self.damage if self.damage and not self.damage.repairable else None


def rebuild(session: SessionDir) -> SessionView:
    config = session.read_config()
    job = Job.from_config(config.get("job") or {}, origin=f"{session.session_toml} [job]")
    skipped: list[dict[str, Any]] = []
    hinted = _hinted_checkpoint(session, skipped)
    if hinted is not None:
        loaded, hint_record = hinted
        result = scan(
            session.journal,
            session.session_id,
            start=Start(hint_record.segment, hint_record.offset, hint_record.seq, hint_record.prev),
        )
        if not result.corruption:
            return _assemble(
                session, config, job, result.records, loaded, skipped, result.damage, result.last_seq
            )
    result = scan(session.journal, session.session_id)
    return _assemble(session, config, job, result.records, None, skipped, result.damage, result.last_seq)


def _hinted_checkpoint(
    session: SessionDir, skipped: list[dict[str, Any]]
) -> tuple[LoadedCheckpoint, Record] | None:
    head = read_head(session.path)
    where = (head or {}).get("checkpoint_location")
    if not isinstance(where, dict):
        return None
    record = read_record_at(session.journal, str(where.get("segment")), int(where.get("offset", -1)))
    if record is None or record.seq != where.get("seq") or record.type != "checkpoint.created":
        return None
    ref = CheckpointRef.from_record(record)
    try:
        return load(session.journal, ref, session.session_id), record
    except CheckpointInvalid as exc:
        skipped.append({"checkpoint_id": ref.checkpoint_id, "seq": ref.seq, "reason": exc.message})
        return None


def _assemble(
    session: SessionDir,
    config: dict[str, Any],
    job: Job,
    records: list[Record],
    hinted: LoadedCheckpoint | None,
    skipped: list[dict[str, Any]],
    damage: Damage | None,
    last_seq: int,
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
                base = load(session.journal, ref, session.session_id)
            except CheckpointInvalid as exc:
                skipped.append({"checkpoint_id": ref.checkpoint_id, "seq": ref.seq, "reason": exc.message})
                continue
        newest = ref
        break
    if base is None and hinted is not None:
        base, newest = hinted, hinted.ref
    if base is None:
        state = ModelSession(session.session_id)
        thread = fold_thread(records)
        for item in records:
            state.apply(item)
    else:
        covers = base.ref.covers_seq
        after = [r for r in records if r.seq > covers]
        state = ModelSession(**{**base.body["session"], "session_id": session.session_id})
        thread = fold_thread(after, base=base.thread)
        for item in after:
            state.apply(item)
    return SessionView(
        session=session,
        config=config,
        job=job,
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


def in_flight_text(view: SessionView) -> str | None:
    """What the model call cut short had streamed (masked), when one was in flight."""
    flight = view.thread.in_flight
    if not flight:
        return None
    turn, since = flight.get("turn"), int(flight.get("request_seq", 0))
    records = view.records
    if since < view.scanned_from:  # the call began before the checkpoint recovery started from
        records = scan(view.session.journal, view.session.session_id).records
    parts = [
        str(r.data.get("text", ""))
        for r in records
        if r.seq > since and r.type == "model.chunk" and r.data.get("turn") == turn
    ]
    return "".join(parts)
