"""`inspect SESSION --html`: a session's timeline as data, built from its records alone.

The page (`readers/timeline_page.py`) draws what this module computes: one lane per process
that wrote the session (the story `session/story.py` tells: run, recover, checkpoint, fork),
a crash where a process ended without an ending record, the model turns with their streamed
text (an abandoned stream marked so), each tool call as a span from its intent to its result
with its outcome, the checkpoints, the other records worth a mark (state changes, recovery
records, an operator's answer), and what each recovery found and decided. Every element
names the records it was drawn from, and the page carries a compact table of every record,
so a click shows the journal's own JSON (already masked: it is what the journal holds).

The horizontal axis is the journal's order, not the clock (timestamps are informational, and
a crash can leave hours between two records): each record is one column, except that the
`model.chunk` records of a stream share their turn's columns, and a long run of uneventful
steps (a turn whose stream completed and whose calls ran once and finished in the same
process) is folded into a bucket when a session has more than `MAX_STEPS` steps. What is
never folded: the first and last `KEEP_EDGE` steps of each process, and any step holding a
crash, an abandoned stream, a call in doubt, run again, probed or resolved, or a recovery
record. Text is cut to `TEXT_MAX` characters per turn and a record's data to
`RECORD_DATA_MAX` characters in the table (the cut says how to read the whole record).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from handshake_cli.storage.journal.codec import Record

if TYPE_CHECKING:
    from handshake_cli.storage.store import SessionDir

SCHEMA = 1

# Steps (a turn and what follows it up to the next turn) drawn one by one; beyond, quiet runs
# are bucketed so that about this many blocks are drawn, whatever the session's length.
MAX_STEPS = 400
KEEP_EDGE = 3  # steps at each end of a process never folded into a bucket
BUCKET_COLUMNS = 4  # the width of a bucket, in columns
LANE_GAP = 2  # columns between the end of one process and the start of the next
TEXT_MAX = 2000  # characters of a turn's streamed text carried by the page
RECORD_DATA_MAX = 4096  # characters of a record's `data` (as compact JSON) in the table

STREAMED = frozenset({"model.chunk", "model.tool_call_chunk"})
# The records a quiet step may hold: anything else (a recovery record, a state change, a
# retry, an abandoned stream) keeps its step drawn.
QUIET = frozenset({"model.request", "model.completed", "tool.intent", "tool.result", "checkpoint.created"})
QUIET |= STREAMED

# How each tool call ended, as the page colours it.
DONE, FAILED, IN_DOUBT, RUNNING, PENDING = "done", "failed", "in_doubt", "running", "pending"
PROBED, RESOLVED, RERUN = "probed", "resolved", "rerun"

# What a recovery's decision means, for a person who has not read DESIGN.md.
DECISION_WORDS = {
    "rerun": "ran it again (the tool is idempotent)",
    "rerun_with_key": "ran it again with the same idempotency key",
    "probe": "asked its probe whether it had happened",
    "block": "blocked: only an operator can say whether it happened",
    "resolved_done": "an operator said it had happened: recorded, not run again",
    "resolved_retry": "an operator said it had not happened: ran it again",
}
PROBE_WORDS = {
    "happened": (
        "the probe said it had happened: its result was recorded from the probe, the call was not run again"
    ),
    "not_happened": "the probe said it had not happened: the call ran",
    "inconclusive": "the probe gave no answer: the session blocked",
}
ENDING_WORDS = {
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "paused": "stopped at a safe boundary",
    "blocked": "blocked, waiting for an operator",
    "repaired": "repaired the journal; nothing else to do",
    "checkpointed": "took its checkpoint",
    "forked": "made this session as a fork",
    "open": "closed the thread",
    "running": "still running (a live process holds the lock)",
    "crashed": "crashed: no ending record",
    "damaged": "the journal is damaged after its last intact record",
}


@dataclass
class _Attempt:
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
class _Call:
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
class _Step:
    """A turn attempt and the records after it, up to the next attempt or process."""

    first: int  # index into the records
    last: int
    lane: int
    quiet: bool = True
    bucket: int | None = None


def build(
    records: Sequence[Record],
    processes: Sequence[dict[str, Any]],
    *,
    session: dict[str, Any],
    running: bool = False,
) -> dict[str, Any]:
    """The page model: `session` (the header facts), `lanes` (one per process), `items` (what
    is drawn, each with its lane, columns and record seqs), `records` (the compact table) and
    `limits` (what was folded or cut, so the page can say so)."""
    starts = [int(p["first_seq"]) for p in processes] or [records[0].seq if records else 1]
    seq_index = {r.seq: i for i, r in enumerate(records)}

    def lane_of(seq: int) -> int:
        return max(0, bisect.bisect_right(starts, seq) - 1)

    attempts, calls, steps = _fold(records, lane_of)
    _bucket(steps, attempts, calls, records, seq_index)
    columns, buckets = _columns(records, steps, lane_of)
    col = {r.seq: columns[i] for i, r in enumerate(records)}
    lanes = _lanes(processes, records, col, seq_index)
    items: list[dict[str, Any]] = []
    hidden = {i for s in steps if s.bucket is not None for i in range(s.first, s.last + 1)}
    last_seq = records[-1].seq if records else 0
    items += _turn_items(attempts, col, lanes, hidden, seq_index)
    items += _call_items(calls, col, lanes, lane_of, hidden, seq_index, running and bool(lanes))
    items += _record_items(records, col, lane_of, hidden)
    items += _bucket_items(buckets, records, col, calls)
    items += _lane_items(lanes, col)
    width = (max(columns) + 1 if columns else 0) + BUCKET_COLUMNS
    table = _table(records, session.get("session_id", ""))
    for lane in lanes:
        lane["story"] = narrate(lane, calls_by_id={c.tool_call_id: c for c in calls.values()})
    return {
        "schema": SCHEMA,
        "session": {**session, "records": len(records), "last_seq": last_seq},
        "columns": width,
        "lanes": lanes,
        "items": items,
        "records": table,
        "limits": {
            "max_steps": MAX_STEPS,
            "steps": len(steps),
            "buckets": len(buckets),
            "steps_in_buckets": sum(1 for s in steps if s.bucket is not None),
            "text_max": TEXT_MAX,
            "record_data_max": RECORD_DATA_MAX,
            "records_clipped": table.pop("clipped"),
        },
    }


def timeline(session: SessionDir) -> dict[str, Any]:
    """The page model of a session as its files stand, read without the lock: every intact
    record (a torn tail or corruption after them is named in `session.damage`), the story of
    its processes, and whether a live process holds it now."""
    from pathlib import Path

    from handshake_cli.readers.history import history
    from handshake_cli.session.state import fold
    from handshake_cli.session.status import effective_state
    from handshake_cli.storage import lock
    from handshake_cli.storage.journal.scan import scan

    try:
        config = session.read_config()
        holder = lock.holder(session.path)
        result = scan(session.journal, session.session_id)
    except FileNotFoundError as exc:  # gc moved the session away while it was read
        raise session.missing(Path(exc.filename).name if exc.filename else "file it was reading") from exc
    records = result.records
    damage = result.damage
    told = history(
        session.journal,
        records,
        whole=True,
        last_seq=records[-1].seq if records else 0,
        running=holder is not None,
        torn_tail=damage.as_json() if damage is not None and damage.repairable else None,
        corruption=damage.as_json() if damage is not None and not damage.repairable else None,
    )
    record = fold(session.session_id, records)
    facts = {
        "session_id": session.session_id,
        "job_name": (config.get("job") or {}).get("name"),
        "state": effective_state(record.state, holder),
        "model": {"id": record.model_id, "backend": record.backend},
        "created_at": config.get("created_at"),
        "updated_at": record.updated_at,
        "checkpoint_count": record.checkpoint_count,
        "lock_holder": holder.as_json() if holder else None,
        "damage": damage.as_json() if damage is not None else None,
        "crashes": told["crashes"],
        "history_partial": told.get("partial"),
    }
    return build(records, told["processes"], session=facts, running=holder is not None)


# -- folding the records ------------------------------------------------------------------


def _fold(records: Sequence[Record], lane_of: Any) -> tuple[list[_Attempt], dict[str, _Call], list[_Step]]:
    attempts: list[_Attempt] = []
    calls: dict[str, _Call] = {}
    steps: list[_Step] = []
    current: _Attempt | None = None
    lane = -1
    for index, record in enumerate(records):
        kind, data, seq = record.type, record.data, record.seq
        here = lane_of(seq)
        if here != lane:  # a new process: what was in flight was cut short by the end of the last
            if current is not None and current.status == "in_flight":
                current.status, current.reason = "abandoned", "process_stopped"
            current = None
            lane = here
            steps.append(_Step(index, index, here, quiet=False))
        if kind == "model.request":
            if current is not None and current.status == "in_flight":
                current.status, current.reason = "abandoned", "process_stopped"
                current.end_seq = current.end_seq or current.seqs[-1]
            current = _Attempt(_int(data.get("turn")), seq, here, [seq])
            attempts.append(current)
            steps.append(_Step(index, index, here))
        elif kind in STREAMED and current is not None and current.status == "in_flight":
            current.seqs.append(seq)
            current.chunk_records += 1
            if kind == "model.chunk":
                current.add_text(str(data.get("text", "")))
        elif kind == "model.completed" and current is not None:
            current.seqs.append(seq)
            current.status, current.end_seq = "completed", seq
            message = data.get("message") or {}
            for call in message.get("tool_calls") or []:
                call_id = str(call.get("tool_call_id"))
                entry = calls.setdefault(call_id, _Call(call_id, call.get("tool")))
                entry.asked_seq = entry.asked_seq or seq
                current.tool_calls.append(call_id)
        elif kind == "model.stream_aborted" and current is not None:
            current.seqs.append(seq)
            current.status, current.reason, current.end_seq = "abandoned", data.get("reason"), seq
        elif kind == "tool.intent":
            call_id = str(data.get("tool_call_id"))
            entry = calls.setdefault(call_id, _Call(call_id))
            entry.tool = data.get("tool", entry.tool)
            entry.intents.append(seq)
        elif kind == "tool.result":
            call_id = str(data.get("tool_call_id"))
            entry = calls.setdefault(call_id, _Call(call_id, data.get("tool")))
            entry.result_seq, entry.error, entry.evidence = seq, data.get("error"), data.get("evidence")
        elif kind == "operator.resolution":
            call_id = str(data.get("tool_call_id"))
            entry = calls.setdefault(call_id, _Call(call_id))
            entry.resolutions.append(seq)
            entry.resolution, entry.by = data.get("resolution"), data.get("by")
        step = steps[-1]
        step.last = index
        if kind not in QUIET:
            step.quiet = False
    if current is not None and current.status == "in_flight":
        current.end_seq = None
    return attempts, calls, steps


def _bucket(
    steps: list[_Step],
    attempts: list[_Attempt],
    calls: dict[str, _Call],
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
    by_lane: dict[int, list[_Step]] = {}
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
    run: list[_Step] = []

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


def _columns(
    records: Sequence[Record], steps: list[_Step], lane_of: Any
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
        here = lane_of(record.seq)
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


# -- what is drawn ------------------------------------------------------------------------


def _ranges(seqs: Sequence[int]) -> list[list[int]]:
    """Seqs (ascending) as [first, last] runs: a turn's thousand chunks are one pair."""
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def _turn_items(
    attempts: list[_Attempt],
    col: dict[int, int],
    lanes: list[dict[str, Any]],
    hidden: set[int],
    seq_index: dict[int, int],
) -> list[dict[str, Any]]:
    items = []
    seen: Counter[int] = Counter()
    for attempt in attempts:
        seen[attempt.turn] += 1
        if seq_index[attempt.request_seq] in hidden:
            continue
        last = attempt.end_seq or attempt.seqs[-1]
        x1 = col[last]
        if attempt.status == "abandoned" and attempt.reason == "process_stopped" and lanes:
            x1 = max(x1, lanes[attempt.lane]["x1"])  # cut short by the crash at its lane's end
        text = "".join(attempt.text)
        items.append(
            {
                "kind": "turn",
                "id": f"turn-{attempt.request_seq}",
                "lane": attempt.lane,
                "x0": col[attempt.request_seq],
                "x1": x1,
                "turn": attempt.turn,
                "attempt": seen[attempt.turn],
                "status": attempt.status,
                "reason": attempt.reason,
                "text": text,
                "text_chars": attempt.chars,
                "chunk_records": attempt.chunk_records,
                "tool_calls": attempt.tool_calls,
                "seqs": _ranges(attempt.seqs),
            }
        )
    return items


