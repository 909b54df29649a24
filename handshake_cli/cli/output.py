"""The one way results and errors leave the program.

A command returns a `Result`; a `HandshakeError` raised anywhere below is turned into one
here. With `--json`, stdout gets exactly one JSON document: `schema`, `status`, the
command's fields, and for errors an `error` object and `guidance`. Otherwise a human
renderer writes to stdout and guidance goes to stderr. rich is imported only when a human
is looking at a terminal (and NO_COLOR is honoured there); pipes get plain text.

Every write goes through `streams`: output that cannot be written (a closed pipe, a full
disk, text the terminal cannot encode) never turns an outcome into a bug, and the exit
code still says what happened to the session.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from handshake_cli.cli import streams
from handshake_cli.errors import ExitCode, HandshakeError
from handshake_cli.vocabulary import Status

SCHEMA = 1
REPORT_URL = "https://github.com/handshake-cli/handshake/issues"


class Printer:
    """Human output: plain lines, or rich when stdout is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.rich = stream.isatty() and os.environ.get("TERM") != "dumb"
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self.stream, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True
            )
        return self._console

    def write(self, text: str, *, flush: bool = False) -> bool:
        """Raw text (a streamed delta); False once the stream has failed."""
        return streams.write(self.stream, streams.shown(text), flush=flush)

    def line(self, text: str = "", style: str | None = None) -> None:
        text = streams.shown(text)
        if self.rich and style:
            from rich.text import Text

            self._print(Text(text, style=style))
        else:
            streams.write(self.stream, text + "\n")

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        rows = [[streams.shown(cell) for cell in row] for row in rows]
        if self.rich:
            from rich.table import Table

            table = Table(box=None, pad_edge=False, header_style="bold")
            for header in headers:
                table.add_column(header)
            for row in rows:
                table.add_row(*row)
            self._print(table)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        text = "".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n"
            for row in [headers, *rows]
        )
        streams.write(self.stream, text)

    def _print(self, renderable: Any) -> None:
        if streams.failure(self.stream):
            return
        try:
            self.console.print(renderable)
        except OSError as error:
            streams.silence(self.stream, error)


Renderer = Callable[[Printer], None]

# The envelope's `status` for how a session-driving command ended (DESIGN section 6 codes).
STATUS_FOR_EXIT: dict[int, str] = {
    ExitCode.OK: Status.OK,
    ExitCode.BLOCKED: Status.BLOCKED,
    ExitCode.JOB_FAILED: Status.FAILED,
    ExitCode.STOPPED: Status.STOPPED,
}


@dataclass
class Result:
    data: dict[str, Any]
    render: Renderer
    exit_code: int = ExitCode.OK
    status: str = Status.OK
    guidance: list[str] = field(default_factory=list)


def envelope(command: str, status: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "command": command, "status": status, **data}


def emit(command: str, result: Result, *, as_json: bool) -> int:
    if as_json:
        doc = envelope(command, result.status, result.data)
        if result.guidance:
            doc["guidance"] = result.guidance
        streams.write(sys.stdout, streams.json_text(doc, sys.stdout) + "\n")
    else:
        result.render(Printer(sys.stdout))
        if result.guidance:
            write_guidance(result.guidance)
    return int(result.exit_code)


def write_guidance(lines: list[str]) -> None:
    streams.write(sys.stderr, "".join(f"  {streams.shown(line)}\n" for line in lines))


def fail(command: str, error: HandshakeError, *, as_json: bool) -> int:
    if as_json:
        payload = {"code": error.code, "exit_code": int(error.exit_code), "message": error.message}
        if error.details:
            payload["details"] = error.details
        doc = envelope(command, Status.ERROR, {"error": payload, "guidance": error.guidance})
        streams.write(sys.stdout, streams.json_text(doc, sys.stdout) + "\n")
    else:
        streams.write(sys.stderr, f"handshake {command}: {streams.shown(error.message)}\n")
        write_guidance(error.guidance)
    return int(error.exit_code)


def internal_error(command: str, exc: BaseException, *, as_json: bool) -> int:
    """Anything that is not a HandshakeError is a bug: say so, and how to report it. Except
    the machine failing (a full disk, an I/O error) where no call site said so: exit 74."""
    from handshake_cli.storage.durable import environment_failure, is_environment

    if isinstance(exc, OSError) and is_environment(exc):
        return fail(command, environment_failure(exc, "use"), as_json=as_json)
    message = (
        f"internal error: {type(exc).__name__}: {exc}. This is a bug in handshake; "
        f"please report it at {REPORT_URL} with the command you ran and this message."
    )
    if os.environ.get("HANDSHAKE_DEBUG"):
        import traceback

        try:
            traceback.print_exc()
        except OSError:  # stderr is gone: the message below is all we can try
            pass
    error = HandshakeError(message)
    return fail(command, error, as_json=as_json)


def run_command(command: str, as_json: bool, body: Callable[[], Result]) -> int:
    """Run a command's body and write its outcome; the exit code says what happened, even
    when the output could not be written (see `streams.exit_code`)."""
    about = None
    try:
        result = body()
    except HandshakeError as error:
        code = fail(command, error, as_json=as_json)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        code = internal_error(command, exc, as_json=as_json)
    else:
        try:
            code = emit(command, result, as_json=as_json)
        except Exception as exc:  # a renderer's bug: still a message, not a traceback
            code = internal_error(command, exc, as_json=as_json)
        session, state = result.data.get("session_id"), result.data.get("state")
        if isinstance(session, str) and isinstance(state, str):
            about = f"session {session} is {state}"
    return streams.exit_code(command, code, about)
