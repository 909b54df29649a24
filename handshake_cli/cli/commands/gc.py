"""`handshake gc`: remove old finished sessions and sweep debris, never anything unfinished."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import Printer, Result, run_command
from handshake_cli.vocabulary import Status

if TYPE_CHECKING:
    from handshake_cli.maintenance.gc import Report

# The core is imported inside the function: `--help` and every TAB press load this module.


def gc(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Remove finished sessions whose last record is older than this: 30s, 15m, 12h, 7d, 2w.",
        ),
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(
            "--keep-checkpoints",
            metavar="N",
            help="Keep the last N checkpoints and drop artifacts no record names "
            "(checkpoints live in the journal, so all of them stay).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; remove nothing.")] = False,
    include_unfinished: Annotated[
        bool,
        typer.Option(
            "--include-unfinished",
            help="Also remove PAUSED, BLOCKED and interrupted sessions past the age (never a locked one).",
        ),
    ] = False,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Keep the store small without touching anything unfinished or in use.

    Policy comes from the flags, else from the [gc] table of <root>/handshake.toml
    (older_than, keep_checkpoints, quarantine_older_than).
    """

    def body() -> Result:
        from handshake_cli.maintenance import gc as collector
        from handshake_cli.paths import Paths
        from handshake_cli.storage.open import open_store

        store = open_store(Paths.resolve(root))
        policy = collector.load_policy(
            store.paths,
            older_than=older_than,
            keep_checkpoints=keep_checkpoints,
            include_unfinished=include_unfinished,
            dry_run=dry_run,
        )
        with _progress_bar(enabled=not json_) as progress:
            report = collector.collect(store, policy, progress=progress)
        # What could go went; a session skipped as damaged makes the exit code its error's (the worst).
        code = report.exit_code
        status = Status.OK if code == 0 else Status.ERROR
        return Result(report.as_json(), lambda out: _render(out, report), exit_code=code, status=status)

    return run_command("gc", json_, body)


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A transient rich bar on stderr, only when a person is watching a terminal."""
    if not enabled or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(file=sys.stderr, no_color="NO_COLOR" in os.environ)
    with Progress(
        TextColumn("gc"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("sessions", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _render(out: Printer, report: Report) -> None:
    data = report.as_json()
    verb = "would remove" if report.policy.dry_run else "removed"
    if data["removed"]:
        out.line(f"{verb} {len(data['removed'])} session(s)", style="bold")
        out.table(
            ["SESSION", "STATE", "LAST RECORD", "SIZE"],
            [
                [r["session_id"], r["state"], r["last_record_at"] or "-", _size(r["bytes"])]
                for r in data["removed"]
            ],
        )
    else:
        out.line(f"{verb} no session")
    if data["swept"]:
        out.line(f"{'would sweep' if report.policy.dry_run else 'swept'} {len(data['swept'])} item(s)")
        out.table(
            ["KIND", "PATH", "SIZE"], [[s["kind"], s["path"], _size(s["bytes"])] for s in data["swept"]]
        )
    if data["skipped"]:
        out.line(f"skipped {len(data['skipped'])} session(s)", style="yellow")
        for item in data["skipped"]:
            out.line(f"  {item['session_id']}  {item['state']}  {item['reason']}: {item['detail']}")
    for error in data["errors"]:
        out.line(f"could not remove {error['path']}: {error['error']}", style="red")
    if data["kept"]:
        age = report.policy.older_than
        why = "no age given" if age is None else f"last record less than {age:g} s ago"
        out.line(f"kept {data['kept']} session(s): {why}")
    out.line(f"{'would reclaim' if report.policy.dry_run else 'reclaimed'} {_size(data['reclaimed_bytes'])}")
    for note in data["notes"]:
        out.line(f"note: {note}")


def _size(size: Any) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)
