"""The history section of `inspect SESSION`: the processes that wrote a session, in words.

A pure function of the `history` field (docs/JSON.md, from `session/story`): one line per
process (who, when, which records, how it ended), then, indented, what a recovery found and
what it decided for each call in doubt. A session written by one process that never crashed
takes one line. Lines stay near 80 columns: a process's ending goes on a line of its own.
"""

from __future__ import annotations

from typing import Any

_DECISION = {
    "rerun": "idempotent: run again",
    "rerun_with_key": "run again with the same key",
    "block": "must not run twice and has no probe: left to an operator",
}


def history_lines(history: dict[str, Any]) -> list[str]:
    processes = history["processes"]
    crashes = history["crashes"]
    complete = history["complete"]
    if len(processes) == 1 and crashes == 0 and complete:
        only = processes[0]
        return [f"history     one process ({only['kind']}, {_who(only)}), never crashed: {_ending(only)}"]
    if crashes:
        crashed = f"{crashes} crashed"
    else:  # a journal that cannot be read to its end may hide a crash
        crashed = "never crashed" if complete else "no crash in what can be read"
    counted = f"{len(processes)} process{'es' if len(processes) != 1 else ''}, {crashed}"
    lines = [f"history ({counted})"]
    if history.get("partial"):
        lines.append(f"  partial: {history['partial']}")
    for number, process in enumerate(processes, 1):
        first, last = process["first_seq"], process["last_seq"]
        seqs = f"seq {first}" if first == last else f"seq {first}-{last}"
        lines.append(f"  {number}. {process['kind']}, {_who(process)}, {_span(process)} ({seqs})")
        lines.append(f"     {_ending(process)}")
        lines.extend(f"     {line}" for line in _details(process))
    return lines


def _who(process: dict[str, Any]) -> str:
    if process["pid"] is None:
        return "pid not recorded"
    return f"pid {process['pid']} on {process['host'] or '?'}"


def _time(ts: str | None) -> str:
    return "?" if not ts else ts[:19].replace("T", " ")


def _span(process: dict[str, Any]) -> str:
    start, end = _time(process["started_at"]), _time(process["ended_at"])
    if end[:10] == start[:10] and end != "?":
        end = end[11:]
    return f"{start} to {end}"


def _ending(process: dict[str, Any]) -> str:
    ending, reason = process["ending"], process["reason"]
    because = f" ({reason})" if reason else ""
    if ending == "crashed":
        last = process["last_record"]
        what = last["type"] or "a record not read here"
        return f"CRASHED after seq {last['seq']} ({what}): no ending on record"
    if ending == "paused":
        return f"stopped at a boundary{because}"
    if ending == "repaired":
        return "cut a torn tail; nothing else to do"
    if ending == "checkpointed":
        return f"took a checkpoint{because}"
    if ending == "forked":
        origin = process.get("forked_from") or {}
        source, covers = origin.get("session_id", "?"), origin.get("covers_seq")
        return f"made this session from {source} (up to its seq {covers})"
    if ending == "running":
        return "still running (it holds the lock)"
    if ending == "damaged":
        return f"unknown: {reason}, nothing after seq {process['last_seq']} can be read"
    if ending == "open":
        return "closed the thread"
    return f"{ending}{because}"


def _details(process: dict[str, Any]) -> list[str]:
    lines = []
    found = process["found"]
    if found is not None and process["kind"] == "recover":
        base = f"checkpoint {found['checkpoint']}" if found["checkpoint"] else "record 1"
        doubt = len(found["in_doubt"])
        lines.append(
            f"found: plan {found['action']} ({found['reason']}) from {base}, "
            + (f"{doubt} call{'s' if doubt != 1 else ''} in doubt" if doubt else "no call in doubt")
        )
        if found.get("accept_divergence"):
            lines.append("with --accept-divergence: a model or MCP server that changed is taken as it is")
        for skipped in found["skipped_checkpoints"]:
            lines.append(f"skipped checkpoint {skipped.get('checkpoint_id')}: {skipped.get('reason')}")
        for server in found["stopped_mcp_servers"]:
            lines.append(f"stopped MCP server {server.get('server')} left running (pid {server.get('pid')})")
    torn = process["torn_tail"]
    if torn is not None:
        where = f"{torn['segment']} at byte {torn['offset']} ({torn['length']} bytes)"
        lines.append(f"a torn record after seq {process['last_seq']}: {where}")
        quarantined = torn.get("quarantined")
        lines.append(f"  cut into {quarantined}" if quarantined else "  not cut yet (recover cuts it)")
    if found is not None and process["kind"] == "langgraph" and found.get("repaired_torn_tail"):
        torn = found["repaired_torn_tail"]
        lines.append(f"cut a torn tail: {torn.get('segment')} at byte {torn.get('offset')}")
    lines.extend(_decision(call) for call in process["decisions"])
    lines.extend(_event(event) for event in process["events"] if _event(event))
    return lines


def _decision(call: dict[str, Any]) -> str:
    head = f"{call['tool_call_id']} {call['tool'] or '?'}: "
    decision = call["decision"]
    if decision == "probe":
        answer = {
            "happened": f"its probe said it happened (result at seq {call['seq']})",
            "not_happened": "its probe said it did not happen",
            "inconclusive": "its probe was inconclusive: blocked",
        }.get(call["probe"] or "", "probed, no answer on record")
        text = answer
    elif decision in ("resolved_done", "resolved_retry"):
        said = "done" if decision == "resolved_done" else "retry"
        if call["resolution"] is None:
            text = f"an operator said {said}, not on record before the process ended"
        else:
            text = f"an operator said {call['resolution']} ({call['by'] or '?'}, seq {call['seq']})"
    else:
        text = _DECISION.get(decision, decision)
    if call["rerun_seq"] is not None:
        result = (
            f": {call['result']} (seq {call['result_seq']})" if call["result"] else ", no result on record"
        )
        text += f"; ran again at seq {call['rerun_seq']}{result}"
    elif decision in ("rerun", "rerun_with_key", "resolved_retry") or call["probe"] == "not_happened":
        text += "; not run again before the process ended"
    return head + text


def _event(event: dict[str, Any]) -> str:
    kind = event["kind"]
    if kind == "blocked" and event.get("detail") and event["detail"] != event.get("reason"):
        return f"blocked at seq {event['seq']}: {event['detail']}"
    if kind == "divergence":
        return f"turn {event.get('turn')}: the model did not repeat what it had streamed (seq {event['seq']})"
    if kind == "accepted_divergence":
        return f"accepted MCP server {event.get('server')}'s changed tools (seq {event['seq']})"
    if kind == "resumed":
        flight = event.get("in_flight") or {}
        again = f", asking turn {flight.get('turn')} again" if flight else ""
        replay = " (the model must repeat its streamed text)" if event.get("replaying") else ""
        return f"resumed at seq {event['seq']}{again}{replay}"
    return ""
