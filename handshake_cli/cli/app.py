"""The `handshake` command: registers the five commands and maps every way out to an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from handshake_cli import __version__
from handshake_cli.cli import streams
from handshake_cli.cli.commands import checkpoint, export, gc, import_, inspect, recover, run

app = typer.Typer(
    name="handshake",
    help="Crash recovery for AI model sessions: run, checkpoint, recover, inspect, export, import, gc.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        streams.write(sys.stdout, f"handshake {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Crash recovery for AI model sessions."""


app.command("run")(run.run)
app.command("checkpoint")(checkpoint.checkpoint)
app.command("recover")(recover.recover)
app.command("inspect")(inspect.inspect)
app.command("gc")(gc.gc)
app.command("export")(export.export)
app.command("import")(import_.import_)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Usage errors become exit 2, in JSON too when asked."""
    streams.prepare()
    sys.exit(_main(sys.argv[1:] if argv is None else argv))


def _main(args: list[str]) -> int:
    import errno
    import os

    from typer import exceptions as typer_exceptions
    from typer._click import exceptions as click_exceptions

    if "_HANDSHAKE_COMPLETE" in os.environ:  # a TAB press: register the shells' protocols
        from typer._completion_classes import completion_init

        completion_init()
    command = typer.main.get_command(app)
    name = args[0] if args else "handshake"
    try:
        code = command.main(args=args, prog_name="handshake", standalone_mode=False)
    except click_exceptions.UsageError as error:
        if "--json" in args:
            doc = {
                "schema": 1,
                "command": args[0] if args else None,
                "status": "error",
                "error": {"code": "usage", "exit_code": 2, "message": error.format_message()},
                "guidance": ["handshake --help"],
            }
            streams.write(sys.stdout, streams.json_text(doc, sys.stdout) + "\n")
        else:
            _show(error.show)
        return streams.exit_code(name, 2)
    except typer_exceptions.Abort:
        streams.write(sys.stderr, "handshake: interrupted\n")
        return 130
    except OSError as error:  # click's own output (--help, completion) failed to be written
        streams.silence(sys.stdout, error)
        code = 0
    except SystemExit as stop:
        # typer turns EPIPE on its own output (--help) into sys.exit(1), even when not
        # standalone; our commands return their code and never exit. A reader that left is no bug.
        if stop.code != 1:
            raise
        streams.silence(sys.stdout, BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))
        code = 0
    return streams.exit_code(name, code if isinstance(code, int) else 0)


def _show(show: Callable[[], None]) -> None:
    try:
        show()
    except OSError as error:
        streams.silence(sys.stderr, error)
