"""The answer of a command whose engine has not landed yet: a clear message and exit 2."""

from __future__ import annotations

from handshake_cli.cli.output import Result, run_command
from handshake_cli.errors import NotImplementedYet


def not_yet(command: str, as_json: bool) -> int:
    def body() -> Result:
        raise NotImplementedYet(
            f"`handshake {command}` is not available in this version yet; "
            "`handshake inspect` works on every session already stored.",
            guidance=["handshake inspect --help"],
        )

    return run_command(command, as_json, body)
