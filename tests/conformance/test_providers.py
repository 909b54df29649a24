"""The provider contract suite: every model backend, given the same request, answers the same
way (handshake_cli/engine/providers/__init__.py is the contract).

Each provider is run for real: the scripted model from its script, the openai provider
against an OpenAI-compatible server on loopback (tests/openai_server.py), the command
provider with a program as the model (tests/data/model_jobs/tiny_model.py). All three are set up
to give the same answer, so one expected stream serves them all: the text in chunks, then
the tool calls; after the tool's result, text alone.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.engine.jobs import ModelSpec, ScriptedCall, ScriptedTurn, ToolSpec
from handshake_cli.engine.providers import (
    ModelRequest,
    Provider,
    ProviderError,
    Retry,
    StreamInterrupted,
    TextChunk,
    ToolCallDelta,
    ToolCallRequest,
)
from handshake_cli.engine.providers.command import CommandProvider
from handshake_cli.engine.providers.openai import OpenAIProvider
from handshake_cli.engine.providers.scripted import ScriptedProvider
from handshake_cli.errors import HandshakeError
from tests.support.openai_server import FakeOpenAI, error, sse, text_events, tool_call_events
from tests.support.paths import DATA

MODEL = DATA / "model_jobs" / "tiny_model.py"
PROVIDERS = ("scripted", "openai", "command")

# What tiny_model.py says; the other two are set up to say the same.
WORDS = ["I ", "will ", "write ", "the ", "file ", "now."]
ARGS = {"path": "out.txt", "content": "from the model"}
FIRST_ANSWER = [*map(TextChunk, WORDS), ToolCallRequest("write_file", ARGS)]
SECOND_ANSWER = [TextChunk("Done.")]

TOOLS = (
    ToolSpec("write_file", "write", "idempotent", builtin="write_file", description="Write a file."),
    ToolSpec("read_file", "read", "idempotent", builtin="read_file"),
)
PROMPT = [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "Write out.txt."}]
FIRST = ModelRequest(1, PROMPT, TOOLS)
SECOND = ModelRequest(
    2,
    [
        *PROMPT,
        {
            "role": "assistant",
            "content": "".join(WORDS),
            "tool_calls": [{"tool_call_id": "call-1-0", "tool": "write_file", "args": ARGS}],
        },
        {"role": "tool", "tool_call_id": "call-1-0", "content": "wrote 14 bytes to out.txt"},
    ],
    TOOLS,
)

Event = TextChunk | ToolCallDelta | ToolCallRequest | Retry


@dataclass
class Case:
    """One provider, and what a test needs to drive it: `before_call` queues what the server
    answers (for openai), `cut_short` makes a provider whose next answer stops after its first
    chunk, `cut_error` is what the contract says that raises, `received` gives the threads
    the model was sent (None when the model is not a separate program)."""

    provider: Provider
    before_call: Callable[[ModelRequest], None] = lambda request: None
    cut_short: Callable[[], Provider] | None = None
    cut_error: type[HandshakeError] = StreamInterrupted
    received: Callable[[], list[list[dict[str, Any]]]] | None = None
    flaky: Callable[[], None] | None = None  # the next call fails once before anything streams

    def answer(self, request: ModelRequest) -> list[Event]:
        """The events of one call, without the pieces of tool calls (`ToolCallDelta`, which only
        a provider that streams calls in pieces yields: they must add up to its calls)."""
        self.before_call(request)
        events = list(self.provider.stream(request))
        assert_stream_shape(events)
        assert_pieces_add_up(events)
        return [event for event in events if not isinstance(event, ToolCallDelta)]


def scripted_case() -> Case:
    script = (
        ScriptedTurn("".join(WORDS), (ScriptedCall("write_file", ARGS),)),
        ScriptedTurn("Done."),
    )
    return Case(ScriptedProvider(ModelSpec("scripted", "scripted", True, script=script)))


def openai_case(server: FakeOpenAI) -> Case:
    spec = ModelSpec("openai", "test-model", True, options={"base_url": server.url, "seed": 7})
    replies = {
        1: lambda **cut: sse(tool_call_events([("write_file", ARGS)], text=WORDS), **cut),
        2: lambda **cut: sse(text_events(["Done."]), **cut),
    }

    def cut_short() -> Provider:
        server.reply(replies[1](cut_after=2))  # the role chunk and the first word, then the cut
        return OpenAIProvider(spec, None)

    def received() -> list[list[dict[str, Any]]]:
        return [r["body"]["messages"] for r in server.requests]

    return Case(
        OpenAIProvider(spec, None),
        before_call=lambda request: server.reply(replies[request.turn]()),
        cut_short=cut_short,
        cut_error=StreamInterrupted,
        received=received,
        flaky=lambda: server.reply(error(503, "busy")),
    )


def command_case(workspace: Path) -> Case:
    def provider(*flags: str) -> Provider:
        spec = ModelSpec("command", "tiny", True, options={"command": [sys.executable, str(MODEL), *flags]})
        return CommandProvider(spec, dict(os.environ), workspace)

    def received() -> list[list[dict[str, Any]]]:
        lines = (workspace / "requests.jsonl").read_text().splitlines()
        return [json.loads(line)["messages"] for line in lines]

    # A program that ends mid-answer is one that misbehaved: the command provider's module
    # documents that as a ProviderError (the session fails), not a StreamInterrupted.
    return Case(
        provider(),
        cut_short=lambda: provider("--exit", "3"),
        cut_error=ProviderError,
        received=received,
    )


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(params=PROVIDERS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    if request.param == "scripted":
        return scripted_case()
    if request.param == "openai":
        return openai_case(request.getfixturevalue("server"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return command_case(workspace)


def assert_stream_shape(events: Iterable[Event]) -> None:
    """Retries first (only before anything streamed), then text chunks, then tool calls."""
    order = {Retry: 0, TextChunk: 1, ToolCallDelta: 1, ToolCallRequest: 2}
    ranks = [order[type(event)] for event in events]
    assert ranks == sorted(ranks), events


def assert_pieces_add_up(events: list[Event]) -> None:
    pieces = [event for event in events if isinstance(event, ToolCallDelta)]
    if not pieces:
        return
    calls = [event for event in events if isinstance(event, ToolCallRequest)]
    by_call: dict[int, list[ToolCallDelta]] = {}
    for piece in pieces:
        by_call.setdefault(piece.call, []).append(piece)
    assert len(by_call) == len(calls)
    for call, (_index, mine) in zip(calls, sorted(by_call.items()), strict=True):
        assert [piece.name for piece in mine if piece.name] == [call.tool]
        assert json.loads("".join(piece.arguments for piece in mine)) == call.args


# -- the answer -----------------------------------------------------------------------------------


def test_a_turn_streams_its_text_in_chunks_then_its_tool_calls(case: Case) -> None:
    events = case.answer(FIRST)

    assert_stream_shape(events)
    assert events == FIRST_ANSWER


def test_after_a_tool_result_the_answer_is_text_alone(case: Case) -> None:
    events = case.answer(SECOND)

    assert_stream_shape(events)
    assert events == SECOND_ANSWER


def test_the_model_is_given_the_whole_thread(case: Case) -> None:
    if case.received is None:
        pytest.skip("the scripted model reads its script, not the request")
    case.answer(FIRST)
    case.answer(SECOND)

    first, second = case.received()
    assert first == PROMPT
    assert second[:2] == PROMPT and [m["role"] for m in second[2:]] == ["assistant", "tool"]


def test_a_deterministic_provider_repeats_its_answer_exactly(case: Case) -> None:
    assert case.provider.deterministic
    assert case.answer(FIRST) == case.answer(FIRST) == FIRST_ANSWER
    assert case.answer(SECOND) == case.answer(SECOND) == SECOND_ANSWER


# -- when there is no answer ----------------------------------------------------------------------


def test_a_stream_cut_short_raises_what_the_contract_says_after_a_prefix_of_the_answer(case: Case) -> None:
    if case.cut_short is None:
        pytest.skip("the scripted model streams from memory: nothing can cut it")
    events: list[Event] = []
    with pytest.raises((StreamInterrupted, ProviderError)) as raised:
        for event in case.cut_short().stream(FIRST):
            if not isinstance(event, ToolCallDelta):
                events.append(event)

    assert type(raised.value) is case.cut_error
    assert events == FIRST_ANSWER[: len(events)] and len(events) >= 1
    assert not any(isinstance(event, ToolCallRequest) for event in events)


def test_a_failure_before_anything_streamed_is_a_retry_then_the_whole_answer(case: Case) -> None:
    if case.flaky is None:
        pytest.skip("only a provider that talks to a server retries")
    case.flaky()
    events = case.answer(FIRST)

    assert_stream_shape(events)
    assert isinstance(events[0], Retry) and events[0].attempt == 1
    assert events[1:] == FIRST_ANSWER
