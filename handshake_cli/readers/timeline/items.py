"""What the timeline draws, from the first pass (`fold`): turns, call spans (a piece per
process a call lived through), checkpoints and marks, folded blocks, lanes, crash marks and
each recovery's decisions. Every element carries its lane, its columns and the seqs of the
records it was drawn from, so a click can list them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from handshake_cli.readers.events import parse_ts
from handshake_cli.readers.timeline.fold import BUCKET_COLUMNS, Attempt, Call, as_int
from handshake_cli.readers.timeline.words import decision_words, what
from handshake_cli.storage.journal.codec import Record

# How each tool call ended, as the page colours it.
DONE, FAILED, IN_DOUBT, RUNNING, PENDING = "done", "failed", "in_doubt", "running", "pending"
PROBED, RESOLVED, RERUN = "probed", "resolved", "rerun"


def ranges(seqs: Sequence[int]) -> list[list[int]]:
    """Seqs (ascending) as [first, last] runs: a turn's thousand chunks are one pair."""
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def turn_items(
    attempts: list[Attempt],
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
                "seqs": ranges(attempt.seqs),
            }
        )
    return items


def call_outcome(call: Call, *, open_is_running: bool = False) -> str:
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


def call_items(
    calls: dict[str, Call],
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
        pieces = call_pieces(call, begin, col, lanes, lane_of)
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
                "seqs": ranges(seqs),
            }
        )
    return items


def call_pieces(
    call: Call, begin: int, col: dict[int, int], lanes: list[dict[str, Any]], lane_of: Any
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


def record_items(
    records: Sequence[Record], col: dict[int, int], lane_of: Any, hidden: set[int], claimed: set[int]
) -> list[dict[str, Any]]:
    """A checkpoint tick or a mark for each record no turn, call or block holds, so that every
    record is reachable by a click (a record a turn or a call would hold but cannot, such as
    a result whose call has no intent on record, is a mark of its own)."""
    items = []
    for i, record in enumerate(records):
        if i in hidden or record.seq in claimed:
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
        else:
            item.update(
                kind="mark",
                id=f"mark-{record.seq}",
                type=kind,
                mark=MARKED.get(kind, "other"),
                label=mark_label(kind, data),
            )
        items.append(item)
    return items


def mark_label(kind: str, data: dict[str, Any]) -> str:
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


def bucket_items(
    buckets: list[dict[str, Any]], records: Sequence[Record], col: dict[int, int], calls: dict[str, Call]
) -> list[dict[str, Any]]:
    items = []
    for bucket in buckets:
        inside = records[bucket["first"] : bucket["last"] + 1]
        types = Counter(r.type for r in inside)
        tools = Counter(str(r.data.get("tool")) for r in inside if r.type == "tool.intent")
        failed = sum(1 for r in inside if r.type == "tool.result" and r.data.get("error"))
        turns = sorted({as_int(r.data.get("turn")) for r in inside if r.type == "model.request"})
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


def lanes_of(
    processes: Sequence[dict[str, Any]],
    records: Sequence[Record],
    col: dict[int, int],
    seq_index: dict[int, int],
) -> list[dict[str, Any]]:
    """One lane per process, with its columns, its last record, and the seconds between the
    last record of the process before and its first (`after_seconds`, from the records'
    timestamps: informational, for a person reading the page; null when unreadable)."""
    lanes: list[dict[str, Any]] = []
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
                    "what": what(last_record) if last_record else None,
                },
                "after_seconds": _seconds_between(
                    lanes[-1]["last_record"]["ts"] if lanes else None, process.get("started_at")
                ),
            }
        )
    return lanes


def _seconds_between(earlier: str | None, later: str | None) -> float | None:
    start, end = parse_ts(earlier), parse_ts(later)
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def lane_items(lanes: list[dict[str, Any]], col: dict[int, int]) -> list[dict[str, Any]]:
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
                    "seqs": ranges(seqs),
                }
            )
    return items
