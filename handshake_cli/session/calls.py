"""A tool call's status: the one rule that `inspect`, `inspect --at` and the recovery planner
apply, so they never disagree about which call is in doubt.

A call is *pending* once the model asks for it, *in doubt* once its intent is journaled
(it may or may not have happened), and *done* or *failed* once its result is. An operator's
`done` makes it *resolved*. A reader that sees a live writer holding the session shows an
in-doubt call as *running*: the writer is running it now.

The status is a `str` (a StrEnum), so the JSON `inspect` writes is the same bytes as ever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Required, TypedDict


class ToolCallStatus(StrEnum):
    PENDING = "pending"  # the model asked for it; no intent journaled yet
    IN_DOUBT = "in_doubt"  # intent journaled, no result: it may or may not have happened
    RUNNING = "running"  # in doubt while a live writer holds the session: it is being run
    DONE = "done"  # its result is journaled
    FAILED = "failed"  # its result is journaled, and is an error
    RESOLVED = "resolved"  # an operator said it took effect


class Resolution(TypedDict):
    """What an operator said about a call (`operator.resolution`)."""

    resolution: Any  # "done" | "retry"
    by: Any


class ToolCall(TypedDict, total=False):
    """A tool call as `inspect` reports it (JSON.md: the `tool_calls` of `inspect SESSION`).

    Keys appear in the order the journal reveals them, and that order is the JSON's."""

    tool_call_id: Required[str]
    tool: Any
    args: Any
    idempotency_key: Any
    side_effect: Any
    idempotency: Any
    mcp: Any  # an MCP tool's {server, origin}: JSON.md
    state: ToolCallStatus
    intent_seq: int
    result_seq: int
    evidence: Any
    resolution: Resolution


def open_call_status(call: Mapping[str, Any]) -> ToolCallStatus:
    """A call the model asked for that has no result yet (one of `Thread.pending`): in doubt
    once its intent is journaled, else pending."""
    return ToolCallStatus.IN_DOUBT if call.get("intent_seq") else ToolCallStatus.PENDING


def in_doubt_calls(pending: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The calls among `pending` that are in doubt, in order."""
    return [call for call in pending if open_call_status(call) == ToolCallStatus.IN_DOUBT]


def result_status(error: object, resolution: Resolution | None) -> ToolCallStatus:
    """A call whose `tool.result` is journaled: resolved when an operator said `done` before it
    (the result recovery then writes), failed when the result is an error, else done."""
    if resolution is not None and resolution.get("resolution") == "done":
        return ToolCallStatus.RESOLVED
    return ToolCallStatus.FAILED if error else ToolCallStatus.DONE


def resolved_status(current: ToolCallStatus, resolution: object) -> ToolCallStatus:
    """After an `operator.resolution`: `done` resolves the call; `retry` leaves its status."""
    return ToolCallStatus.RESOLVED if resolution == "done" else current


def ledger_status(entry: Mapping[str, Any]) -> ToolCallStatus:
    """A finished call as a checkpoint's ledger records it (its `outcome`)."""
    return ToolCallStatus.FAILED if entry.get("outcome") == "failed" else ToolCallStatus.DONE


def status_seen(status: ToolCallStatus, writer_live: bool) -> ToolCallStatus:
    """The status a reader shows: with a live writer holding the session, an open intent is
    being run, not in doubt."""
    return ToolCallStatus.RUNNING if writer_live and status == ToolCallStatus.IN_DOUBT else status
