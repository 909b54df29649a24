"""What the journal says happened: the message thread and every tool call with its status.

A pure fold over records for `inspect`. The thread itself comes from `thread.Thread`, the
same fold the runner and checkpoints use; this adds each tool call as a person reading the
post-mortem wants it, its status by the rule in `calls`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.session.calls import (
    ToolCall,
    ToolCallStatus,
    ledger_status,
    open_call_status,
    resolved_status,
    result_status,
)
from handshake_cli.session.thread import Thread
from handshake_cli.storage.journal.codec import Record


@dataclass
class History:
    thread: Thread = field(default_factory=Thread)
    tool_calls: dict[str, ToolCall] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.thread.messages

    @property
    def turns(self) -> int:
        return self.thread.turn

    def apply(self, record: Record) -> None:
        self.thread.apply(record)
        data = record.data
        kind = record.type
        if kind == "model.completed":
            for call in (data.get("message") or {}).get("tool_calls") or []:
                call_id = call.get("tool_call_id")
                if call_id and call_id not in self.tool_calls:
                    self.tool_calls[call_id] = {
                        "tool_call_id": call_id,
                        "tool": call.get("tool"),
                        "args": call.get("args"),
                        "state": ToolCallStatus.PENDING,
                    }
        elif kind == "tool.intent":
            call_id = str(data.get("tool_call_id"))
            entry = self.tool_calls.setdefault(call_id, {"tool_call_id": call_id})
            entry["tool"] = data.get("tool")
            entry["args"] = data.get("args")
            entry["idempotency_key"] = data.get("idempotency_key")
            entry["side_effect"] = data.get("side_effect")
            entry["idempotency"] = data.get("idempotency")
            if "mcp" in data:  # an MCP tool: its server and where each declaration came from
                entry["mcp"] = data["mcp"]
            entry["state"] = ToolCallStatus.IN_DOUBT
            entry["intent_seq"] = record.seq
        elif kind == "tool.result":
            call_id = str(data.get("tool_call_id"))
            entry = self.tool_calls.setdefault(call_id, {"tool_call_id": call_id, "tool": data.get("tool")})
            entry["state"] = result_status(data.get("error"), entry.get("resolution"))
            entry["result_seq"] = record.seq
            if data.get("evidence"):
                entry["evidence"] = data["evidence"]
        elif kind == "operator.resolution":
            call_id = str(data.get("tool_call_id"))
            if call_id in self.tool_calls:
                entry = self.tool_calls[call_id]
                entry["state"] = resolved_status(entry["state"], data.get("resolution"))
                entry["resolution"] = {"resolution": data.get("resolution"), "by": data.get("by")}


def replay(records: Iterable[Record]) -> History:
    history = History()
    for record in records:
        history.apply(record)
    return history


def calls_since_checkpoint(thread: Thread, tail: History) -> dict[str, ToolCall]:
    """Every tool call of a session read from a checkpoint on: finished ones from the
    checkpoint's ledger, open ones from the thread, with the details the records after the
    checkpoint (`tail`, their replay) add."""
    calls: dict[str, ToolCall] = {}
    for entry in thread.ledger:
        calls[entry["tool_call_id"]] = {
            "tool_call_id": entry["tool_call_id"],
            "tool": entry.get("tool"),
            "idempotency_key": entry.get("idempotency_key"),
            "state": ledger_status(entry),
        }
    for call in thread.pending:
        calls[call["tool_call_id"]] = {
            "tool_call_id": call["tool_call_id"],
            "tool": call.get("tool"),
            "args": call.get("args"),
            "idempotency_key": call.get("idempotency_key"),
            "state": open_call_status(call),
        }
    for call_id, detail in tail.tool_calls.items():
        if call_id in calls:
            calls[call_id] = {**calls[call_id], **detail}
    return calls
