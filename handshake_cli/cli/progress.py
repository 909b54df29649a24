"""A running session shown at the terminal, for `run` and `recover` alike."""

from __future__ import annotations

from typing import Any

from handshake_cli.cli import streams
from handshake_cli.cli.output import Printer


class Progress:
    """Shows a running session: streamed text as it arrives, tool calls, checkpoints.

    The display never stops the session: once stdout fails (the reader closed the pipe, the
    disk is full) it stops echoing and the session is driven to its end as if nobody watched
    (docs/DECISIONS.md, "Output that cannot be written")."""

    def __init__(self, printer: Printer) -> None:
        self.printer = printer
        self.stream = printer.stream
        self._mid_line = False
        self._held = ""  # a high surrogate whose low half may come with the next delta
        self._turn = 0

    def _event(self, text: str, style: str = "dim") -> None:
        self.finish()
        if self._mid_line:
            self.printer.write("\n")
            self._mid_line = False
        self.printer.line(text, style=style)
        streams.flush(self.stream)

    def text(self, turn: int, text: str) -> None:
        if turn != self._turn:
            self.finish()
            self._turn = turn
        text, self._held = self._held + text, ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self._held = text[:-1], text[-1]
        if text:
            self.printer.write(text, flush=True)
            self._mid_line = not text.endswith("\n")

    def finish(self) -> None:
        """Show a held-back half of a surrogate pair: its other half is not coming."""
        if self._held:
            self.printer.write(self._held, flush=True)
            self._mid_line = True
            self._held = ""

    def tool_started(self, call: dict[str, Any]) -> None:
        self._event(f"→ {call['tool']} [{call['tool_call_id']}]", style="cyan")

    def tool_finished(self, call: dict[str, Any], result: dict[str, Any]) -> None:
        error = result.get("error")
        if error:
            self._event(
                f"✗ {call['tool']} failed: {error.get('code')}: {error.get('message', '')}", style="red"
            )
        else:
            self._event(f"✓ {call['tool']} done", style="green")

    def checkpoint(self, ref: Any, reason: str) -> None:
        self._event(f"  checkpoint {ref.checkpoint_id} ({reason})")

    def retry(self, turn: int, attempt: int, reason: str, delay: float) -> None:
        again = f"trying again in {delay:g} s"
        self._event(f"  model call failed (attempt {attempt}): {reason}; {again}", style="yellow")

    def state(self, before: str, after: str, reason: str) -> None:
        if after != "ACTIVE":
            self._event(f"  {before} → {after}: {reason}")
