"""`handshake run JOB.toml`: start a model session from a job file."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import STATUS_FOR_EXIT, Printer, Result, run_command


def run(
    job: Annotated[str, typer.Argument(metavar="JOB.toml", help="The job file to run.")],
    session_id: Annotated[
        str | None, typer.Option("--session-id", metavar="ID", help="Use this id instead of a generated one.")
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", metavar="DIR", help="Where tools run (default: the current directory)."),
    ] = None,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Run a model session from JOB.toml, journaling every step so it can be recovered."""

    def body() -> Result:
        from pathlib import Path

        from handshake_cli.cli.progress import Progress
        from handshake_cli.engine import launch
        from handshake_cli.engine.jobs import load_job
        from handshake_cli.paths import Paths
        from handshake_cli.recovery.plan import stopped_guidance
        from handshake_cli.storage.open import open_store

        loaded = load_job(job)
        store = open_store(Paths.resolve(root))
        where = Path(workspace).expanduser().absolute() if workspace else Path.cwd()
        out = Printer(sys.stdout)
        observer = None if json_ else Progress(out)
        result = launch.start(loaded, store, workspace=where, session_id=session_id, observer=observer)
        if observer is not None:
            observer.finish()
        data = {"job": loaded.name, **result.as_json()}
        guidance = stopped_guidance(result.session_id, result.state, store.paths.root_args(), result.hint)

        def render(printer: Printer) -> None:
            printer.line()
            style = {"COMPLETED": "green", "PAUSED": "yellow"}.get(result.state, "red")
            printer.line(
                f"session {result.session_id}: {result.state} after {result.turns} turns, "
                f"{result.tool_calls} tool calls, {result.checkpoints} checkpoints"
                + (f" ({result.reason})" if result.state != "COMPLETED" else ""),
                style=style,
            )

        return Result(
            data,
            render,
            exit_code=result.exit_code,
            status=STATUS_FOR_EXIT.get(result.exit_code, "error"),
            guidance=guidance,
        )

    return run_command("run", json_, body)
