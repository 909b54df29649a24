"""`handshake recover`: resume, block with guidance, or finish an interrupted session."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.commands._later import not_yet
from handshake_cli.cli.options import Json, Root


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
    root: Root = None,
    json_: Json = False,
) -> int:
    """Bring an interrupted session to a correct end, or say exactly what is needed."""
    return not_yet("recover", json_)