def call_outcome(call: _Call, *, open_is_running: bool = False) -> str:
    """The page's colour for a call: how it was settled when recovery had a hand in it, else
    how it ended."""
    evidence = call.evidence if isinstance(call.evidence, dict) else {}
    if call.result_seq is not None and "operator" in evidence:
        return RESOLVED
    if call.result_seq is not None and "probe" in evidence:
        return PROBED
    if len(call.intents) > 1:
        return RERUN
    if call.result_seq is not None:
        return FAILED if call.error else DONE
    if call.intents:
        return RUNNING if open_is_running else IN_DOUBT
    return PENDING


def _call_items(
    calls: dict[str, _Call],
    col: dict[int, int],
    lanes: list[dict[str, Any]],
    lane_of: Any,
    hidden: set[int],
    seq_index: dict[int, int],
    running: bool,
) -> list[dict[str, Any]]:
    items = []
    last_lane = len(lanes) - 1
    for call in calls.values():
        begin = call.intents[0] if call.intents else call.asked_seq
        if begin is None or seq_index[begin] in hidden:
            continue
        pieces = _call_pieces(call, begin, col, lanes, lane_of)
        outcome = call_outcome(
            call, open_is_running=running and bool(call.intents) and lane_of(call.intents[-1]) == last_lane
        )
        seqs = sorted(
            {*call.intents, *call.resolutions, *([call.result_seq] if call.result_seq else [])}
            | ({call.asked_seq} if call.asked_seq else set())
        )
        result = None if call.result_seq is None else (FAILED if call.error else DONE)
        items.append(
            {
                "kind": "call",
                "id": f"call-{call.tool_call_id}",
                **pieces[0],
                "pieces": pieces[1:],
                "tool_call_id": call.tool_call_id,
                "tool": call.tool,
                "outcome": outcome,
                "result": result,
                "intents": call.intents,
                "intent_lanes": [lane_of(s) for s in call.intents],
                "intent_cols": [col[s] for s in call.intents],
                "result_seq": call.result_seq,
                "result_lane": None if call.result_seq is None else lane_of(call.result_seq),
                "evidence": call.evidence,
                "resolution": call.resolution,
                "by": call.by,
                "seqs": _ranges(seqs),
            }
        )
    return items


