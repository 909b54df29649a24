"""The timeline's story in sentences: what a process was doing when it died, how it ended,
what each recovery found and decided, for a person who has not read the journal's JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from handshake_cli.readers.timeline.fold import STREAMED
from handshake_cli.storage.journal.codec import Record

if TYPE_CHECKING:
    from handshake_cli.readers.timeline.fold import Call

# What a recovery's decision means, for a person who has not read DESIGN.md.
DECISION_WORDS = {
    "rerun": "ran it again (the tool is idempotent)",
    "rerun_with_key": "ran it again with the same idempotency key",
    "probe": "asked its probe whether it had happened",
    "block": "blocked: only an operator can say whether it happened",
    "resolved_done": "an operator said it had happened: recorded, not run again",
    "resolved_retry": "an operator said it had not happened: ran it again",
}
PROBE_WORDS = {
    "happened": (
        "the probe said it had happened: its result was recorded from the probe, the call was not run again"
    ),
    "not_happened": "the probe said it had not happened: the call ran",
    "inconclusive": "the probe gave no answer: the session blocked",
}
ENDING_WORDS = {
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "paused": "stopped at a safe boundary",
    "blocked": "blocked, waiting for an operator",
    "repaired": "repaired the journal; nothing else to do",
    "checkpointed": "took its checkpoint",
    "forked": "made this session as a fork",
    "open": "closed the thread",
    "running": "still running (a live process holds the lock)",
    "crashed": "crashed: no ending record",
    "damaged": "the journal is damaged after its last intact record",
}


def decision_words(decision: dict[str, Any]) -> str:
    """What a recovery decided for one call, and what came of it, in a sentence."""
    chosen = str(decision.get("decision"))
    words = DECISION_WORDS.get(chosen, chosen)
    probe = decision.get("probe")
    if chosen == "probe" and probe in PROBE_WORDS:
        words = PROBE_WORDS[str(probe)]
    elif chosen == "resolved_done" and decision.get("by"):
        words = f"an operator ({decision['by']}) said it had happened: recorded, not run again"
    result = decision.get("result")
    if result and chosen not in ("resolved_done",) and probe != "happened":
        words += f"; it {'failed' if result == 'failed' else 'finished'}"
    return words


def narrate(lane: dict[str, Any], *, calls_by_id: dict[str, Call]) -> list[str]:
    """A process's part of the story, in sentences a newcomer reads without the JSON."""
    who = str(lane.get("kind"))
    if lane.get("pid") is not None:
        who += f" (pid {lane['pid']}" + (f" on {lane['host']})" if lane.get("host") else ")")
    span = f"records {lane['first_seq']} to {lane['last_seq']}"
    ending = str(lane.get("ending"))
    said = ENDING_WORDS.get(ending, ending)
    if lane.get("reason") and ending not in ("crashed", "running"):
        said += f" ({lane['reason']})"
    lines = [f"{who}, {span}: {said}."]
    if lane.get("after_seconds") is not None:
        gap = _duration(lane["after_seconds"])
        lines.append(f"It began {gap} after the last record of the process before.")
    if ending == "crashed":
        last = lane["last_record"]
        lines.append(f"It died after record {last['seq']}, {last['what'] or last['type']}.")
        for call in calls_by_id.values():
            open_here = [s for s in call.intents if lane["first_seq"] <= s <= lane["last_seq"]]
            result_here = call.result_seq is not None and call.result_seq <= lane["last_seq"]
            if open_here and not result_here:
                lines.append(
                    f"{call.tool} ({call.tool_call_id}) was in doubt: its intent is on record "
                    f"(seq {open_here[-1]}), its result is not."
                )
    torn = lane.get("torn_tail")
    if torn:
        where = f"{torn.get('length')} bytes at byte {torn.get('offset')} of {torn.get('segment')}"
        if torn.get("quarantined"):
            lines.append(
                f"Its last write was torn: the next recovery cut {where} into {torn['quarantined']}."
            )
        else:
            lines.append(f"Its last write was torn ({where}): `handshake recover` cuts it off.")
    found = lane.get("found")
    if found:
        lines.append(f"Plan: {found.get('action')} ({found.get('reason')}).")
        if found.get("accept_divergence"):
            lines.append("It was told to take the model's new answer (--accept-divergence).")
        for server in found.get("stopped_mcp_servers") or []:
            lines.append(
                f"It stopped MCP server {server.get('server')} (pid {server.get('pid')}), "
                "which the process before had left running."
            )
        for skipped in found.get("skipped_checkpoints") or []:
            lines.append(f"Skipped checkpoint {skipped.get('checkpoint_id')}: {skipped.get('reason')}.")
    for decision in lane.get("decisions") or []:
        lines.append(f"{decision.get('tool')} ({decision['tool_call_id']}): {decision_words(decision)}.")
    for event in lane.get("events") or []:
        if event.get("kind") == "divergence":
            lines.append(f"The model did not repeat what it had streamed for turn {event.get('turn')}.")
        elif event.get("kind") == "accepted_divergence":
            lines.append("A changed MCP tool list was accepted (--accept-divergence).")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def what(record: Record) -> str:
    data = record.data
    if record.type in ("tool.intent", "tool.result"):
        return f"{record.type} of {data.get('tool')} ({data.get('tool_call_id')})"
    if record.type in STREAMED or record.type in ("model.request", "model.completed"):
        return f"{record.type} of turn {data.get('turn')}"
    if record.type == "checkpoint.created":
        return f"checkpoint {data.get('checkpoint_id')} ({data.get('reason')})"
    return record.type
