"""The recovery planner and its guidance.

`make_plan` is a pure function of a `SessionView` (the session's files) and the operator's
resolutions: the same inputs give the same plan. `guidance` is a function of the plan alone,
byte for byte: no times, no PIDs, no temporary paths; its commands run exactly as printed
(they repeat `--root` when it was typed). No decision here looks at the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from handshake_cli.engine.jobs import ToolSpec
from handshake_cli.errors import IntegrityError, UsageError
from handshake_cli.recovery.mcp import journaled_specs
from handshake_cli.recovery.view import SessionView, SkippedCheckpoint
from handshake_cli.session.calls import in_doubt_calls
from handshake_cli.session.state import ACTIVE, BLOCKED, FAILED, PAUSED, TERMINAL
from handshake_cli.storage.journal.scan import DamageJson
from handshake_cli.vocabulary import Decision, PlanAction

# What recovery does with a call whose intent is on record but whose result is not.
# (vocabulary.Decision says what each means.)
RERUN = Decision.RERUN
RERUN_WITH_KEY = Decision.RERUN_WITH_KEY
PROBE = Decision.PROBE
BLOCK = Decision.BLOCK
RESOLVED_DONE = Decision.RESOLVED_DONE
RESOLVED_RETRY = Decision.RESOLVED_RETRY
# Blocks that `--accept-divergence` lifts: the deterministic model said something else, or an
# MCP server's tools are not the ones the session started with.
DIVERGENCES = ("model_divergence", "mcp_tools_changed")


class InDoubtJson(TypedDict):
    """A call in doubt as the plan's JSON shows it (and `recovery.started` records it)."""

    tool_call_id: str
    tool: str
    idempotency_key: str | None
    idempotency: str | None
    probe: bool
    decision: Decision


class InFlight(TypedDict):
    """The model turn a crash cut short: it is asked again."""

    turn: int | None  # its model.request's (read with .get: the fold and a checkpoint's check make it an int)
    request_seq: int | None


class PlanJson(TypedDict):
    """A recovery plan as `recover --json` and `inspect` show it (JSON.md)."""

    session_id: str
    state: str
    action: PlanAction
    reason: str
    in_doubt: list[InDoubtJson]
    in_flight: InFlight | None
    torn_tail: DamageJson | None
    checkpoint: str | None
    skipped_checkpoints: list[SkippedCheckpoint]
    resolutions: dict[str, str]
    verified_from_seq: int
    commands: list[str]


@dataclass(frozen=True)
class InDoubt:
    tool_call_id: str
    tool: str
    idempotency_key: str | None
    idempotency: str | None
    has_probe: bool
    decision: Decision

    def as_json(self) -> InDoubtJson:
        return {
            "tool_call_id": self.tool_call_id,
            "tool": self.tool,
            "idempotency_key": self.idempotency_key,
            "idempotency": self.idempotency,
            "probe": self.has_probe,
            "decision": self.decision,
        }


@dataclass
class Plan:
    session_id: str
    state: str
    action: PlanAction
    reason: str
    root_args: list[str]
    in_doubt: list[InDoubt] = field(default_factory=list)
    in_flight: InFlight | None = None
    torn_tail: DamageJson | None = None
    checkpoint: str | None = None
    skipped_checkpoints: list[SkippedCheckpoint] = field(default_factory=list)
    resolutions: dict[str, str] = field(default_factory=dict)
    blocked_detail: str = ""
    verified_from_seq: int = 1  # recovery checked every record from here on; inspect --verify checks all

    def as_json(self) -> PlanJson:
        return {
            "session_id": self.session_id,
            "state": self.state,
            "action": self.action,
            "reason": self.reason,
            "in_doubt": [call.as_json() for call in self.in_doubt],
            "in_flight": self.in_flight,
            "torn_tail": self.torn_tail,
            "checkpoint": self.checkpoint,
            "skipped_checkpoints": self.skipped_checkpoints,
            "resolutions": self.resolutions,
            "verified_from_seq": self.verified_from_seq,
            "commands": commands(self),
        }


