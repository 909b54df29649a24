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

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from handshake_cli.engine.jobs import Job
from handshake_cli.errors import IntegrityError
from handshake_cli.session.checkpoints import (
    CheckpointInvalid,
    CheckpointRef,
    LoadedCheckpoint,
    kept_story,
    load,
)
from handshake_cli.session.state import ModelSession
from handshake_cli.session.story import StoryFold
from handshake_cli.session.story_found import fold_found
from handshake_cli.session.thread import Thread, fold_thread
from handshake_cli.storage import durable
from handshake_cli.storage.journal.codec import MAX_SEGMENT_BYTES, Record, check_content, genesis
from handshake_cli.storage.journal.records import MAX_RECORD_BYTES
from handshake_cli.storage.journal.scan import (
    Damage,
    ScanResult,
    Start,
    list_segments,
    read_last_record,
    read_record_at,
    read_segment,
    scan,
)
from handshake_cli.storage.store import SessionDir

_CHECKPOINT_TYPE = b'"type":"checkpoint.created"'


class SkippedCheckpoint(TypedDict):
    """A checkpoint recovery passed over because it failed validation (`skipped_checkpoints`)."""

    checkpoint_id: str
    seq: int
    reason: str


@dataclass
class SessionView:
    session: SessionDir
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
    # the history as the base checkpoint's body kept it (`story`), folded on first use
    _story_state: Any = field(default=None, repr=False)
    _story: StoryFold | None = field(default=None, repr=False)
    story_unreadable: int = 0  # records the history needed that failed their checksum (found by bytes)

    @property
    def story(self) -> StoryFold:
        """The session's history as of the last record read (`session/story`): the base
        checkpoint's, with the records after it; folded from record 1 without a base; found
        by its bytes (`session/story_found`) when the base's body predates the story."""
        if self._story is None:
            kept = None
            if self.base is not None:
                kept = StoryFold.from_state(kept_story(self.session.journal, {"story": self._story_state}))
            if kept is not None:
                assert self.base is not None
                for item in self.records:
                    if item.seq > self.base.covers_seq:
                        kept.apply(item)
                self._story = kept
            elif self.scanned_from == 1:
                self._story = StoryFold()
                for item in self.records:
                    self._story.apply(item)
            else:
                self._story, self.story_unreadable = fold_found(self.session.journal, self.records)
        return self._story

    @property
    def config(self) -> dict[str, Any]:
        """session.toml, checked (`SessionDir.read_config`: a [job] edited since record 1 is JobChanged)."""
        if self._config is None:
            self._config = self.session.read_config()
        return self._config

    @property
    def job(self) -> Job:
        """The stored job, read back as strictly as a job file (JobConfigError if it does not)."""
        if self._job is None:
            self._job = Job.from_config(
                self.config.get("job") or {}, origin=f"{self.session.session_toml} [job]"
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


def rebuild(
    session: SessionDir,
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
        config = session.read_config() if config is None else config
        job = Job.from_config(config.get("job") or {}, origin=f"{session.session_toml} [job]")
    skipped: list[SkippedCheckpoint] = []
    base = _newest_loadable(session, at, skipped, lazy)
    if base is not None:  # the search's segment is released by now: one in memory at a time
        candidate, loaded = base
        result = _upto(_scan_from(session, candidate), at)
        view = _assemble(session, result.records, loaded, skipped, result.damage, result.last_seq, lazy)
    else:
        result = _upto(scan(session.journal, session.session_id), at)
        if not result.records:  # record 1 is written with the session: without it, nothing says what ran
            where = (
                f" (damage at {result.damage.segment} offset {result.damage.offset})" if result.damage else ""
            )
            raise IntegrityError(
                f"session {session.session_id}: the journal holds no intact record ({session.journal}){where}"
            )
        view = _assemble(session, result.records, None, skipped, result.damage, result.last_seq, lazy)
    view._config, view._job = config, job
    return view


def _newest_loadable(
    session: SessionDir, at: int | None, skipped: list[SkippedCheckpoint], lazy: bool
) -> tuple[Record, LoadedCheckpoint] | None:
    """The newest checkpoint candidate whose body loads; those that fail go to `skipped`."""
    for candidate, content in _candidates(session.journal, session.session_id, at_most=at):
        ref = CheckpointRef.from_record(candidate)
        try:
            return candidate, load(
                session.journal, ref, session.session_id, lazy=lazy, record=candidate, content=content
            )
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
    journal_dir: Path, session_id: str, *, at_most: int | None = None
) -> Iterator[Record]:
    """Intact `checkpoint.created` records that sit where their seq says, newest first,
    found by searching segments from the end (the key/value pair can only occur unescaped
    as a record's own type or inside a record's data, and the type is checked after the
    record's checksum).

    A record's checksum proves its bytes, not its place: a copy of an old checkpoint line
    appended at the end, or a stale segment whose name sorts last, is intact too. So a
    candidate must link (seq and `prev`) to the record just before it, and its segment's
    first record to the last record of the segment before. One that does not is skipped;
    the scan from an older checkpoint then meets it as damage, as `inspect --verify` does."""
    for record, _ in _candidates(journal_dir, session_id, at_most=at_most):
        yield record


def _candidates(
    journal_dir: Path, session_id: str, *, at_most: int | None = None
) -> Iterator[tuple[Record, bytes]]:
    """`checkpoint_candidates`, each with its line (for the body's hash, `checkpoints.load`).

    A segment is read from its end in growing windows, so finding a checkpoint near the end
    of a full segment reads what lies after it, not the whole segment."""
    segments = list_segments(journal_dir)
    for index in range(len(segments) - 1, -1, -1):
        name = segments[index]
        if at_most is not None and int(name.split(".")[0]) > at_most:
            continue  # every record in this segment comes after `at_most`
        anchor: bool | None = None  # does this segment follow the one before it? (checked once)
        for data, at, start, content in _checkpoint_lines(journal_dir / name):
            if check_content(content) is None:
                continue
            record = Record.decode(content, name, start)
            if record.type != "checkpoint.created" or (at_most is not None and record.seq > at_most):
                continue
            if anchor is None:
                anchor = _segment_follows(journal_dir, session_id, segments, index)
            if anchor and _follows_line_before(data, at, record):
                yield record, content


_FIRST_WINDOW = 256 * 1024


def _checkpoint_lines(path: Path) -> Iterator[tuple[bytes, int, int, bytes]]:
    """Every line of the segment at `path` that holds the checkpoint type, from the last up:
    a window of the segment that holds it and the line before it, where the line starts in
    the window and in the segment, and the line.
    The window doubles (from the end) until it does; a segment larger than any handshake
    writes is searched in its first MAX_SEGMENT_BYTES, as a scan reads it."""
    fd = durable.open_read(path)
    try:
        with durable.environment("read", path):
            size = os.fstat(fd).st_size
            if size > MAX_SEGMENT_BYTES:
                size = MAX_SEGMENT_BYTES
            window = min(size, _FIRST_WINDOW)
            end = size  # absolute: lines that start at or after it were looked at
            while True:
                base = size - window
                data = os.pread(fd, window, base)
                if len(data) != window:  # the file shrank (it is being repaired): read it whole
                    data, base = read_segment(path)[0], 0
                    size = len(data)
                while (at := data.rfind(_CHECKPOINT_TYPE, 0, max(0, end - base))) != -1:
                    newline = data.rfind(b"\n", 0, at)
                    before = data.rfind(b"\n", 0, newline) if newline > 0 else -1
                    if base > 0 and (newline == -1 or before == -1):
                        break  # this line, or the line before it, begins before the window
                    start = newline + 1
                    stop = data.find(b"\n", at)
                    yield data, start, base + start, data[start : stop if stop != -1 else len(data)]
                    end = base + start
                if base == 0:
                    return
                window = min(size, window * 2)
    finally:
        os.close(fd)


def _links(before: tuple[int, str], seq: int, prev: str) -> bool:
    """Whether a record (`seq`, `prev`) comes right after `before` (its seq and sum)."""
    return before == (seq - 1, prev)


def _follows_line_before(data: bytes, start: int, record: Record) -> bool:
    """The record at `start` links to the line just before it in its segment (or is the
    segment's first, which `_segment_follows` vouches for)."""
    if start == 0:
        return True
    line_start = data.rfind(b"\n", 0, start - 1) + 1
    parsed = check_content(data[line_start : start - 1])
    return parsed is not None and _links((parsed[0], parsed[2]), record.seq, record.prev)


def _segment_follows(journal_dir: Path, session_id: str, segments: list[str], index: int) -> bool:
    """The segment's first record has the seq its name says and links to the last record of
    the segment before it (to the session's genesis for the first segment)."""
    parsed = check_content(_first_line(journal_dir / segments[index]))
    if parsed is None or parsed[0] != int(segments[index].split(".")[0]):
        return False
    seq, prev, _ = parsed
    if index == 0:
        return seq == 1 and prev == genesis(session_id)
    before = read_last_record(journal_dir, segments[index - 1])
    return before is not None and _links((before.seq, before.sum), seq, prev)


def _first_line(path: Path) -> bytes:
    """The first line of a segment (without its newline): read until its newline."""
    fd = durable.open_read(path)
    try:
        line = b""
        with durable.environment("read", path):
            while b"\n" not in line and len(line) <= MAX_RECORD_BYTES:
                block = os.pread(fd, 1 << 16, len(line))
                if not block:
                    break
                line += block
        return line.split(b"\n", 1)[0]
    finally:
        os.close(fd)


def _scan_from(session: SessionDir, record: Record) -> ScanResult:
    """Verify from `record` (already checked: its checksum, and for a checkpoint its body) to
    the end of the journal: every later record's checksum, seq and link to the one before."""
    return scan(
        session.journal,
        session.session_id,
        start=Start(record.segment, record.offset, record.seq, record.prev),
    )


def _assemble(
    session: SessionDir,
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
                base = load(session.journal, ref, session.session_id, lazy=lazy, record=item)
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
    view = SessionView(
        session=session,
        records=records,
        record=state,
        thread=thread,
        base=base.ref if base else None,
        newest_checkpoint=newest,
        skipped=skipped,
        damage=damage,
        last_seq=last_seq,
        scanned_from=records[0].seq if records else 1,
        _story_state=base.body.get("story") if base else None,
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
        request = read_record_at(
            view.session.journal, str(flight.get("segment")), int(flight.get("offset", -1))
        )
        if request is None or request.seq != since:
            records = scan(view.session.journal, view.session.session_id).records
        else:
            records = _scan_from(view.session, request).records
    parts = [
        str(r.data.get("text", ""))
        for r in records
        if r.seq > since and r.type == "model.chunk" and r.data.get("turn") == turn
    ]
    return "".join(parts)
