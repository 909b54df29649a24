"""The timeline's first pass over the records: model turns (each `model.request` and what it
streamed), tool calls (asked, intents, resolutions, result), steps (a turn and what follows it
up to the next, within one process), which steps are folded into blocks, and each record's
column. Pure: records in, plain data out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.storage.journal.codec import Record

SCHEMA = 1

# Steps (a turn and what follows it up to the next turn) drawn one by one; beyond, quiet runs
# are bucketed so that about this many blocks are drawn, whatever the session's length.
MAX_STEPS = 400
KEEP_EDGE = 3  # steps at each end of a process never folded into a bucket
BUCKET_COLUMNS = 4  # the width of a bucket, in columns
LANE_GAP = 2  # columns between the end of one process and the start of the next
TEXT_MAX = 2000  # characters of a turn's streamed text carried by the page

STREAMED = frozenset({"model.chunk", "model.tool_call_chunk"})
# The records a quiet step may hold: anything else (a recovery record, a state change, a
# retry, an abandoned stream) keeps its step drawn.
QUIET = frozenset({"model.request", "model.completed", "tool.intent", "tool.result", "checkpoint.created"})
QUIET |= STREAMED


@dataclass
class Attempt:
    """One model call: a `model.request` and what streamed after it."""

    turn: int
    request_seq: int
    lane: int
    seqs: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    chars: int = 0
    chunk_records: int = 0
    status: str = "in_flight"  # completed, abandoned, in_flight
    reason: str | None = None
    end_seq: int | None = None
    tool_calls: list[str] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        if self.chars < TEXT_MAX:
            self.text.append(text[: TEXT_MAX - self.chars])
        self.chars += len(text)


@dataclass
class Call:
    """A tool call as the records tell it: which turn asked for it, every intent (a second one
    means it ran again), an operator's answers, and its result with its evidence."""

    tool_call_id: str
    tool: Any = None
    asked_seq: int | None = None
    intents: list[int] = field(default_factory=list)
    result_seq: int | None = None
    error: Any = None
    evidence: Any = None
    resolutions: list[int] = field(default_factory=list)
    resolution: Any = None
    by: Any = None


@dataclass
class Step:
    """A turn attempt and the records after it, up to the next attempt or process."""

    first: int  # index into the records
    last: int
    lane: int
    quiet: bool = True
    bucket: int | None = None


def lane_at_each(records: Sequence[Record], starts: list[int]) -> list[int]:
    """The lane of each record, by index: processes hold contiguous runs of seqs."""
    lanes, lane = [], 0
    for record in records:
        while lane + 1 < len(starts) and record.seq >= starts[lane + 1]:
            lane += 1
        lanes.append(lane)
    return lanes


def fold_records(
    records: Sequence[Record], lane_at: list[int]
) -> tuple[list[Attempt], dict[str, Call], list[Step]]:
    """Every model call, every tool call and every step, in one pass. A call in flight when its
    process ended is abandoned (`process_stopped`, as the thread's fold says when recovery
    asks again); in flight in the last process, it stays in flight (the crash, or the live
    writer, is the lane's to say)."""
    attempts: list[Attempt] = []
    calls: dict[str, Call] = {}
    steps: list[Step] = []
    current: Attempt | None = None
    lane = -1
    for index, record in enumerate(records):
        kind, data, seq = record.type, record.data, record.seq
        here = lane_at[index]
        if here != lane:  # a new process: what was in flight was cut short by the end of the last
            if current is not None and current.status == "in_flight":
                current.status, current.reason = "abandoned", "process_stopped"
            current = None
            lane = here
            steps.append(Step(index, index, here, quiet=False))
        if kind == "model.request":
            if current is not None and current.status == "in_flight":
                current.status, current.reason = "abandoned", "process_stopped"
                current.end_seq = current.end_seq or current.seqs[-1]
            current = Attempt(as_int(data.get("turn")), seq, here, [seq])
            attempts.append(current)
            steps.append(Step(index, index, here))
        elif kind in STREAMED and current is not None and current.status == "in_flight":
            current.seqs.append(seq)
            current.chunk_records += 1
            if kind == "model.chunk":
                current.add_text(str(data.get("text", "")))
        elif kind == "model.completed" and current is not None and current.status == "in_flight":
            current.seqs.append(seq)
            current.status, current.end_seq = "completed", seq
            message = data.get("message") or {}
            for call in message.get("tool_calls") or []:
                call_id = str(call.get("tool_call_id"))
                entry = calls.setdefault(call_id, Call(call_id, call.get("tool")))
                entry.asked_seq = entry.asked_seq or seq
                current.tool_calls.append(call_id)
        elif kind == "model.stream_aborted" and current is not None and current.status == "in_flight":
            current.seqs.append(seq)
            current.status, current.reason, current.end_seq = "abandoned", data.get("reason"), seq
        elif kind == "tool.intent":
            call_id = str(data.get("tool_call_id"))
            entry = calls.setdefault(call_id, Call(call_id))
            entry.tool = data.get("tool", entry.tool)
            entry.intents.append(seq)
        elif kind == "tool.result":
            call_id = str(data.get("tool_call_id"))
            entry = calls.setdefault(call_id, Call(call_id, data.get("tool")))
            entry.result_seq, entry.error, entry.evidence = seq, data.get("error"), data.get("evidence")
        elif kind == "operator.resolution":
            call_id = str(data.get("tool_call_id"))
            entry = calls.setdefault(call_id, Call(call_id))
            entry.resolutions.append(seq)
            entry.resolution, entry.by = data.get("resolution"), data.get("by")
        step = steps[-1]
        step.last = index
        if kind not in QUIET:
            step.quiet = False
    return attempts, calls, steps


