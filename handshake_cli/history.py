"""What the journal says happened: the message thread and the state of every tool call.

A pure fold over records, shared by `inspect`, checkpoints and recovery, so that all of
them tell the same story.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .journal import Record

# Tool call states as inspect reports them.
PENDING = "pending"  # the model asked for it; no intent journaled yet
IN_DOUBT = "in_doubt"  # intent journaled, no result: it may or may not have happened
DONE = "done"
FAILED = "failed"
RESOLVED = "resolved"  # an operator said what happened


@dataclass
class History:
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    turns: int = 0

    def apply(self, record: Record) -> None:
        data = record.data
        kind = record.type
        if kind == "session.created":
            prompt = data.get("prompt") or {}
            if prompt.get("system"):
                self.messages.append({"role": "system", "content": prompt["system"]})
            if prompt.get("user"):
                self.messages.append({"role": "user", "content": prompt["user"]})
        elif kind == "model.completed":
            self.turns += 1
            message = dict(data.get("message") or {})
            message.setdefault("role", "assistant")
            self.messages.append(message)
            for call in message.get("tool_calls") or []:
                call_id = call.get("tool_call_id")
                if call_id and call_id not in self.tool_calls:
                    self.tool_calls[call_id] = {
                        "tool_call_id": call_id,
                        "tool": call.get("tool"),
                        "args": call.get("args"),
                        "state": PENDING,
                    }
        elif kind == "tool.intent":
            call_id = str(data.get("tool_call_id"))
            entry = self.tool_calls.setdefault(call_id, {"tool_call_id": call_id})
            entry.update(
                {
                    key: data.get(key)
                    for key in ("tool", "args", "idempotency_key", "side_effect", "idempotency")
                }
            )
            entry["state"] = IN_DOUBT
            entry["intent_seq"] = record.seq
        elif kind == "tool.result":
            call_id = str(data.get("tool_call_id"))
            entry = self.tool_calls.setdefault(call_id, {"tool_call_id": call_id, "tool": data.get("tool")})
            entry["state"] = FAILED if data.get("error") else DONE
            entry["result_seq"] = record.seq
            if data.get("evidence"):
                entry["evidence"] = data["evidence"]
            content = data.get("output") if not data.get("error") else {"error": data["error"]}
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind == "operator.resolution":
            call_id = data.get("tool_call_id")
            if call_id in self.tool_calls:
                entry = self.tool_calls[call_id]
                entry["state"] = RESOLVED if data.get("resolution") == "done" else entry["state"]
                entry["resolution"] = {"resolution": data.get("resolution"), "by": data.get("by")}

    def calls_in(self, state: str) -> list[dict[str, Any]]:
        return [call for call in self.tool_calls.values() if call.get("state") == state]


def replay(records: Iterable[Record]) -> History:
    history = History()
    for record in records:
        history.apply(record)
    return history