def _call_pieces(
    call: _Call, begin: int, col: dict[int, int], lanes: list[dict[str, Any]], lane_of: Any
) -> list[dict[str, int]]:
    """Where a call's span is drawn: from its intent to its result, one piece per process it
    lived through. A call in doubt when its process died continues, from the start of the
    next process's lane, up to the result that process wrote (or, never settled, to the end
    of the last process)."""
    first = lane_of(begin)
    if call.result_seq is not None:
        last, end = lane_of(call.result_seq), col[call.result_seq]
    elif call.intents and lanes:
        last = len(lanes) - 1
        end = lanes[last]["x1"] + 1
    else:
        return [{"lane": first, "x0": col[begin], "x1": col[begin]}]
    pieces = []
    for lane in range(first, last + 1):
        x0 = col[begin] if lane == first else lanes[lane]["x0"]
        x1 = end if lane == last else lanes[lane]["x1"] + 1
        pieces.append({"lane": lane, "x0": x0, "x1": x1})
    return pieces


# Records drawn as a mark of their own (turns and calls hold the others).
MARKED = {
    "session.created": "created",
    "session.state_change": "state",
    "session.completed": "ending",
    "session.failed": "ending",
    "session.cancelled": "ending",
    "recovery.started": "recovery",
    "recovery.resumed": "recovery",
    "recovery.blocked": "blocked",
    "model.retry": "retry",
    "mcp.tools": "mcp",
    "mcp.process": "mcp",
    "mcp.server_failed": "mcp",
    "mcp.stopped": "mcp",
}