def parse_resolutions(values: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        call, sep, verdict = value.partition("=")
        if not sep or not call or verdict not in ("done", "retry"):
            raise UsageError(f"--resolve takes CALL=done or CALL=retry, not {value!r}")
        if found.get(call, verdict) != verdict:
            raise UsageError(f"--resolve names {call} twice with different answers")
        found[call] = verdict
    return found


def make_plan(
    view: SessionView,
    root_args: list[str],
    *,
    resolutions: dict[str, str] | None = None,
    cancel: bool = False,
    accept_divergence: bool = False,
) -> Plan:
    resolutions = dict(resolutions or {})
    record, thread = view.record, view.thread
    plan = Plan(
        session_id=view.session_id,
        state=record.state,
        action=PlanAction.RESUME,
        reason="interrupted",
        root_args=root_args,
        torn_tail=view.torn_tail.as_json() if view.torn_tail else None,
        checkpoint=view.base.checkpoint_id if view.base else None,
        skipped_checkpoints=view.skipped,
        resolutions=resolutions,
        verified_from_seq=view.scanned_from,
    )
    if view.corruption:
        damage = view.corruption
        raise IntegrityError(
            f"session {plan.session_id}: the journal is corrupt at {damage.segment} byte {damage.offset} "
            f"({damage.detail}); recovery will not skip damaged records",
            guidance=corrupt_guidance(plan.session_id, root_args),
            details={"damage": damage.as_json()},
        )
    if record.state in TERMINAL:
        if resolutions or cancel:
            raise UsageError(
                f"session {plan.session_id} is {record.state}: there is nothing to resolve or cancel"
            )
        plan.action, plan.reason = PlanAction.NOTHING, "terminal"
        return plan
    if cancel:
        if resolutions:
            raise UsageError("--cancel and --resolve do not go together")
        plan.action, plan.reason = PlanAction.CANCEL, "cancel_requested"
        return plan
    if thread.in_flight:
        plan.in_flight = {
            "turn": thread.in_flight.get("turn"),
            "request_seq": thread.in_flight.get("request_seq"),
        }
    open_calls = in_doubt_calls(thread.pending)
    unknown = set(resolutions) - {str(call.get("tool_call_id")) for call in open_calls}
    if unknown:
        in_doubt = ", ".join(str(c.get("tool_call_id")) for c in open_calls) or "none"
        raise UsageError(
            f"--resolve names {', '.join(sorted(unknown))}, which is not in doubt (in doubt: {in_doubt})"
        )
    mcp_specs = journaled_specs(view) if open_calls and view.job.mcp else {}
    for call in open_calls:
        plan.in_doubt.append(_decide(view, call, resolutions, mcp_specs))
    if any(call.decision == BLOCK for call in plan.in_doubt):
        plan.action, plan.reason = PlanAction.BLOCKED, "in_doubt_tool_call"
        return plan
    last_block = _last_block_reason(view)
    if record.state == BLOCKED and last_block in DIVERGENCES and not accept_divergence:
        plan.action, plan.reason = PlanAction.BLOCKED, str(last_block)
        return plan
    reasons: dict[str, str] = {PAUSED: "paused", BLOCKED: "resolved", ACTIVE: "interrupted"}
    plan.reason = reasons.get(record.state, "not_started")
    return plan


def _decide(
    view: SessionView, call: Mapping[str, Any], resolutions: dict[str, str], mcp_specs: Mapping[str, ToolSpec]
) -> InDoubt:
    call_id = str(call.get("tool_call_id"))
    spec = view.job.tool(str(call.get("tool"))) or mcp_specs.get(str(call.get("tool")))
    idempotency = spec.idempotency if spec else None
    has_probe = bool(spec and (spec.probe or spec.probe_tool))
    if call_id in resolutions:
        decision = RESOLVED_DONE if resolutions[call_id] == "done" else RESOLVED_RETRY
    elif idempotency == "idempotent":
        decision = RERUN
    elif idempotency == "idempotent_with_key":
        decision = RERUN_WITH_KEY
    elif has_probe:
        decision = PROBE
    else:
        decision = BLOCK  # non_idempotent without a probe, or a tool the job no longer declares
    return InDoubt(
        call_id, str(call.get("tool")), call.get("idempotency_key"), idempotency, has_probe, decision
    )


def _last_block_reason(view: SessionView) -> str | None:
    for record in reversed(view.records):
        if record.type == "recovery.blocked":
            return str(record.data.get("reason"))
        if record.type == "session.state_change" and record.data.get("to") == ACTIVE:
            return None
    return None


def _command(plan: Plan, *words: str) -> str:
    return " ".join(["handshake", "recover", plan.session_id, *words, *plan.root_args])


def commands(plan: Plan) -> list[str]:
    """The exact commands that move a plan on, in the order guidance shows them."""
    if plan.action == PlanAction.BLOCKED and plan.reason == "in_doubt_tool_call":
        out = []
        for call in plan.in_doubt:
            if call.decision == BLOCK:
                out.append(_command(plan, "--resolve", f"{call.tool_call_id}=done"))
                out.append(_command(plan, "--resolve", f"{call.tool_call_id}=retry"))
        return [*out, _command(plan, "--cancel")]
    if plan.action == PlanAction.BLOCKED and plan.reason in DIVERGENCES:
        return [_command(plan, "--accept-divergence"), _command(plan, "--cancel")]
    return []


def guidance(plan: Plan) -> list[str]:
    """What happened and what moves it on; a function of the plan alone."""
    sid = plan.session_id
    if plan.action == PlanAction.BLOCKED and plan.reason == "in_doubt_tool_call":
        lines = [f"session {sid} is BLOCKED: a tool call may or may not have taken effect."]
        for call in plan.in_doubt:
            if call.decision != BLOCK:
                continue
            if not call.idempotency:
                why = "not declared by the session's job any more"
            elif call.has_probe:  # its probe was asked and could not tell
                why = f"{call.idempotency} and its probe could not tell whether it took effect"
            else:
                why = f"{call.idempotency} and has no probe"
            lines.append(
                f"  {call.tool_call_id} ({call.tool}) was started but its result was never recorded; "
                f"it is {why}."
            )
            lines.append(f"  its idempotency key: {call.idempotency_key}")
        for call in plan.in_doubt:
            if call.decision != BLOCK:
                continue
            lines.append("If it took effect, say so (add --result-file FILE to record what it returned):")
            lines.append("  " + _command(plan, "--resolve", f"{call.tool_call_id}=done"))
            lines.append("If it did not, run it again:")
            lines.append("  " + _command(plan, "--resolve", f"{call.tool_call_id}=retry"))
        lines.append("Or end the session:")
        lines.append("  " + _command(plan, "--cancel"))
        return lines
    if plan.action == PlanAction.BLOCKED and plan.reason == "model_divergence":
        return [
            f"session {sid} is BLOCKED: the model is deterministic, but asked again it did not repeat",
            "what it had streamed before the interruption, so the session cannot be replayed as it was.",
            "Accept the new answer, or end the session:",
            *(f"  {command}" for command in commands(plan)),
        ]
    if plan.action == PlanAction.BLOCKED and plan.reason == "mcp_tools_changed":
        return [
            f"session {sid} is BLOCKED: an MCP server no longer offers the tools the session started with",
            "(a tool is gone, or its input schema or annotations changed; `handshake inspect "
            f"{' '.join([sid, '--events', *plan.root_args])}` shows which), so its calls cannot be trusted.",
            "Accept what the server offers now, or end the session:",
            *(f"  {command}" for command in commands(plan)),
        ]
    return []


def corrupt_guidance(session_id: str, root_args: list[str]) -> list[str]:
    return [
        f"session {session_id} has damaged records in the middle of its journal; nothing was changed.",
        "See what is intact (the damage and everything before it):",
        "  " + " ".join(["handshake", "inspect", session_id, "--verify", *root_args]),
        "  " + " ".join(["handshake", "inspect", session_id, "--events", *root_args]),
        "Then continue from the last good checkpoint in a new session:",
        "  " + " ".join(["handshake", "recover", session_id, "--fork", f"{session_id}-fork", *root_args]),
    ]


def stopped_guidance(
    session_id: str, state: str, root_args: list[str], hint: str | None, *, indent: str = ""
) -> list[str]:
    """What to do after a run or a recovery that stopped (PAUSED) or failed; `run` prints the
    command flush (docs/JSON.md, `run --json`), `recover` indents it under its sentence."""
    if state == PAUSED:
        again = " ".join(["handshake", "recover", session_id, *root_args])
        return ["stopped at a safe boundary; resume it with:", f"{indent}{again}"]
    if state == FAILED:
        look = " ".join(["handshake", "inspect", session_id, *root_args])
        return [*([hint] if hint else []), "see what happened with:", f"{indent}{look}"]
    return []


def locked_guidance(session_id: str, root_args: list[str]) -> list[str]:
    return [
        "Another process is working on this session; wait for it to finish, then:",
        "  " + " ".join(["handshake", "inspect", session_id, *root_args]),
    ]