def fold_quiet_steps(
    steps: list[Step],
    attempts: list[Attempt],
    calls: dict[str, Call],
    records: Sequence[Record],
    seq_index: dict[int, int],
) -> None:
    """Fold runs of quiet steps into buckets when there are more than MAX_STEPS steps."""
    if len(steps) <= MAX_STEPS:
        return
    by_request = {a.request_seq: a for a in attempts}
    for step in steps:
        if not step.quiet:
            continue
        attempt = by_request.get(records[step.first].seq)
        if attempt is None or attempt.status != "completed":
            step.quiet = False
            continue
        for call_id in attempt.tool_calls:
            call = calls[call_id]
            result = seq_index.get(call.result_seq or -1)
            if (
                len(call.intents) != 1
                or result is None
                or result > step.last
                or call.resolutions
                or call.evidence
            ):
                step.quiet = False
                break
    # The edges of each process stay drawn.
    by_lane: dict[int, list[Step]] = {}
    for step in steps:
        by_lane.setdefault(step.lane, []).append(step)
    for lane_steps in by_lane.values():
        for step in lane_steps[:KEEP_EDGE] + lane_steps[-KEEP_EDGE:]:
            step.quiet = False
    foldable = sum(1 for s in steps if s.quiet)
    drawn = len(steps) - foldable
    room = max(MAX_STEPS - drawn, 1)
    size = max(2, -(-foldable // room))  # steps per bucket
    bucket = 0
    run: list[Step] = []

    def close_run() -> None:
        nonlocal bucket
        if len(run) < 2:
            run.clear()
            return
        for start in range(0, len(run), size):
            part = run[start : start + size]
            if len(part) < 2:
                continue
            for step in part:
                step.bucket = bucket
            bucket += 1
        run.clear()

    previous_lane = None
    for step in steps:
        if not step.quiet or step.lane != previous_lane:
            close_run()
        if step.quiet:
            run.append(step)
        previous_lane = step.lane
    close_run()


def record_columns(
    records: Sequence[Record], steps: list[Step], lane_at: list[int]
) -> tuple[list[int], list[dict[str, Any]]]:
    """Each record's column: one per record, a stream's chunks sharing one, a bucket's records
    all at the bucket, and LANE_GAP columns between processes."""
    columns = [0] * len(records)
    bucket_of: dict[int, int] = {}
    buckets: list[dict[str, Any]] = []
    for step in steps:
        if step.bucket is None:
            continue
        if step.bucket == len(buckets):
            buckets.append({"bucket": step.bucket, "first": step.first, "last": step.last, "lane": step.lane})
        buckets[step.bucket]["last"] = step.last
        for i in range(step.first, step.last + 1):
            bucket_of[i] = step.bucket
    col = -1
    lane = None
    previous_streamed = False
    for i, record in enumerate(records):
        here = lane_at[i]
        if here != lane and lane is not None:
            col += LANE_GAP
        lane = here
        b = bucket_of.get(i)
        if b is not None:
            if buckets[b]["first"] == i:
                col += 1
                buckets[b]["x0"] = col
                col += BUCKET_COLUMNS - 1
            columns[i] = buckets[b]["x0"]
            previous_streamed = False
            continue
        streamed = record.type in STREAMED
        if not (streamed and previous_streamed):
            col += 1
        previous_streamed = streamed
        columns[i] = col
    return columns, buckets


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