def _record_items(
    records: Sequence[Record], col: dict[int, int], lane_of: Any, hidden: set[int]
) -> list[dict[str, Any]]:
    items = []
    known = {"model.request", "model.completed", "model.stream_aborted", "tool.intent", "tool.result"}
    known |= {"operator.resolution"} | STREAMED
    for i, record in enumerate(records):
        if i in hidden:
            continue
        kind, data = record.type, record.data
        item: dict[str, Any] = {
            "lane": lane_of(record.seq),
            "x0": col[record.seq],
            "x1": col[record.seq],
            "seqs": [[record.seq, record.seq]],
            "ts": record.ts,
        }
        if kind == "checkpoint.created":
            item.update(
                kind="checkpoint",
                id=f"checkpoint-{record.seq}",
                checkpoint_id=data.get("checkpoint_id"),
                reason=data.get("reason"),
                covers_seq=data.get("covers_seq"),
            )
        elif kind in known:
            continue
        else:
            item.update(
                kind="mark",
                id=f"mark-{record.seq}",
                type=kind,
                mark=MARKED.get(kind, "other"),
                label=_mark_label(kind, data),
            )
        items.append(item)
    return items


def _mark_label(kind: str, data: dict[str, Any]) -> str:
    if kind == "session.state_change":
        return f"{data.get('from')} → {data.get('to')}: {data.get('reason')}"
    if kind == "recovery.started":
        return f"recovery started: {data.get('action')} ({data.get('reason')})"
    if kind == "recovery.blocked":
        return f"blocked: {data.get('reason')}" + (f" ({data['detail']})" if data.get("detail") else "")
    if kind in ("session.completed", "session.failed", "session.cancelled"):
        return f"{kind.split('.')[1]}: {data.get('reason')}"
    if kind == "model.retry":
        return f"turn {data.get('turn')} attempt {data.get('attempt')} failed: {data.get('reason')}"
    return kind


