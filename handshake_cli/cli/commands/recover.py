"""`handshake recover`: resume, block with guidance, or finish an interrupted session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import STATUS_FOR_EXIT, Printer, Result, run_command

if TYPE_CHECKING:
    from handshake_cli.recovery.execute import Options
    from handshake_cli.storage.contract import SessionStore

# The core is imported inside the functions that use it, for start-up (see inspect.py).


def recover(
    session: Annotated[
        str | None, typer.Argument(metavar="[SESSION]", help="The session to recover.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Recover every interrupted session.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    resolve: Annotated[
        list[str] | None,
        typer.Option("--resolve", metavar="CALL=done|retry", help="Say what happened to an in-doubt call."),
    ] = None,
    result_file: Annotated[
        str | None, typer.Option("--result-file", metavar="F", help="The output of a call resolved done.")
    ] = None,
    cancel: Annotated[bool, typer.Option("--cancel", help="End the session CANCELLED.")] = False,
    fork: Annotated[
        str | None,
        typer.Option("--fork", metavar="NEW_ID", help="Start a new session from a checkpoint of SESSION."),
    ] = None,
    from_checkpoint: Annotated[
        str | None,
        typer.Option(
            "--from-checkpoint", metavar="CK", help="With --fork: which checkpoint (default: newest)."
        ),
    ] = None,
    accept_divergence: Annotated[
        bool,
        typer.Option(
            "--accept-divergence",
            help="Go on past a model_divergence or mcp_tools_changed block.",
        ),
    ] = False,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", metavar="DIR", help="Run the tools here, not where they ran."),
    ] = None,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Bring an interrupted session to a correct end, or say exactly what is needed."""

    def body() -> Result:
        from pathlib import Path

        from handshake_cli.errors import UsageError
        from handshake_cli.paths import Paths
        from handshake_cli.recovery.execute import Options
        from handshake_cli.recovery.plan import parse_resolutions
        from handshake_cli.storage.open import open_store

        store = open_store(Paths.resolve(root))
        options = Options(parse_resolutions(resolve or []), result_file, cancel, accept_divergence, dry_run)
        if workspace:
            options.workspace = Path(workspace).expanduser().absolute()
        if all_:
            if session or options.resolutions or cancel or result_file:
                raise UsageError(
                    "--all recovers every interrupted session; it takes no SESSION, --resolve or --cancel"
                )
            return _all(store, options)
        if not session:
            raise UsageError("name a SESSION to recover, or use --all")
        if fork:
            if options.resolutions or cancel or result_file or dry_run or workspace:
                raise UsageError("--fork takes only a SESSION, a NEW_ID and optionally --from-checkpoint")
            return _fork(store, session, fork, from_checkpoint)
        if from_checkpoint:
            raise UsageError("--from-checkpoint goes with --fork")
        return _one(store, session, options, json_)

    return run_command("recover", json_, body)


def _one(store: SessionStore, session_id: str, options: Options, as_json: bool) -> Result:
    import sys

    from handshake_cli.cli.progress import Progress
    from handshake_cli.recovery.execute import recover as execute
    from handshake_cli.recovery.langgraph import is_langgraph_session

    # The kind only: the job's binding is checked by the recovery that runs, under the lock.
    if is_langgraph_session(store.read_config(session_id, check_job=False)):
        return _langgraph_thread(store, session_id, options)

    observer = None if as_json or options.dry_run else Progress(Printer(sys.stdout))
    outcome = execute(store, session_id, options, observer=observer)
    if observer is not None:
        observer.finish()
    data = outcome.as_json()

    def render(out: Printer) -> None:
        plan = outcome.plan
        verb = "would" if options.dry_run else ("did" if outcome.executed else "needed")
        out.line(f"session {plan.session_id}: {plan.state}; recovery {verb}: {plan.action} ({plan.reason})")
        for server in outcome.stopped_mcp_servers:
            killed = ", ".join(str(pid) for pid in server["killed"])
            out.line(
                f"  stopped MCP server {server['server']} (pid {server['pid']}), left running by an "
                f"interrupted run, before anything else: killed {killed}"
            )
        if plan.torn_tail:
            torn = plan.torn_tail
            out.line(f"  torn tail at {torn['segment']} byte {torn['offset']}: cut to quarantine/")
        if plan.checkpoint:
            out.line(
                f"  from checkpoint {plan.checkpoint}; records {plan.verified_from_seq} on verified "
                "(older ones: handshake inspect SESSION --verify)"
            )
        for skipped in plan.skipped_checkpoints:
            out.line(f"  skipped checkpoint {skipped['checkpoint_id']}: {skipped['reason']}")
        for call in plan.in_doubt:
            out.line(f"  in doubt: {call.tool_call_id} ({call.tool}, {call.idempotency}): {call.decision}")
        if plan.in_flight:
            out.line(f"  model turn {plan.in_flight['turn']} was cut short: it is asked again")
        if not options.dry_run and outcome.executed:
            out.line(f"now {outcome.state}" + (f": {outcome.detail}" if outcome.detail else ""))

    status = STATUS_FOR_EXIT.get(outcome.exit_code, "error")
    return Result(data, render, exit_code=outcome.exit_code, status=status, guidance=outcome.guidance)


