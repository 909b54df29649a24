"""The records a timeline page carries: every one, compactly, so a click shows the journal's
own JSON without a server. A record's `data` longer than RECORD_DATA_MAX characters is cut
(the page says so, with the command that prints it whole).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from handshake_cli.storage.journal.codec import Record

RECORD_DATA_MAX = 4096  # characters of a record's `data` (as compact JSON) in the table


def data_if_cut(record: Record, line_bytes: int | None) -> str | None:
    """The record's data as compact JSON when it is longer than RECORD_DATA_MAX, else None.
    `line_bytes`, the record's line in the journal when known, bounds the data's JSON (written
    the same way, compact), so a short record costs no encoding."""
    if line_bytes is not None and line_bytes <= RECORD_DATA_MAX:
        return None
    text = json.dumps(record.data, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) > RECORD_DATA_MAX else None


def records_table(records: Sequence[Record], session_id: str) -> dict[str, Any]:
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
        whole = data_if_cut(record, line)
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