def _bucket_items(
    buckets: list[dict[str, Any]], records: Sequence[Record], col: dict[int, int], calls: dict[str, _Call]
) -> list[dict[str, Any]]:
    items = []
    for bucket in buckets:
        inside = records[bucket["first"] : bucket["last"] + 1]
        types = Counter(r.type for r in inside)
        tools = Counter(str(r.data.get("tool")) for r in inside if r.type == "tool.intent")
        failed = sum(1 for r in inside if r.type == "tool.result" and r.data.get("error"))
        turns = sorted({_int(r.data.get("turn")) for r in inside if r.type == "model.request"})
        first, last = inside[0].seq, inside[-1].seq
        items.append(
            {
                "kind": "bucket",
                "id": f"bucket-{bucket['bucket']}",
                "lane": bucket["lane"],
                "x0": bucket["x0"],
                "x1": bucket["x0"] + BUCKET_COLUMNS - 1,
                "turns": [turns[0], turns[-1]] if turns else None,
                "turn_count": types["model.request"],
                "call_count": types["tool.intent"],
                "failed_calls": failed,
                "tools": dict(tools.most_common()),
                "checkpoints": types["checkpoint.created"],
                "record_count": len(inside),
                "seqs": [[first, last]],
            }
        )
    return items


def _lanes(
    processes: Sequence[dict[str, Any]],
    records: Sequence[Record],
    col: dict[int, int],
    seq_index: dict[int, int],
) -> list[dict[str, Any]]:
    lanes = []
    for index, process in enumerate(processes):
        first, last = int(process["first_seq"]), int(process["last_seq"])
        present = [s for s in (first, last) if s in col]
        x0 = col[present[0]] if present else 0
        x1 = col[present[-1]] if present else x0
        last_record = records[seq_index[last]] if last in seq_index else None
        lanes.append(
            {
                **process,
                "index": index,
                "x0": x0,
                "x1": x1,
                "last_record": {
                    "seq": last,
                    "type": last_record.type if last_record else None,
                    "ts": last_record.ts if last_record else None,
                    "what": _what(last_record) if last_record else None,
                },
            }
        )
    return lanes


