"""The recovery executor: carries a plan out under the session's lock, and journals every
step (`recovery.started`, `operator.resolution`, `recovery.resumed`, `recovery.blocked`).

It plans under the lock, repairs a torn tail first (the bytes go to quarantine/, never
deleted), then opens the session's writer, resolves in-doubt tool calls as the plan says
(probe, operator's answer, or a rerun with the same key), and hands the writer to the same
runner `handshake run` uses, so a recovery can itself crash and be recovered. A tool call
whose result is on record is never run again. Recovering a session whose plan is unchanged
writes nothing: doing it twice is harmless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handshake_cli import faults
from handshake_cli.errors import ExitCode, HandshakeError, SessionLocked, UsageError
from handshake_cli.recovery.mcp import Restarted, journaled_listings, restart, stop_left_behind
from handshake_cli.recovery.plan import (
    BLOCK,
    PROBE,
    RESOLVED_DONE,
    RESOLVED_RETRY,
    Plan,
    guidance,
    locked_guidance,
    make_plan,
    stopped_guidance,
)
from handshake_cli.recovery.view import SessionView, in_flight_text, rebuild
from handshake_cli.session.state import ACTIVE, BLOCKED, CANCELLED, refresh_head
from handshake_cli.storage import lock as session_lock
from handshake_cli.storage.contract import Lease, SessionStore
from handshake_cli.vocabulary import PlanAction

if TYPE_CHECKING:
    from handshake_cli.engine.loop import Observer, Runner
    from handshake_cli.engine.writer import SessionWriter
    from handshake_cli.storage.contract import TailRepair

# The runner, the providers, the writer and the tail's repair are imported where a recovery
# runs: a dry run plans from the files and needs none of them.


@dataclass
class RecoveryResult:
    plan: Plan
    state: str
    exit_code: int
    executed: bool  # False for --dry-run and for plans that needed no writes
    guidance: list[str] = field(default_factory=list)
    detail: str = ""
    # MCP servers a killed run or recovery left running, stopped before anything else
    stopped_mcp_servers: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.plan.as_json(),
            "state_after": self.state,
            "exit_code": self.exit_code,
            "executed": self.executed,
            "detail": self.detail,
            "stopped_mcp_servers": self.stopped_mcp_servers,
        }


@dataclass
class Options:
    resolutions: dict[str, str] = field(default_factory=dict)
    result_file: str | None = None
    cancel: bool = False
    accept_divergence: bool = False
    dry_run: bool = False
    result_text: str | None = None  # the content of result_file, read up front
    # Where this recovery runs the session's tools instead of the workspace `run` recorded
    # (`recover --workspace`: the machine that recovers is not the one that ran)
    workspace: Path | None = None


def recover(
    store: SessionStore,
    session_id: str,
    options: Options,
    *,
    observer: Observer | None = None,
    environ: Mapping[str, str] | None = None,
) -> RecoveryResult:
    root_args = store.paths.root_args()
    if options.result_file and list(options.resolutions.values()).count("done") != 1:
        raise UsageError("--result-file goes with exactly one --resolve CALL=done")
    if options.result_file:  # read before anything is written, so a bad file changes nothing
        options = replace(options, result_text=_read_result_file(options.result_file))
    if options.dry_run:
        holder = store.holder(session_id)
        if holder is not None:  # a live writer: the session is not interrupted, whatever its files say
            raise SessionLocked(
                f"session {session_id} is held by {holder.describe()}",
                guidance=locked_guidance(session_id, root_args),
                details={"lock_holder": holder.as_json()},
            )
        plan = make_plan(
            rebuild(store, session_id, lazy_thread=True),  # a plan needs no message of the thread
            root_args,
            resolutions=options.resolutions,
            cancel=options.cancel,
            accept_divergence=options.accept_divergence,
        )
        return RecoveryResult(plan, plan.state, ExitCode.OK, executed=False, guidance=guidance(plan))
    try:
        held = store.acquire(session_id, command=" ".join(["handshake", "recover", session_id]))
    except SessionLocked as exc:
        exc.guidance = locked_guidance(session_id, root_args)
        raise
    try:
        from handshake_cli.engine.loop import QuietObserver

        return _recover_locked(
            store,
            held,
            options,
            root_args,
            observer or QuietObserver(),
            dict(os.environ if environ is None else environ),
        )
    finally:
        held.release()


def _recover_locked(
    store: SessionStore,
    held: Lease,
    options: Options,
    root_args: list[str],
    observer: Observer,
    environ: dict[str, str],
) -> RecoveryResult:
    view = rebuild(store, held.session_id)
    plan = make_plan(
        view,
        root_args,
        resolutions=options.resolutions,
        cancel=options.cancel,
        accept_divergence=options.accept_divergence,
    )
    from handshake_cli.engine.providers import make_provider
    from handshake_cli.engine.writer import session_masker

    workspace = _workspace(view, plan, options, root_args)
    # Read the API key (or refuse its absence) before anything is written.
    provider = (
        make_provider(view.job.model, environ, workspace) if plan.action == PlanAction.RESUME else _NoModel()
    )
    # A server a killed run (or recovery) left running may still finish the call in doubt:
    # stopped, and gone, before any server starts again or any probe asks.
    left_behind = stop_left_behind(view, root_args)
    # The MCP servers the job declares: started again (or refused, exit 74) before anything
    # is written, when the plan runs something.
    servers = None
    if plan.action == PlanAction.RESUME and view.job.mcp:
        servers = restart(view, workspace, environ, session_masker(view.job, environ).mask_json)
    try:
        result = _recover_started(
            store,
            held,
            options,
            root_args,
            observer,
            environ,
            view,
            plan,
            provider,
            servers,
            left_behind,
            workspace,
        )
        result.stopped_mcp_servers = left_behind
        return result
    finally:
        if servers is not None:
            servers.host.close()


def _workspace(view: SessionView, plan: Plan, options: Options, root_args: list[str]) -> Path:
    """Where the session's tools run: `--workspace`, else the workspace recorded at `run`.
    A recovery that will run tools refuses a workspace that is not a directory on this
    machine, before anything is written: every tool would fail there (a session run on a
    machine that is gone, recovered on another, names a directory only the first one had)."""
    recorded = Path(str(view.config.get("workspace", ".")))
    workspace = options.workspace or recorded
    if plan.action == PlanAction.RESUME and not workspace.is_dir():
        if options.workspace is not None:
            raise UsageError(f"workspace {workspace} is not a directory")
        raise UsageError(
            f"session {view.session_id} ran its tools in {recorded}, which is not a directory on "
            "this machine; recover it with --workspace DIR to run its tools there (files the "
            "session wrote in the old workspace are not in the new one: the journal says what was done)",
            details={"workspace": str(recorded)},
            guidance=[
                "run its tools in a directory of this machine with:",
                "  " + " ".join(["handshake", "recover", view.session_id, "--workspace", "DIR", *root_args]),
            ],
        )
    return workspace


def _recover_started(
    store: SessionStore,
    held: Lease,
    options: Options,
    root_args: list[str],
    observer: Observer,
    environ: dict[str, str],
    view: SessionView,
    plan: Plan,
    provider: Any,
    servers: Restarted | None,
    left_behind: list[dict[str, Any]],
    workspace: Path,
) -> RecoveryResult:
    from handshake_cli.engine.loop import Cancellation, Runner
    from handshake_cli.engine.writer import open_writer

    session_id = held.session_id
    repaired = None
    if view.torn_tail:
        repaired = held.repair_torn_tail(view.torn_tail)
        view = rebuild(store, session_id)
    needs_writes = (
        repaired is not None
        or plan.action in (PlanAction.RESUME, PlanAction.CANCEL)
        or (plan.action == PlanAction.BLOCKED and plan.state != BLOCKED)
    )
    if not needs_writes:
        # Nothing changed since the last recovery: the same plan, the same guidance, nothing
        # appended; only a head.json left stale by a crash after the last record is rewritten.
        refresh_head(store, held, view.record)
        return RecoveryResult(plan, plan.state, _exit_for(plan), executed=False, guidance=guidance(plan))
    with open_writer(
        store, session_id, job=view.job, environ=environ, observer=observer, lease=held, standing=view
    ) as writer:
        cancel = Cancellation()
        restore = cancel.install() if plan.action == PlanAction.RESUME else (lambda: None)
        try:
            runner = Runner(
                writer,
                servers.job if servers else view.job,
                workspace,
                provider,
                observer=observer,
                cancel=cancel,
                environ=environ,
                mcp=servers.host if servers else None,
            )
            return _execute(writer, runner, view, plan, options, repaired, servers, left_behind)
        finally:
            restore()


def _execute(
    writer: SessionWriter,
    runner: Runner,
    view: SessionView,
    plan: Plan,
    options: Options,
    repaired: TailRepair | None,
    servers: Restarted | None = None,
    left_behind: list[dict[str, Any]] | None = None,
) -> RecoveryResult:
    """Journal the recovery, then cancel, block, or settle the calls in doubt and resume."""
    started: dict[str, Any] = {
        "action": plan.action,
        "reason": plan.reason,
        "checkpoint": plan.checkpoint,
        "skipped_checkpoints": plan.skipped_checkpoints,
        "repaired_torn_tail": repaired,
        "in_doubt": [call.as_json() for call in plan.in_doubt],
    }
    if left_behind:
        started["stopped_mcp_servers"] = left_behind
    if options.accept_divergence:
        started["accept_divergence"] = True
    started["process"] = session_lock.this_process()  # who recovered: the session's history names it
    if options.workspace is not None:
        started["workspace"] = str(runner.workspace)
    writer.append("recovery.started", started, sync=False)
    faults.crash_point("recovery_started")
    if plan.action == PlanAction.NOTHING:
        writer.sync()
        writer.write_head()
        return RecoveryResult(plan, plan.state, ExitCode.OK, executed=True)
    inconclusive: Plan | None = None  # the plan as it stands when a probe could not answer
    if plan.action == PlanAction.CANCEL:
        writer.end(CANCELLED, "cancelled by an operator")
    elif plan.action == PlanAction.BLOCKED:
        details = {
            "in_doubt_tool_call": "a call that must not run twice is in doubt and nothing can tell",
            "model_divergence": "the deterministic model did not repeat its interrupted answer",
            "mcp_tools_changed": "an MCP server's tools are not the ones the session started with",
        }
        writer.block(
            plan.reason, details.get(plan.reason, plan.reason), in_doubt=[c.as_json() for c in plan.in_doubt]
        )
    else:
        inconclusive = _resume(writer, runner, view, plan, options, servers)
    from handshake_cli.engine.loop import EXIT_FOR_STATE

    state = writer.record.state
    after = plan
    if state == BLOCKED:
        after = inconclusive or _blocked_plan(plan, writer.store, writer.session_id)
    result = runner.result()
    return RecoveryResult(
        plan,
        state,
        int(EXIT_FOR_STATE.get(state, ExitCode.INTERNAL)),
        executed=True,
        guidance=guidance(after)
        or stopped_guidance(plan.session_id, state, plan.root_args, result.hint, indent="  "),
        detail=result.reason,
    )


def _resume(
    writer: SessionWriter,
    runner: Runner,
    view: SessionView,
    plan: Plan,
    options: Options,
    servers: Restarted | None = None,
) -> Plan | None:
    """Settle the calls in doubt and run on. Returns the plan as it stands when a probe could
    not answer or an MCP server's tools changed (the session blocks then, before running
    anything), or None."""
    if servers is not None:
        for name in servers.host.servers:
            if (process := servers.host.process(name)) is not None:
                writer.append("mcp.process", process, sync=False)  # durable with the first intent
    if servers is not None and servers.changes and not options.accept_divergence:
        runner.stop_mcp_servers()
        blocked = replace(plan, action=PlanAction.BLOCKED, reason="mcp_tools_changed")
        writer.block(
            "mcp_tools_changed", "; ".join(servers.changes), in_doubt=[c.as_json() for c in plan.in_doubt]
        )
        return blocked
    if servers is not None:
        journaled = journaled_listings(view)
        for data in servers.records():
            before = journaled.get(str(data["server"]))
            if before is None or servers.changes:  # new to the journal, or accepted as it is now
                writer.append("mcp.tools", {**data, "accepted": before is not None}, sync=False)
    detail = _settle_in_doubt(writer, runner, plan, options)
    if detail is not None:
        blocked = replace(
            plan,
            action=PlanAction.BLOCKED,
            reason="in_doubt_tool_call",
            in_doubt=[
                replace(call, decision=BLOCK) if call.decision == PROBE else call for call in plan.in_doubt
            ],
        )
        writer.block("in_doubt_tool_call", detail, in_doubt=[c.as_json() for c in blocked.in_doubt])
        return blocked
    if writer.record.state != ACTIVE:
        writer.transition(ACTIVE, f"recovered ({plan.reason})")
    text = in_flight_text(view)
    if text and runner.provider.deterministic and not options.accept_divergence:
        runner.replay[int((view.thread.in_flight or {}).get("turn", 0))] = text
    writer.append(
        "recovery.resumed",
        {"checkpoint": plan.checkpoint, "in_flight": plan.in_flight, "replaying": bool(runner.replay)},
        sync=False,
    )
    runner.drive()
    return None


def _exit_for(plan: Plan) -> int:
    if plan.action == PlanAction.BLOCKED:
        return ExitCode.BLOCKED
    return ExitCode.OK  # a finished session: nothing to do


def _blocked_plan(plan: Plan, store: SessionStore, session_id: str) -> Plan:
    """The plan a later `recover --dry-run` would make for the session as it now stands."""
    return make_plan(rebuild(store, session_id), plan.root_args)


def _settle_in_doubt(writer: SessionWriter, runner: Runner, plan: Plan, options: Options) -> str | None:
    """Record what the operator or a probe says about each in-doubt call. Returns why the
    session must block (an inconclusive probe), or None."""
    from handshake_cli.engine.tools.gate import ToolContext, run_probe

    masker = writer.masker
    import getpass

    by = getpass.getuser()
    for call in plan.in_doubt:
        if call.decision in (RESOLVED_DONE, RESOLVED_RETRY):
            verdict = "done" if call.decision == RESOLVED_DONE else "retry"
            writer.append(
                "operator.resolution",
                {"tool_call_id": call.tool_call_id, "resolution": verdict, "by": by},
                sync=False,
            )
            if verdict == "done":
                output: Any = {"resolved": "done", "by": by}
                if options.result_text is not None:
                    output = masker.mask(options.result_text)
                writer.append(
                    "tool.result",
                    {
                        "tool_call_id": call.tool_call_id,
                        "tool": call.tool,
                        "output": output,
                        "evidence": {"operator": by},
                    },
                    sync=False,
                )
                writer.checkpoint("tool call resolved by an operator")
        elif call.decision == PROBE:
            spec = runner.job.tool(call.tool)
            assert spec is not None
            pending = next(c for c in writer.thread.pending if c.get("tool_call_id") == call.tool_call_id)
            context = ToolContext(
                session_id=writer.session_id,
                tool_call_id=call.tool_call_id,
                idempotency_key=call.idempotency_key or "",
                workspace=runner.workspace,
                store_large_output=writer.store_large_output,
                environ=runner.environ,
                mcp=runner.mcp,
            )
            answer, detail, output = run_probe(spec, pending.get("args") or {}, context)
            writer.sync_artifacts()  # large output the probe printed is durable before its answer
            faults.crash_point("recovery_after_probe")
            evidence = {"probe": answer, "detail": masker.mask(detail)}
            if answer == "happened":
                writer.append(
                    "tool.result",
                    {
                        "tool_call_id": call.tool_call_id,
                        "tool": call.tool,
                        "output": masker.mask_json(output),
                        "evidence": evidence,
                    },
                    sync=False,
                )
                writer.checkpoint("tool call settled by its probe")
            elif answer == "unknown":
                return f"the probe of {call.tool_call_id} was inconclusive"
            # not_happened: the call stays pending, and the runner runs it
    return None


# The result goes inline into a tool.result record, like a tool's output kept inline.
RESULT_FILE_MAX_BYTES = 1 << 20


def _read_result_file(path: str) -> str:
    """The file's text: a regular file (never a FIFO or a device that could block or never end),
    UTF-8, at most RESULT_FILE_MAX_BYTES, read with that bound."""
    from handshake_cli import documents

    try:
        raw = documents.read_regular(path, RESULT_FILE_MAX_BYTES)
        return documents.decode_utf8(raw)
    except documents.DocumentError as exc:
        raise UsageError(f"--result-file {path}: {exc.problem}", details={"file": path}) from None
    except FileNotFoundError:
        raise UsageError(f"--result-file {path}: no such file", details={"file": path}) from None
    except OSError as exc:
        raise UsageError(f"--result-file {path}: {exc.strerror or exc}", details={"file": path}) from None


class _NoModel:
    """A plan that only cancels or blocks never calls the model."""

    deterministic = True

    def stream(self, request: Any) -> Any:
        raise HandshakeError("recovery asked a model for an answer in a plan that needs none")


def sessions_to_recover(store: SessionStore) -> list[str]:
    """Every job's session that is not terminal and whose lock nobody holds. Not a LangGraph
    thread's: it has no run to resume (its saver repairs a torn tail when it opens the thread,
    and `recover SESSION` does too)."""
    from handshake_cli.session.status import list_sessions

    out = []
    for row in list_sessions(store):
        if row.get("state") in ("COMPLETED", "FAILED", "CANCELLED") or row.get("lock_holder"):
            continue
        if row.get("thread_id") is not None:
            continue
        out.append(str(row["session_id"]))
    return out
