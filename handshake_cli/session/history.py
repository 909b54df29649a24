"""What the journal says happened: the message thread and the state of every tool call.

A pure fold over records for `inspect`. The thread itself comes from `thread.Thread`, the
same fold the runner and checkpoints use; this adds each tool call's state as a person
reading the post-mortem wants it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.session.thread import Thread
from handshake_cli.storage.journal.codec import Record

# Tool call states as inspect reports them.
PENDING = "pending"  # the model asked for it; no intent journaled yet
IN_DOUBT = "in_doubt"  # intent journaled, no result: it may or may not have happened
DONE = "done"
FAILED = "failed"
RESOLVED = "resolved"  # an operator said what happened


@dataclass
class History:
    thread: Thread = field(default_factory=Thread)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)

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
            resolved = (entry.get("resolution") or {}).get("resolution") == "done"
            entry["state"] = RESOLVED if resolved else FAILED if data.get("error") else DONE
            entry["result_seq"] = record.seq
            if data.get("evidence"):
                entry["evidence"] = data["evidence"]
        elif kind == "operator.resolution":
            call_id = str(data.get("tool_call_id"))
            if call_id in self.tool_calls:
                entry = self.tool_calls[call_id]
                entry["state"] = RESOLVED if data.get("resolution") == "done" else entry["state"]
                entry["resolution"] = {"resolution": data.get("resolution"), "by": data.get("by")}


def replay(records: Iterable[Record]) -> History:
    history = History()
    for record in records:
        history.apply(record)
    return history
