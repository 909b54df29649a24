"""`inspect SESSION --html`: a session's timeline as data, built from its records alone.

The page (`page.py`, `page.html`) draws what this module computes: one lane per process
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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from handshake_cli.readers.timeline.fold import (
    BUCKET_COLUMNS,
    MAX_STEPS,
    SCHEMA,
    TEXT_MAX,
    fold_quiet_steps,
    fold_records,
    lane_at_each,
    record_columns,
)
from handshake_cli.readers.timeline.items import (
    bucket_items,
    call_items,
    lane_items,
    lanes_of,
    record_items,
    turn_items,
)
from handshake_cli.readers.timeline.table import RECORD_DATA_MAX, records_table
from handshake_cli.readers.timeline.words import narrate
from handshake_cli.storage.journal.codec import Record

if TYPE_CHECKING:
    from handshake_cli.storage.contract import SessionStore

__all__ = ["MAX_STEPS", "RECORD_DATA_MAX", "TEXT_MAX", "build", "timeline"]


def timeline(store: SessionStore, session_id: str) -> dict[str, Any]:
    """The page model of a session as it stands, read without the lease: every intact record
    (a torn tail or corruption after them is named in `session.damage`), the story of its
    processes, and whether a live process holds it now."""
    from pathlib import Path

    from handshake_cli.errors import NotFound
    from handshake_cli.readers.history import history
    from handshake_cli.session.state import fold
    from handshake_cli.session.status import shown_state, vanished

    try:
        config = store.read_config(session_id, check_job=False)
        holder = store.holder(session_id)
        result = store.scan(session_id)
    except FileNotFoundError as exc:  # gc moved the session away while it was read
        what = Path(exc.filename).name if exc.filename else "file it was reading"
        raise vanished(store, session_id, what) from exc
    except NotFound as exc:
        raise vanished(store, session_id, "record it was reading") from exc
    records = result.records
    damage = result.damage
    told = history(
        store,
        session_id,
        records,
        whole=True,
        last_seq=records[-1].seq if records else 0,
        running=holder is not None,
        torn_tail=damage.as_json() if damage is not None and damage.repairable else None,
        corruption=damage.as_json() if damage is not None and not damage.repairable else None,
    )
    record = fold(session_id, records)
    facts = {
        "session_id": session_id,
        "job_name": (config.get("job") or {}).get("name"),
        "state": shown_state(record.state, holder, config),
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

    lane_at = lane_at_each(records, starts)
    attempts, calls, steps = fold_records(records, lane_at)
    fold_quiet_steps(steps, attempts, calls, records, seq_index)
    columns, buckets = record_columns(records, steps, lane_at)
    col = {r.seq: columns[i] for i, r in enumerate(records)}
    lanes = lanes_of(processes, records, col, seq_index)
    items: list[dict[str, Any]] = []
    hidden = {i for s in steps if s.bucket is not None for i in range(s.first, s.last + 1)}
    last_seq = records[-1].seq if records else 0
    items += turn_items(attempts, col, lanes, hidden, seq_index)
    items += call_items(calls, col, lanes, lane_of, hidden, seq_index, running and bool(lanes))
    claimed = {seq for item in items for first, last in item["seqs"] for seq in range(first, last + 1)}
    items += record_items(records, col, lane_of, hidden, claimed)
    items += bucket_items(buckets, records, col, calls)
    items += lane_items(lanes, col)
    width = (max(columns) + 1 if columns else 0) + BUCKET_COLUMNS
    table = records_table(records, session.get("session_id", ""))
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