def _lane_items(lanes: list[dict[str, Any]], col: dict[int, int]) -> list[dict[str, Any]]:
    """The crash markers, and one mark per decision a recovery made about a call in doubt."""
    items: list[dict[str, Any]] = []
    for lane in lanes:
        if lane.get("ending") == "crashed":
            items.append(
                {
                    "kind": "crash",
                    "id": f"crash-{lane['index']}",
                    "lane": lane["index"],
                    "x0": lane["x1"] + 1,
                    "x1": lane["x1"] + 1,
                    "last_seq": lane["last_seq"],
                    "last_type": lane["last_record"]["type"],
                    "what": lane["last_record"]["what"],
                    "torn_tail": lane.get("torn_tail"),
                    "seqs": [[lane["last_seq"], lane["last_seq"]]],
                }
            )
        found_seq = int(lane["first_seq"])
        for decision in lane.get("decisions") or []:
            at = decision.get("seq") or decision.get("rerun_seq") or found_seq
            seqs = sorted(
                {found_seq, at}
                | {s for s in (decision.get("rerun_seq"), decision.get("result_seq")) if isinstance(s, int)}
            )
            items.append(
                {
                    "kind": "decision",
                    "id": f"decision-{lane['index']}-{decision['tool_call_id']}",
                    "lane": lane["index"],
                    "x0": col.get(at, lane["x0"]),
                    "x1": col.get(at, lane["x0"]),
                    "at_seq": at,
                    **decision,
                    "words": decision_words(decision),
                    "seqs": _ranges(seqs),
                }
            )
    return items


def decision_words(decision: dict[str, Any]) -> str:
    """What a recovery decided for one call, and what came of it, in a sentence."""
    chosen = str(decision.get("decision"))
    words = DECISION_WORDS.get(chosen, chosen)
    probe = decision.get("probe")
    if chosen == "probe" and probe in PROBE_WORDS:
        words = PROBE_WORDS[str(probe)]
    elif chosen == "resolved_done" and decision.get("by"):
        words = f"an operator ({decision['by']}) said it had happened: recorded, not run again"
    result = decision.get("result")
    if result and chosen not in ("resolved_done",) and probe != "happened":
        words += f"; it {'failed' if result == 'failed' else 'finished'}"
    return words


