"""`handshake export SESSION -o FILE.tar.gz`: a forensic bundle of one session's files."""

from __future__ import annotations

from typing import Annotated

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import Printer, Result, run_command


def export(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session to bundle.")],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="The bundle to write (a .tar.gz).")
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Bundle a session's files with a checksummed manifest, without taking its lock."""

    def body() -> Result:
        from pathlib import Path

        from handshake_cli.maintenance.bundle import export_session
        from handshake_cli.paths import Paths
        from handshake_cli.storage.open import open_store

        report = export_session(open_store(Paths.resolve(root)), session, Path(output), force=force)
        data = report.as_json()

        def render(out: Printer) -> None:
            out.line(
                f"exported session {report.session_id}: {data['file_count']} files "
                f"({data['session_bytes']} bytes) to {report.output} ({report.bytes} bytes)"
            )
            if report.live_writer:
                out.line("a run was writing: the bundle holds its journal as far as it had been written")
            for skip in report.skipped:
                out.line(f"  skipped {skip['path']}: {skip['reason']}")

        return Result(data, render)

    return run_command("export", json_, body)
