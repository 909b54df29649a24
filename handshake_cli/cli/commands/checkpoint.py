"""`handshake checkpoint SESSION`: ask for a checkpoint now."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.commands._later import not_yet
from handshake_cli.cli.options import Json, Root


def checkpoint(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session to checkpoint.")],
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why; recorded with the checkpoint.")
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", metavar="SECONDS", help="How long to wait for a running session.")
    ] = 10.0,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Take a checkpoint of SESSION (a running one checkpoints at its next boundary)."""
    return not_yet("checkpoint", json_)