def narrate(lane: dict[str, Any], *, calls_by_id: dict[str, _Call]) -> list[str]:
    """A process's part of the story, in sentences a newcomer reads without the JSON."""
    who = str(lane.get("kind"))
    if lane.get("pid") is not None:
        who += f" (pid {lane['pid']}" + (f" on {lane['host']})" if lane.get("host") else ")")
    span = f"records {lane['first_seq']} to {lane['last_seq']}"
    ending = str(lane.get("ending"))
    said = ENDING_WORDS.get(ending, ending)
    if lane.get("reason") and ending not in ("crashed", "running"):
        said += f" ({lane['reason']})"
    lines = [f"{who}, {span}: {said}."]
    if ending == "crashed":
        last = lane["last_record"]
        lines.append(f"It died after record {last['seq']}, {last['what'] or last['type']}.")
        for call in calls_by_id.values():
            open_here = [s for s in call.intents if lane["first_seq"] <= s <= lane["last_seq"]]
            result_here = call.result_seq is not None and call.result_seq <= lane["last_seq"]
            if open_here and not result_here:
                lines.append(
                    f"{call.tool} ({call.tool_call_id}) was in doubt: its intent is on record "
                    f"(seq {open_here[-1]}), its result is not."
                )
    torn = lane.get("torn_tail")
    if torn:
        where = f"{torn.get('length')} bytes at byte {torn.get('offset')} of {torn.get('segment')}"
        if torn.get("quarantined"):
            lines.append(
                f"Its last write was torn: the next recovery cut {where} into {torn['quarantined']}."
            )
        else:
            lines.append(f"Its last write was torn ({where}): `handshake recover` cuts it off.")
    found = lane.get("found")
    if found:
        lines.append(f"Plan: {found.get('action')} ({found.get('reason')}).")
        if found.get("accept_divergence"):
            lines.append("It was told to take the model's new answer (--accept-divergence).")
        for skipped in found.get("skipped_checkpoints") or []:
            lines.append(f"Skipped checkpoint {skipped.get('checkpoint_id')}: {skipped.get('reason')}.")
    for decision in lane.get("decisions") or []:
        lines.append(f"{decision.get('tool')} ({decision['tool_call_id']}): {decision_words(decision)}.")
    for event in lane.get("events") or []:
        if event.get("kind") == "divergence":
            lines.append(f"The model did not repeat what it had streamed for turn {event.get('turn')}.")
        elif event.get("kind") == "accepted_divergence":
            lines.append("A changed MCP tool list was accepted (--accept-divergence).")
    return lines


def _what(record: Record) -> str:
    data = record.data
    if record.type in ("tool.intent", "tool.result"):
        return f"{record.type} of {data.get('tool')} ({data.get('tool_call_id')})"
    if record.type in STREAMED or record.type in ("model.request", "model.completed"):
        return f"{record.type} of turn {data.get('turn')}"
    if record.type == "checkpoint.created":
        return f"checkpoint {data.get('checkpoint_id')} ({data.get('reason')})"
    return record.type


# -- the records table --------------------------------------------------------------------


def _clipped(record: Record, line_bytes: int | None) -> str | None:
    """The record's data as compact JSON when it is longer than RECORD_DATA_MAX, else None.
    `line_bytes`, the record's line in the journal when known, bounds the data's JSON (written
    the same way, compact), so a short record costs no encoding."""
    if line_bytes is not None and line_bytes <= RECORD_DATA_MAX:
        return None
    text = json.dumps(record.data, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) > RECORD_DATA_MAX else None


def _table(records: Sequence[Record], session_id: str) -> dict[str, Any]:
    """Every record, compactly: `types` once, then per record [seq, ts, type index, data, sum]
    (a sixth element, the full length, when `data` was cut to a string of RECORD_DATA_MAX
    characters). `prev` is the sum of the row before (`first_prev` for the first row)."""
    types: dict[str, int] = {}
    rows: list[list[Any]] = []
    clipped = 0
    for i, record in enumerate(records):
        index = types.setdefault(record.type, len(types))
        after = records[i + 1] if i + 1 < len(records) else None
        line = after.offset - record.offset if after is not None and after.segment == record.segment else None
        whole = _clipped(record, line)
        if whole is None:
            rows.append([record.seq, record.ts, index, record.data, record.sum])
        else:
            rows.append([record.seq, record.ts, index, whole[:RECORD_DATA_MAX], record.sum, len(whole)])
            clipped += 1
    return {
        "types": list(types),
        "first_prev": records[0].prev if records else None,
        "rows": rows,
        "session_id": session_id,
        "clipped": clipped,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