def _langgraph_thread(store: SessionStore, session_id: str, options: Options) -> Result:
    """A LangGraph thread's session: storage repaired, answers recorded, never run."""
    from handshake_cli.errors import UsageError
    from handshake_cli.recovery.langgraph import recover_thread

    if options.cancel or options.result_file or options.accept_divergence or options.workspace:
        raise UsageError(
            f"session {session_id} is a LangGraph thread: recover takes only --resolve and --dry-run"
        )
    outcome = recover_thread(store, session_id, options.resolutions, dry_run=options.dry_run)

    def render(out: Printer) -> None:
        verb = "would repair" if outcome.dry_run else "repaired"
        out.line(
            f"session {outcome.session_id}: LangGraph thread {outcome.thread_id!r}, "
            f"{outcome.checkpoints} checkpoints"
        )
        if outcome.repaired_torn_tail:
            torn = outcome.repaired_torn_tail
            out.line(f"  {verb} a torn tail at {torn['segment']} byte {torn['offset']}: cut to quarantine/")
        for call_id, answer in outcome.resolved.items():
            out.line(f"  {call_id}: recorded {answer}; the graph applies it when it resumes")
        for call in outcome.in_doubt:
            out.line(f"  in doubt: {call['tool_call_id']} ({call['tool']}, {call['idempotency']})")
        out.line("handshake never runs the graph; resume it from your program:")
        out.line(f"  {outcome.as_json()['resume']}")

    return Result(outcome.as_json(), render, exit_code=outcome.exit_code, guidance=outcome.guidance)


def _fork(store: SessionStore, source: str, new_id: str, checkpoint_id: str | None) -> Result:
    from handshake_cli.recovery.fork import fork

    data = fork(store, source, new_id, checkpoint_id)
    origin = data["forked_from"]
    resume = " ".join(["handshake", "recover", new_id, *store.paths.root_args()])

    def render(out: Printer) -> None:
        at = f"{origin.get('checkpoint_id', 'its last intact record')} (seq {origin['covers_seq']})"
        copied = data["records_copied"]
        out.line(f"session {new_id}: forked from {source} at {at}, {copied} records; {data['state']}")

    guidance = ["resume it (its tools run again, in the same workspace) with:", f"  {resume}"]
    return Result(data, render, guidance=guidance)


def _all(store: SessionStore, options: Options) -> Result:
    from handshake_cli.recovery.recover_all import recover_all

    done = recover_all(store, options)
    rows = done.sessions

    def render(out: Printer) -> None:
        if not rows:
            out.line("no interrupted sessions")
            return
        out.table(
            ["SESSION", "BEFORE", "ACTION", "REASON", "NOW", "EXIT"],
            [
                [
                    r["session_id"],
                    str(r.get("state_before") or "-"),
                    r["action"],
                    str(r["reason"]),
                    str(r.get("state") or "-"),
                    str(r["exit_code"]),
                ]
                for r in rows
            ],
        )
        for row in rows:
            if row.get("error"):
                out.line(f"{row['session_id']}: {row['error']['message']}")
            for line in row.get("guidance") or []:
                out.line(line)

    status = STATUS_FOR_EXIT.get(done.exit_code, "error")
    return Result(done.as_json(), render, exit_code=done.exit_code, status=status)
