"""A tool call's status is derived once (session/calls.py): the post-mortem fold, the
checkpoint-plus-tail reading of a long session and the recovery planner agree on which call
is in doubt, at every record of a session's history."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handshake_cli.session.calls import (
    ToolCallStatus,
    in_doubt_calls,
    ledger_status,
    open_call_status,
    status_seen,
)
from handshake_cli.session.history import calls_since_checkpoint, replay
from handshake_cli.session.thread import fold_thread
from handshake_cli.storage.journal.codec import Record


def _records(*items: tuple[str, dict[str, Any]]) -> list[Record]:
    return [
        Record(seq, "2026-01-01T00:00:00Z", kind, data, "", "", "", 0)
        for seq, (kind, data) in enumerate(items, 1)
    ]


def _asked(*ids: str) -> tuple[str, dict[str, Any]]:
    calls = [{"tool_call_id": i, "tool": "notify", "args": {}} for i in ids]
    return "model.completed", {"turn": 1, "message": {"role": "assistant", "tool_calls": calls}}


def _intent(call_id: str) -> tuple[str, dict[str, Any]]:
    return "tool.intent", {"tool_call_id": call_id, "tool": "notify", "args": {}, "idempotency_key": "k"}


def _result(call_id: str, *, error: str | None = None) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"tool_call_id": call_id, "tool": "notify"}
    data.update({"error": error} if error else {"output": "ok"})
    return "tool.result", data


ITEMS = (
    ("session.created", {"prompt": {"user": "go"}}),
    _asked("a", "b", "c"),
    _intent("a"),
    _result("a"),
    _intent("b"),
    _result("b", error="boom"),
    _intent("c"),
    ("operator.resolution", {"tool_call_id": "c", "resolution": "retry", "by": "op"}),
    _intent("c"),
    _result("c"),
)
HISTORY = _records(*ITEMS)


@pytest.mark.parametrize("upto", range(1, len(HISTORY) + 1))
def test_the_fold_and_the_planner_agree_on_what_is_in_doubt(upto: int) -> None:
    records = HISTORY[:upto]
    history = replay(records)
    folded = {c["tool_call_id"] for c in history.tool_calls.values() if c["state"] == ToolCallStatus.IN_DOUBT}
    planned = {str(call["tool_call_id"]) for call in in_doubt_calls(fold_thread(records).pending)}
    assert folded == planned


@pytest.mark.parametrize("cut", range(1, len(HISTORY)))
def test_a_checkpoint_and_its_tail_tell_what_the_whole_journal_tells(cut: int) -> None:
    """What inspect shows for a long session (the checkpoint's ledger and open calls, then
    the records after it) gives every call the status the full replay gives it."""
    whole = replay(HISTORY).tool_calls
    base = fold_thread(HISTORY[:cut])
    tail = replay(HISTORY[cut:])
    seen = calls_since_checkpoint(fold_thread(HISTORY[cut:], base=base), tail)
    for call_id, call in seen.items():
        assert call["state"] == whole[call_id]["state"], call_id


def test_statuses_are_the_same_json_bytes_as_plain_strings() -> None:
    calls = list(replay(HISTORY).tool_calls.values())
    assert [c["state"] for c in calls] == ["done", "failed", "done"]
    assert json.dumps(calls) == json.dumps([{**c, "state": str(c["state"].value)} for c in calls])


def test_an_operator_done_resolves_and_a_live_writer_runs() -> None:
    records = _records(*ITEMS[:7], ("operator.resolution", {"tool_call_id": "c", "resolution": "done"}))
    assert replay(records).tool_calls["c"]["state"] == ToolCallStatus.RESOLVED
    assert status_seen(ToolCallStatus.IN_DOUBT, writer_live=True) == "running"
    assert status_seen(ToolCallStatus.IN_DOUBT, writer_live=False) == "in_doubt"
    assert status_seen(ToolCallStatus.PENDING, writer_live=True) == "pending"
    assert open_call_status({"tool_call_id": "x"}) == "pending"
    assert open_call_status({"tool_call_id": "x", "intent_seq": 4}) == "in_doubt"
    assert ledger_status({"outcome": "failed"}) == "failed" and ledger_status({"outcome": "done"}) == "done"
