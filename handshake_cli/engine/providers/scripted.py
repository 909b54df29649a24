"""The scripted model: offline, deterministic, the default and what the tests run on.

Its script lists turns. Turn N of a session streams turn N's text, one word (with the
whitespace after it) per chunk, then makes that turn's tool calls, whatever the tools
returned. It never looks at the clock or at chance, so a replay repeats it exactly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from handshake_cli.engine.providers import ModelRequest, ProviderError, TextChunk, ToolCallRequest

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import ModelSpec

_WORD = re.compile(r"\s*\S+\s*|\s+")


def words(text: str) -> list[str]:
    """One chunk per word, each carrying the whitespace after it (and the first, any before it)."""
    return _WORD.findall(text)


class ScriptedProvider:
    deterministic = True

    def __init__(self, spec: ModelSpec, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.sleep = sleep

    def stream(self, request: ModelRequest) -> Generator[TextChunk | ToolCallRequest]:
        script = self.spec.script
        if not 1 <= request.turn <= len(script):
            raise ProviderError(f"the script has {len(script)} turns; turn {request.turn} was asked for")
        turn = script[request.turn - 1]
        delay = self.spec.chunk_delay_ms / 1000
        for index, word in enumerate(words(turn.text)):
            if delay and index:
                self.sleep(delay)
            yield TextChunk(word)
        for call in turn.tool_calls:
            yield ToolCallRequest(call.tool, dict(call.args))
