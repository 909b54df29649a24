"""The console script and `python -m handshake_cli`: the command line, loaded only when needed.

`handshake --version` and a TAB press are answered here, before typer and the command tree
are imported: a CI script or a shell prompt that asks for the version, and a shell that asks
what may follow the words typed so far, pay for Python and little else. The TAB answer comes
from `cli/complete.py` (the command tree as `cli/tree.py` describes it); what it cannot answer
exactly as typer would, it leaves to typer. Everything else goes to `cli/app.py`.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # A descriptor closed at start-up leaves None here, for streams.prepare() (in app.py) to mend.
    light = sys.stdout is not None and sys.stderr is not None
    if light and args == ["--version"]:
        from handshake_cli import __version__

        _reply(f"handshake {__version__}\n", 0, "handshake")
    if light and os.environ.get("_HANDSHAKE_COMPLETE"):
        from handshake_cli.cli import complete

        reply = complete.answer(os.environ)
        if reply is not None:
            _reply(*reply, args[0] if args else "handshake")  # the name app.py's notes use
    from handshake_cli.cli.app import main as run_command_line

    run_command_line(args)


def _reply(text: str, code: int, command: str) -> None:
    """Print `text` and exit with `code`, as the command line would (cli/streams.py, imported
    only if stdout fails: a reader that left is no error, a full disk is 74)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as error:
        from handshake_cli.cli import streams

        streams.silence(sys.stdout, error)
        sys.exit(streams.exit_code(command, code))
    sys.exit(code)
