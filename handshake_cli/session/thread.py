"""The conversation as the model sees it, folded from journal records.

One fold serves the live runner, checkpoints, `checkpoint` on a stopped session, recovery
and `inspect`, so they all tell the same story: the message thread, the tool calls the
model asked for and that have not finished (pending, in order), the ledger of finished
calls, and the model turn in flight, if any.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.storage.journal.codec import Record, json_encoder

_CANONICAL = json_encoder(sort_keys=True, ensure_ascii=False, allow_nan=True)
_CANONICAL_ASCII = json_encoder(sort_keys=True, ensure_ascii=True, allow_nan=True)


def canonical(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8; all-ASCII escapes when a lone surrogate would make the
    UTF-8 invalid. The same value always gives the same bytes, on every machine."""
    try:
        return _CANONICAL(value).encode("utf-8")
    except UnicodeEncodeError:
        return _CANONICAL_ASCII(value).encode("ascii")


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def result_part(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a tool.result that the model sees: its output, or its error."""
    return {key: data[key] for key in ("output", "error") if key in data}


def tool_message(tool_call_id: str, data: dict[str, Any]) -> dict[str, Any]:
    content = {"error": data["error"]} if data.get("error") else data.get("output")
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


@dataclass
class Thread:
    messages: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)  # finished tool calls, in order
    pending: list[dict[str, Any]] = field(default_factory=list)  # asked for, not finished, in order
    turn: int = 0  # model turns completed
    # {"turn", "request_seq", "segment", "offset", "streamed"} while a model call streams
    in_flight: dict[str, Any] | None = None
    # Model calls that gave no answer, in order: what they streamed stays in the journal
    # between `request_seq` and `ended_seq`, and joins no message.
    abandoned: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, record: Record) -> None:
        data = record.data
        kind = record.type
        if kind == "session.created":
            prompt = data.get("prompt") or {}
            if prompt.get("system"):
                self._add_message({"role": "system", "content": prompt["system"]})
            if prompt.get("user"):
                self._add_message({"role": "user", "content": prompt["user"]})
        elif kind == "model.request":
            if self.in_flight is not None:  # asked again after a crash: the old call was lost
                self._abandon(record, "process_stopped")
            self.in_flight = {
                "turn": data.get("turn"),
                "request_seq": record.seq,
                "segment": record.segment,
                "offset": record.offset,
                "streamed": False,
            }
        elif kind == "model.chunk" or kind == "model.tool_call_chunk":
            if self.in_flight is not None:
                self.in_flight["streamed"] = True
        elif kind == "model.stream_aborted":
            if self.in_flight is not None:
                self._abandon(record, str(data.get("reason", "")))
            self.in_flight = None
        elif kind == "model.completed":
            message = dict(data.get("message") or {})
            message.setdefault("role", "assistant")
            self._add_message(message)
            self.turn = int(data.get("turn", self.turn + 1))
            self.pending = [dict(call) for call in message.get("tool_calls") or []]
            self.in_flight = None
        elif kind == "tool.intent":
            for call in self.pending:
                if call.get("tool_call_id") == data.get("tool_call_id"):
                    call["idempotency_key"] = data.get("idempotency_key")
                    call["intent_seq"] = record.seq
        elif kind == "tool.result":
            self.finish(str(data.get("tool_call_id")), data)

    def _abandon(self, record: Record, reason: str) -> None:
        """A call that streamed something and gave no answer joins `abandoned`; one that
        streamed nothing (it never connected, or the server refused it) is no abandoned
        stream: its attempts are `model.retry` records. (A checkpoint of an older version
        does not say whether its call streamed: it counts as having streamed.)"""
        flight = self.in_flight or {}
        if not flight.get("streamed", True):
            return
        self._add_abandoned(
            {
                "turn": flight.get("turn"),
                "reason": reason,
                "request_seq": flight.get("request_seq"),
                "ended_seq": record.seq,
                "segment": flight.get("segment"),
                "offset": flight.get("offset"),
            }
        )

    # Where the fold adds to the three growing parts (a LazyThread keeps them aside until read).
    def _add_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def _add_ledger(self, entry: dict[str, Any]) -> None:
        self.ledger.append(entry)

    def _add_abandoned(self, entry: dict[str, Any]) -> None:
        self.abandoned.append(entry)

    @property
    def answered(self) -> bool:
        """The model's last turn made no tool calls: the session has its answer."""
        last = self.messages[-1] if self.messages else None
        return bool(
            last and last.get("role") == "assistant" and not last.get("tool_calls") and self.in_flight is None
        )

    def finish(self, tool_call_id: str, data: dict[str, Any]) -> None:
        """Record a call's result: a tool message for the model and a ledger entry."""
        call = next((c for c in self.pending if c.get("tool_call_id") == tool_call_id), {})
        self.pending = [c for c in self.pending if c.get("tool_call_id") != tool_call_id]
        self._add_message(tool_message(tool_call_id, data))
        self._add_ledger(
            {
                "tool_call_id": tool_call_id,
                "tool": data.get("tool", call.get("tool")),
                "idempotency_key": call.get("idempotency_key"),
                "outcome": "failed" if data.get("error") else "done",
                "result_hash": digest(result_part(data)),
            }
        )


Parts = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


class LazyThread(Thread):
    """A thread read from a checkpoint whose messages, ledger and abandoned calls are read
    (and checked) only when first used: `load` gives the three parts as the checkpoint holds
    them, or raises. Everything else (pending calls, turn, the call in flight) is at hand,
    and what the fold adds after the checkpoint is kept aside until the parts are read, so
    planning a recovery never decodes a long session's history."""

    def __init__(
        self,
        load: Callable[[], Parts],
        pending: list[dict[str, Any]],
        turn: int,
        in_flight: dict[str, Any] | None,
    ) -> None:
        self._load: Callable[[], Parts] | None = load
        self._added: Parts = ([], [], [])
        self.pending = pending
        self.turn = turn
        self.in_flight = in_flight

    @property
    def loaded(self) -> bool:
        return self._load is None

    def _parts(self) -> Parts:
        if self._load is not None:
            messages, ledger, abandoned = self._load()
            for part, added in zip((messages, ledger, abandoned), self._added, strict=True):
                part.extend(added)
            self._added = (messages, ledger, abandoned)
            self._load = None
        return self._added

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._parts()[0]

    @messages.setter
    def messages(self, value: list[dict[str, Any]]) -> None:
        self._set(0, value)

    @property
    def ledger(self) -> list[dict[str, Any]]:
        return self._parts()[1]

    @ledger.setter
    def ledger(self, value: list[dict[str, Any]]) -> None:
        self._set(1, value)

    @property
    def abandoned(self) -> list[dict[str, Any]]:
        return self._parts()[2]

    @abandoned.setter
    def abandoned(self, value: list[dict[str, Any]]) -> None:
        self._set(2, value)

    def _set(self, index: int, value: list[dict[str, Any]]) -> None:
        parts = list(self._parts())
        parts[index] = value
        self._added = (parts[0], parts[1], parts[2])

    def _add_message(self, message: dict[str, Any]) -> None:
        self._added[0].append(message)

    def _add_ledger(self, entry: dict[str, Any]) -> None:
        self._added[1].append(entry)

    def _add_abandoned(self, entry: dict[str, Any]) -> None:
        self._added[2].append(entry)


def fold_thread(records: list[Record], base: Thread | None = None) -> Thread:
    thread = base or Thread()
    for record in records:
        thread.apply(record)
    return thread


def named_artifacts(value: Any) -> list[str]:
    """Artifact ids a record's data names: a tool result's large output kept outside the
    record (`*artifact_id`), and a LangGraph value reference's `artifact`."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if (key == "artifact" or key.endswith("artifact_id")) and isinstance(item, str):
                found.append(item)
            else:
                found.extend(named_artifacts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(named_artifacts(item))
    return found
