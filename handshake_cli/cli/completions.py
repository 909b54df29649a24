"""Shell completion scripts, generated from the command tree itself.

`python -m handshake_cli.cli.completions completions/` rewrites the committed scripts; a
test fails when they no longer match what this module generates. At TAB time the scripts
call `handshake` with `_HANDSHAKE_COMPLETE` set, and click answers from the same tree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer._click.shell_completion import get_completion_class

from handshake_cli.cli.app import app

PROG = "handshake"
COMPLETE_VAR = "_HANDSHAKE_COMPLETE"
FILES = {"bash": "handshake.bash", "zsh": "_handshake", "fish": "handshake.fish"}


def script(shell: str) -> str:
    from typer._completion_classes import completion_init

    completion_init()
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(f"no completion support for {shell}")
    source = cls(typer.main.get_command(app), {}, PROG, COMPLETE_VAR).source()
    return source if source.endswith("\n") else source + "\n"


def write_all(directory: Path) -> None:
    for shell, name in FILES.items():
        (directory / name).write_text(script(shell), encoding="utf-8")


if __name__ == "__main__":
    write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions"))
