"""`handshake run JOB.toml`: start a model session from a job file."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.commands._later import not_yet
from handshake_cli.cli.options import Json, Root


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
    return not_yet("run", json_)
