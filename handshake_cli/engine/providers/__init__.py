"""Model backends. A provider turns a request (the thread so far, the tools) into a stream of
text chunks followed by the tool calls the model makes. A provider that streams tool calls
in pieces (openai) may also yield each piece as it arrives (`ToolCallDelta`), so that a call
cut short leaves a trace in the journal; the whole calls still come at the end.

Providers have no side effects: a call cut short by a crash is simply made again. Only a
deterministic provider promises that the new stream repeats the old one.

A provider tells the runner three ways that a call did not give an answer:
- it yields `Retry` before trying again; the runner journals the attempt and waits the
  delay, honouring a stop. Nothing has streamed yet, unless `discarded`: the server reported
  an error mid-answer, and the runner abandons what this attempt streamed before the next;
- it raises `StreamInterrupted` when the answer was cut short or the server stayed
  unavailable: the session stops recoverable (PAUSED) and the call is made again on recovery;
- it raises `ProviderError` when asking again cannot help (a refused key, a bad request, a
  server that gave the same error to every attempt, a program that prints nonsense): the
  session ends FAILED.

Each provider also owns its keys in a job's [model] table: `job_options` names the module
that reads them (`<provider>_options.py`, light enough to import whenever a job is read).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from handshake_cli.errors import ExitCode, HandshakeError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from handshake_cli.engine.jobs import ModelSpec, ToolSpec
    from handshake_cli.engine.jobs.tables import Table

PROVIDERS = ("scripted", "openai", "command")


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class ToolCallRequest:
    tool: str
    args: dict[str, Any]
    # The arguments as the model sent them, when they were not a JSON object: the call is
    # answered with an error instead of being run.
    invalid_args: str | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call as it streams: `call` tells the calls of a turn apart (the
    server's index, from 0); `name` comes with the first piece that carries it."""

    call: int
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Retry:
    """The call failed and will be made again after `delay` seconds: before anything streamed,
    or, when `discarded`, after this attempt streamed something that is now void."""

    attempt: int  # the attempt that failed, from 1
    reason: str
    delay: float
    discarded: bool = False


@dataclass(frozen=True)
class ModelRequest:
    turn: int  # 1 for the first model call of a session
    messages: list[dict[str, Any]]
    tools: tuple[ToolSpec, ...] = field(default_factory=tuple)


ModelEvent = TextChunk | ToolCallDelta | ToolCallRequest | Retry


class ProviderError(HandshakeError):
    """The model could not answer, and asking again would not help: the session ends FAILED.

    `hint` says what to fix, for the person at the terminal (it names variables, never values).
    `fork_after_fix`: nothing is wrong with the session, only with this call's server; the
    runner adds to the hint how to go on from the checkpoint before it, once that is fixed.
    """

    exit_code = ExitCode.JOB_FAILED
    code = "provider_error"

    def __init__(self, message: str, *, hint: str | None = None, fork_after_fix: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.fork_after_fix = fork_after_fix


class StreamInterrupted(HandshakeError):
    """The call was cut short (a dropped connection, a timeout, a server that stayed unavailable):
    the session stops at a safe boundary and recovery makes the call again."""

    exit_code = ExitCode.STOPPED
    code = "stream_interrupted"


class Provider(Protocol):
    deterministic: bool

    def stream(self, request: ModelRequest) -> Generator[ModelEvent]: ...


class JobOptions(Protocol):
    """How a job configures one provider: the keys of [model] in a job file, and how they read
    from the job file and back from session.toml's stored job (`id`, `options`)."""

    @property
    def JOB_KEYS(self) -> tuple[str, ...]: ...  # a module constant: [model] keys in a job file

    def from_job_file(self, model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec: ...

    def from_stored(self, model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec: ...


def job_options(provider: str) -> JobOptions:
    """The module that reads `provider`'s keys in a job (one of `PROVIDERS`)."""
    if provider == "scripted":
        from handshake_cli.engine.providers import scripted_options

        return scripted_options
    if provider == "openai":
        from handshake_cli.engine.providers import openai_options

        return openai_options
    if provider == "command":
        from handshake_cli.engine.providers import command_options

        return command_options
    raise ValueError(f"unknown provider {provider!r}")  # a job's provider is checked against PROVIDERS


def make_provider(spec: ModelSpec, environ: Mapping[str, str], workspace: Path) -> Provider:
    """The provider a job names. Reads what it needs from the environment now, so that a
    missing key is a usage error before a session is created or a recovery writes anything."""
    if spec.provider == "scripted":
        from handshake_cli.engine.providers.scripted import ScriptedProvider

        return ScriptedProvider(spec)
    if spec.provider == "openai":
        from handshake_cli.engine.providers.openai import OpenAIProvider

        return OpenAIProvider(spec, api_key(spec, environ))
    if spec.provider == "command":
        from handshake_cli.engine.providers.command import CommandProvider

        return CommandProvider(spec, environ, workspace)
    raise UsageError(f"unknown provider {spec.provider!r}")


def api_key(spec: ModelSpec, environ: Mapping[str, str]) -> str | None:
    name = spec.options.get("api_key_env")
    if not name:
        return None
    value = environ.get(name, "")
    if not value.strip():
        raise UsageError(
            f"the job reads the model's API key from the environment variable {name}, which is "
            + ("empty" if name in environ else "not set"),
            guidance=[f"set {name} to the key (it is never written anywhere), then run the command again"],
        )
    return value.strip()
