"""`handshake import FILE`: land a bundle written by `handshake export` as a session here."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import Printer, Result, run_command


def import_(
    bundle: Annotated[str, typer.Argument(metavar="FILE", help="A bundle written by handshake export.")],
    root: Root = None,
    json_: Json = False,
) -> int:
    """Check a bundle completely, then add its session to the root in one step."""

    def body() -> Result:
        from pathlib import Path

        from handshake_cli.maintenance.bundle import import_bundle
        from handshake_cli.paths import Paths
        from handshake_cli.storage.open import open_store

        store = open_store(Paths.resolve(root))
        report = import_bundle(store, Path(bundle))
        data = report.as_json()

        def render(out: Printer) -> None:
            out.line(
                f"imported session {report.session_id}: {report.files} files "
                f"({report.session_bytes} bytes) into {store.paths.shown_root}"
            )
            out.line(f"state       {report.state}")
            style = {"intact": "green", "repairable": "yellow"}.get(report.verdict, "red")
            out.line(f"integrity   {report.verdict}", style=style)
            out.line(f"workspace   {report.workspace or '-'}")
            if not report.guidance:  # the guidance repeats it when the session can be resumed
                out.line(f"  ({report.workspace_note})")

        return Result(data, render, guidance=report.guidance)

    return run_command("import", json_, body)
