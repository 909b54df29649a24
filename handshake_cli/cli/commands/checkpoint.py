"""`handshake checkpoint SESSION`: take a checkpoint now."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import Printer, Result, run_command


def checkpoint(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session to checkpoint.")],
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why; recorded with the checkpoint.")
    ] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", metavar="SECONDS", help="How long to wait for a running session.", min=0),
    ] = 10.0,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Take a checkpoint of SESSION (a running one checkpoints at its next boundary)."""

    def body() -> Result:
        from handshake_cli.engine import launch
        from handshake_cli.paths import Paths
        from handshake_cli.storage.open import open_store

        answer = launch.checkpoint(open_store(Paths.resolve(root)), session, reason=reason, wait=wait)
        data = answer.as_json()

        def render(out: Printer) -> None:
            how = "by the running session" if answer.running else "from the journal"
            covers = data["covers_seq"]
            out.line(f"{data['checkpoint_id']} {data['artifact_id']} (covers seq {covers}, taken {how})")

        return Result(data, render)

    return run_command("checkpoint", json_, body)
