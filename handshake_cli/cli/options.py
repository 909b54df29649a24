"""Options every command shares, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Root = Annotated[
    str | None,
    typer.Option(
        "--root",
        metavar="ROOT",
        help="A directory or postgresql:// URL (default: $HANDSHAKE_HOME).",
        show_default=False,
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print exactly one JSON document on stdout, errors included."),
]
