"""Options every command shares, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Root = Annotated[
    str | None,
    typer.Option(
        "--root",
        metavar="DIR",
        help="Where sessions live (default: $HANDSHAKE_HOME, else the user data dir).",
        show_default=False,
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print exactly one JSON document on stdout, errors included."),
]
