"""Model backends. A provider turns a request (the thread so far, the tools) into a stream of
text chunks followed by the tool calls the model makes.

Providers have no side effects: a call cut short by a crash is simply made again. Only a
deterministic provider promises that the new stream repeats the old one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from handshake_cli.errors import HandshakeError, UsageError

if TYPE_CHECKING:
    from handshake_cli.jobs import ModelSpec, ToolSpec


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class ToolCallRequest:
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    turn: int  # 1 for the first model call of a session
    messages: list[dict[str, Any]]
    tools: tuple[ToolSpec, ...] = field(default_factory=tuple)


class ProviderError(HandshakeError):
    """The model could not answer. Ends the session FAILED (exit 7) unless retried by the provider."""

    code = "provider_error"


class Provider(Protocol):
    deterministic: bool

    def stream(self, request: ModelRequest) -> Iterator[TextChunk | ToolCallRequest]: ...


def make_provider(spec: ModelSpec) -> Provider:
    if spec.provider == "scripted":
        from handshake_cli.providers.scripted import ScriptedProvider

        return ScriptedProvider(spec)
    raise UsageError(
        f"the {spec.provider!r} provider is not available in this version yet; "
        'use provider = "scripted" (the default)'
    )
