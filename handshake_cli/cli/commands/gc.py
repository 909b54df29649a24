"""`handshake gc`: remove finished sessions and unneeded checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.commands._later import not_yet
from handshake_cli.cli.options import Json, Root


def gc(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", metavar="DURATION", help="Only sessions finished longer ago, e.g. 7d."),
    ] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option("--keep-checkpoints", metavar="N", help="Keep the last N checkpoints.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; remove nothing.")] = False,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Keep the store small without touching anything unfinished."""
    return not_yet("gc", json_)
