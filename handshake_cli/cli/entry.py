"""The console script and `python -m handshake_cli`: the command line, loaded only when needed.

`handshake --version` is answered here, before typer and the command tree are imported: a
CI script or a shell prompt that asks for the version pays for Python and little else
(measured here: 15 ms of CPU over bare Python, against 83 ms through typer). Everything
else goes to `cli/app.py`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from handshake_cli import __version__
        from handshake_cli.cli import streams

        streams.prepare()
        streams.write(sys.stdout, f"handshake {__version__}\n")
        sys.exit(streams.exit_code("handshake", 0))
    from handshake_cli.cli.app import main as run_command_line

    run_command_line(args)
