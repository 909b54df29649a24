"""`inspect --events` and `inspect --at`: a session's journal read as a history.

`events` is the query: the records in order, cut to `--at`, `--since-seq`, `--type` and
`--tail`, each with the seconds since the session began. `session_at` is the session as it
stood at one record: the nearest checkpoint at or before it, plus the records up to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from handshake_cli.errors import UsageError
from handshake_cli.session.history import replay
from handshake_cli.session.status import no_intact_record
from handshake_cli.storage.contract import SessionStore


def events(
    store: SessionStore,
    session_id: str,
    *,
    at: int | None = None,
    types: Sequence[str] = (),
    since_seq: int | None = None,
    tail: int | None = None,
) -> list[dict[str, Any]]:
    """The records `inspect --events` shows, each as its JSON plus `elapsed`: seconds since
    the session's first record (null when a timestamp cannot be read)."""
    store.read_config(session_id)  # refuses a session of a newer format before reading its journal
    first = store.first_record(session_id)
    # Begin near since_seq (a segment's first record, say) rather than at record 1.
    start = store.start_near(session_id, since_seq) if since_seq else None
    result = store.scan(session_id, start=start)
    if not result.records and result.damage is None:  # record 1 is written with the session
        raise no_intact_record(store, session_id)
    records = result.records
    if at is not None:
        check_at(at, records[-1].seq if records else 0)
        records = [r for r in records if r.seq <= at]
    if since_seq:
        records = [r for r in records if r.seq >= since_seq]
    if types:
        records = [r for r in records if any(matches(r.type, t) for t in types)]
    if tail is not None:
        records = records[-tail:] if tail else []
    origin = parse_ts(first.ts if first else None)
    return [{**r.as_json(), "elapsed": _elapsed(origin, r.ts)} for r in records]


def matches(kind: str, wanted: str) -> bool:
    """`tool.intent` matches exactly; `tool` or `tool.` matches every tool.* record."""
    family = wanted.rstrip(".")
    return kind == wanted or kind.startswith(family + ".")


def check_at(at: int, last: int) -> None:
    if at < 1 or at > last:
        raise UsageError(f"--at {at} is outside this session's records (1 to {last})")


def session_at(store: SessionStore, session_id: str, at: int) -> dict[str, Any]:
    """The session as it stood at record `at`: its record, the checkpoint it was rebuilt from,
    the thread, the calls still open and every tool call with its status."""
    # Imported here: the listing reads timestamps with `parse_ts` and needs none of recovery.
    from handshake_cli.recovery.view import rebuild

    last = store.last_record(session_id)
    check_at(at, last.seq if last else 0)
    view = rebuild(store, session_id, at=at)  # the nearest checkpoint at or before `at`, plus replay
    calls = replay(view.records).tool_calls
    return {
        "session_id": session_id,
        "at_seq": at,
        **view.record.as_json(),
        "from_checkpoint": view.base.checkpoint_id if view.base else None,
        "messages": view.thread.messages,
        "pending_tool_calls": view.thread.pending,
        "tool_calls": list(calls.values()),
    }


def parse_ts(ts: str | None) -> datetime | None:
    """A record's timestamp, or None when there is none or it cannot be read."""
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _elapsed(origin: datetime | None, ts: str) -> float | None:
    moment = parse_ts(ts)
    if origin is None or moment is None:
        return None
    return float(round((moment - origin).total_seconds(), 6))
