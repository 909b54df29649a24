"""The openai provider against a real HTTP server on loopback (tests/support/openai_server.py),
driven through the console script as a user would, then read back from the session's files."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from handshake_cli.engine.providers.openai import _lines
from tests.support.cli import CliResult, start_run, wait_for
from tests.support.jobs import READ, WRITE
from tests.support.openai_server import FakeOpenAI, error, sse, text_events, tool_call_events
from tests.support.sessions import only_session, records_of

KEY_VAR = "HANDSHAKE_TEST_OPENAI_KEY"
KEY = "sk-test-4f9a2c8e1b7d3f6a0e5c9b2d8a1f7e3c"  # the shape the masker knows, too

DESCRIBED_WRITE = {
    **WRITE,
    "description": "Write a text file in the workspace.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def openai_job(directory: Path, url: str, tools: list[dict[str, Any]] | None = None, **model: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    job = {
        "name": "openai-test",
        "prompt": {"system": "Be careful.", "user": "Write a.txt, then say done."},
        "model": {
            "provider": "openai",
            "base_url": url,
            "model": "test-model",
            "api_key_env": KEY_VAR,
            "temperature": 0,
            "seed": 7,
            **model,
        },
        "tools": tools if tools is not None else [DESCRIBED_WRITE, READ],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def run(cli: Callable[..., CliResult], job: Path, root: Path, workspace: Path, *more: str) -> CliResult:
    return cli(
        "run", str(job), "--root", str(root), "--workspace", str(workspace), *more, extra_env={KEY_VAR: KEY}
    )


def recover(cli: Callable[..., CliResult], session_id: str, root: Path, *more: str) -> CliResult:
    return cli("recover", session_id, "--root", str(root), *more, extra_env={KEY_VAR: KEY})


def assert_key_stored_nowhere(*directories: Path) -> None:
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path


# -- streaming ------------------------------------------------------------------------------


def test_plain_text_streams_into_the_journal_and_completes(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(sse(text_events(["Hello", ", ", "wor", "ld", "."])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert result.json["state"] == "COMPLETED"
    session_id = result.json["session_id"]

    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "test-model" and body["stream"] is True
    assert body["temperature"] == 0 and body["seed"] == 7
    assert body["messages"] == [
        {"role": "system", "content": "Be careful."},
        {"role": "user", "content": "Write a.txt, then say done."},
    ]
    advertised = {tool["function"]["name"]: tool["function"] for tool in body["tools"]}
    assert advertised["write_file"]["description"] == "Write a text file in the workspace."
    assert advertised["write_file"]["parameters"]["required"] == ["path", "content"]
    assert advertised["read_file"]["parameters"] == {"type": "object", "properties": {}}

    records = records_of(root, session_id)
    streamed = "".join(r.data["text"] for r in records if r.type == "model.chunk")
    assert streamed == "Hello, world."
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    assert shown["messages"][-1] == {"role": "assistant", "content": "Hello, world."}
    assert shown["model"]["id"] == "test-model"
    assert_key_stored_nowhere(root, workspace)
    assert KEY not in result.stdout + result.stderr


def test_a_tool_call_split_across_deltas_runs_and_its_result_goes_back(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(
        sse(tool_call_events([("write_file", {"path": "a.txt", "content": "written by a tool"})], pieces=5)),
        sse(text_events(["done"])),
    )
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert (workspace / "a.txt").read_text() == "written by a tool"

    second = server.requests[1]["body"]["messages"]
    assistant, tool = second[2], second[3]
    assert assistant["role"] == "assistant" and assistant["content"] == ""
    assert assistant["tool_calls"] == [
        {
            "id": "call-1-0",
            "type": "function",
            "function": {
                "name": "write_file",
                "arguments": '{"path": "a.txt", "content": "written by a tool"}',
            },
        }
    ]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call-1-0"
    assert "written" in tool["content"] or "a.txt" in tool["content"]
    assert second[-1] == tool  # nothing after the result


def test_an_assistant_message_with_tool_calls_is_sent_with_empty_text_not_null(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    """llama-cpp-python's server answers 500 to `"content": null`: the session could never get
    past its first tool call there."""
    with FakeOpenAI(strict_content=True) as strict:
        strict.reply(
            sse(tool_call_events([("write_file", {"path": "a.txt", "content": "hi"})])),
            sse(text_events(["done"])),
        )
        result = run(cli, openai_job(tmp_path / "job", strict.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert len(strict.requests) == 2
    assistant = strict.requests[1]["body"]["messages"][2]
    assert assistant["content"] == "" and assistant["tool_calls"][0]["id"] == "call-1-0"


@pytest.mark.parametrize(
    ("setting", "sent"),
    [
        ({"tool_choice": "auto"}, {"tool_choice": "auto"}),
        ({"tool_choice": "required"}, {"tool_choice": "required"}),
        (
            {"tool_choice": "write_file", "parallel_tool_calls": False},
            {
                "tool_choice": {"type": "function", "function": {"name": "write_file"}},
                "parallel_tool_calls": False,
            },
        ),
        ({"max_completion_tokens": 64}, {"max_completion_tokens": 64}),
        ({}, {}),
    ],
)
def test_tool_choice_and_parallel_tool_calls_are_sent_as_the_job_says(
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
    setting: dict[str, Any],
    sent: dict[str, Any],
) -> None:
    server.reply(sse(text_events(["ok"])))
    result = run(cli, openai_job(tmp_path / "job", server.url, **setting), root, workspace, "--json")
    assert result.code == 0, result.stderr
    body = server.requests[0]["body"]
    keys = ("tool_choice", "parallel_tool_calls", "max_completion_tokens")
    assert {key: body[key] for key in keys if key in body} == sent
    stored = cli("inspect", result.json["session_id"], "--root", str(root), "--json").json
    assert stored["state"] == "COMPLETED"


def test_tool_choice_and_parallel_tool_calls_are_left_out_without_tools(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    """OpenAI refuses both (HTTP 400) in a request without tools."""
    server.reply(sse(text_events(["ok"])))
    job = openai_job(tmp_path / "job", server.url, [], tool_choice="auto", parallel_tool_calls=True)
    result = run(cli, job, root, workspace, "--json")
    assert result.code == 0, result.stderr
    body = server.requests[0]["body"]
    assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"tool_choice": "any"}, "model.tool_choice is 'any', which is neither one of auto, none, required"),
        ({"tool_choice": ""}, "model.tool_choice is empty"),
        ({"tool_choice": 1}, "model.tool_choice must be a string"),
        ({"parallel_tool_calls": "yes"}, "model.parallel_tool_calls must be true or false"),
        ({"max_completion_tokens": 0}, "model.max_completion_tokens must be at least 1"),
    ],
)
def test_bad_tool_choice_or_parallel_tool_calls_are_refused_before_anything_runs(
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
    setting: dict[str, Any],
    said: str,
) -> None:
    result = run(cli, openai_job(tmp_path / "job", server.url, **setting), root, workspace)
    assert result.code == 2, result.stderr
    assert said in result.stderr
    assert server.requests == []


def test_several_tool_calls_in_one_turn_with_interleaved_deltas(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    calls = [
        ("write_file", {"path": "one.txt", "content": "1"}),
        ("write_file", {"path": "two.txt", "content": "22"}),
        ("write_file", {"path": "three.txt", "content": "333"}),
    ]
    server.reply(
        sse(tool_call_events(calls, text=["Writing ", "three files."], interleave=True)),
        sse(text_events(["All ", "written."])),
    )
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert [(workspace / n).read_text() for n in ("one.txt", "two.txt", "three.txt")] == ["1", "22", "333"]
    records = records_of(root, result.json["session_id"])
    intents = [r.data for r in records if r.type == "tool.intent"]
    assert [(i["tool_call_id"], i["args"]["path"]) for i in intents] == [
        ("call-1-0", "one.txt"),
        ("call-1-1", "two.txt"),
        ("call-1-2", "three.txt"),
    ]
    first = next(r.data["message"] for r in records if r.type == "model.completed")
    assert first["content"] == "Writing three files."


def test_arguments_that_are_not_json_are_a_tool_error_the_model_sees(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    events = tool_call_events([("write_file", {"path": "x"})])
    for event in events:  # break the JSON of the arguments
        if isinstance(event, dict):
            for delta in event["choices"][0]["delta"].get("tool_calls") or []:
                if delta["function"].get("arguments"):
                    delta["function"]["arguments"] = delta["function"]["arguments"].replace('"', "'")
    server.reply(sse(events), sse(text_events(["sorry"])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    records = records_of(root, result.json["session_id"])
    outcome = next(r.data for r in records if r.type == "tool.result")
    assert outcome["error"]["code"] == "invalid_arguments"
    assert not (workspace / "x").exists()
    wire = server.requests[1]["body"]["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert wire == "{'path': 'x'}"  # the model is shown what it sent


# -- failures before the first chunk: retried -------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "said"),
    [(error(429, "slow down", Retry_After="0"), "HTTP 429"), (error(500, "boom"), "HTTP 500: boom")],
)
def test_a_busy_or_failing_server_is_retried_and_the_attempt_journaled(
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
    failure: Any,
    said: str,
) -> None:
    server.reply(failure, sse(text_events(["fine ", "now"])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert len(server.requests) == 2
    assert server.requests[0]["body"] == server.requests[1]["body"]
    records = records_of(root, result.json["session_id"])
    retries = [r.data for r in records if r.type == "model.retry"]
    assert len(retries) == 1 and retries[0]["attempt"] == 1 and retries[0]["turn"] == 1
    assert said in retries[0]["reason"]
    assert next(r for r in records if r.type == "model.completed").data["message"]["content"] == "fine now"


def test_a_server_that_stays_unavailable_leaves_a_paused_session(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(*[error(503, "overloaded", Retry_After="0") for _ in range(5)])
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace)
    assert result.code == 75, result.stderr
    session_id = only_session(root)
    assert f"handshake recover {session_id} --root {root}" in result.stderr
    records = records_of(root, session_id)
    assert [r.data["attempt"] for r in records if r.type == "model.retry"] == [1, 2, 3, 4]
    paused = [r.data["reason"] for r in records if r.type == "session.state_change"][-1]
    assert "HTTP 503: overloaded" in paused and "gave up after 5 attempts" in paused
    server.reply(sse(text_events(["back"])))
    again = recover(cli, session_id, root, "--json")
    assert again.code == 0, again.stderr
    assert again.json["state_after"] == "COMPLETED"


def test_nothing_listening_is_retried_then_paused(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    result = run(cli, openai_job(tmp_path / "job", url), root, workspace, "--json")
    assert result.code == 75, result.stderr
    assert result.json["state"] == "PAUSED"
    records = records_of(root, result.json["session_id"])
    reasons = [r.data["reason"] for r in records if r.type == "model.retry"]
    assert len(reasons) == 4 and all("could not reach" in reason for reason in reasons)


def unused_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- refused: the session fails, and the key is never echoed --------------------------------


def test_401_fails_the_session_naming_the_variable_never_the_key(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(error(401, f"Incorrect API key provided: {KEY}"))
    job = openai_job(tmp_path / "job", server.url)
    human = run(cli, job, root, workspace)
    assert human.code == 7, human.stderr
    assert KEY_VAR in human.stderr
    assert KEY not in human.stdout + human.stderr
    assert len(server.requests) == 1  # not retried

    server.reply(error(403, "forbidden"))
    as_json = run(cli, job, root, workspace, "--json")
    assert as_json.code == 7
    assert as_json.json["state"] == "FAILED"
    assert KEY_VAR in as_json.json["hint"]
    assert any(KEY_VAR in line for line in as_json.json["guidance"])
    assert_key_stored_nowhere(root, workspace)


def test_a_bad_request_fails_with_the_servers_message(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(error(400, "model 'test-model' does not support tools"))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 7
    assert "does not support tools" in result.json["reason"]


def test_a_missing_key_variable_is_exit_2_and_creates_nothing(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    job = openai_job(tmp_path / "job", server.url)
    result = cli("run", str(job), "--root", str(root), "--workspace", str(workspace))
    assert result.code == 2
    assert KEY_VAR in result.stderr and "not set" in result.stderr
    assert not (root / "sessions").exists() or not any((root / "sessions").iterdir())
    assert server.requests == []


def test_secrets_the_server_sends_back_are_masked(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    aws = "AKIAIOSFODNN7EXAMPLE"
    server.reply(sse(text_events(["your key is ", KEY[:10], KEY[10:], " and ", aws[:6], aws[6:], "."])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    content = cli("inspect", result.json["session_id"], "--root", str(root), "--json").json["messages"][-1]
    assert KEY not in content["content"] and aws not in content["content"]
    assert "[masked:" in content["content"]
    assert_key_stored_nowhere(root, workspace)
    for path in root.rglob("*"):
        if path.is_file():
            assert aws.encode() not in path.read_bytes()


# -- cut short: recoverable -----------------------------------------------------------------


def test_a_disconnect_mid_stream_pauses_and_recovery_asks_again(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(sse(text_events(["The ", "first ", "attempt ", "never ", "ends"]), cut_after=4))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 75, result.stderr
    assert result.json["state"] == "PAUSED"
    session_id = result.json["session_id"]
    aborted = [r.data for r in records_of(root, session_id) if r.type == "model.stream_aborted"]
    assert aborted and aborted[0]["reason"] == "interrupted"

    server.reply(sse(text_events(["A ", "second, ", "whole ", "answer."])))
    again = recover(cli, session_id, root, "--json")
    assert again.code == 0, again.stderr
    assert again.json["state_after"] == "COMPLETED"
    assert server.requests[1]["body"] == server.requests[0]["body"]  # the same call, made again

    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    assert shown["messages"][-1]["content"] == "A second, whole answer."
    assert [(s["turn"], s["reason"], s["text"]) for s in shown["abandoned_streams"]] == [
        (1, "interrupted", "The first attempt ")
    ]
    human = cli("inspect", session_id, "--root", str(root)).stdout
    assert "abandoned model calls (1)" in human and "The first attempt" in human


def test_a_server_that_goes_silent_times_out_into_a_paused_session(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(sse(text_events(["slow"]), delay=3.0))
    job = openai_job(tmp_path / "job", server.url, timeout_seconds=0.5)
    result = run(cli, job, root, workspace, "--json")
    assert result.code == 75, result.stderr
    assert "went silent for 0.5 s" in result.json["reason"]


def test_sigint_during_a_slow_stream_pauses_then_recovers(
    env: dict[str, str],
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    words = [f"word{i} " for i in range(40)]
    server.reply(sse(text_events(words), delay=0.1))
    job = openai_job(tmp_path / "job", server.url)
    proc = start_run({**env, KEY_VAR: KEY}, root, workspace, job)
    wait_for(lambda: (root / "sessions").exists() and any((root / "sessions").iterdir()))
    session_id = only_session(root)
    wait_for(lambda: any(r.type == "model.chunk" for r in records_of(root, session_id)))
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    records = records_of(root, session_id)
    assert [r.data["reason"] for r in records if r.type == "model.stream_aborted"] == ["cancelled"]
    assert records[-1].type == "checkpoint.created"

    server.reply(sse(text_events(["resumed ", "answer"])))
    again = recover(cli, session_id, root, "--json")
    assert again.code == 0, again.stderr
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    assert shown["state"] == "COMPLETED"
    assert shown["messages"][-1]["content"] == "resumed answer"
    assert shown["abandoned_streams"][0]["reason"] == "cancelled"
    assert shown["abandoned_streams"][0]["text"].startswith("word0 ")


# -- the example jobs -------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["ollama", "openai"])
def test_the_example_jobs_run_the_quickstart_task_against_a_compatible_server(
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
    example: str,
) -> None:
    jobs = Path(__file__).resolve().parent.parent / "fixtures" / "jobs"
    copy = tmp_path / "jobs"
    copy.mkdir()
    (copy / "notify.py").write_bytes((jobs / "notify.py").read_bytes())
    text = (jobs / f"{example}.toml").read_text()
    original = next(line for line in text.splitlines() if line.startswith("base_url = "))
    (copy / "job.toml").write_text(text.replace(original, f'base_url = "{server.url}"'))
    hello = "quickstart-output/hello.txt"
    server.reply(
        sse(tool_call_events([("write_file", {"path": hello, "content": "hello"})])),
        sse(tool_call_events([("read_file", {"path": hello})])),
        sse(tool_call_events([("notify", {"message": "hello.txt exists"})])),
        sse(text_events(["Wrote ", "it ", "and ", "told ", "the ", "team."])),
    )
    result = cli(
        "run",
        str(copy / "job.toml"),
        "--root",
        str(root),
        "--workspace",
        str(workspace),
        "--json",
        extra_env={"OPENAI_API_KEY": KEY},
    )
    assert result.code == 0, result.stderr
    assert (workspace / hello).read_text() == "hello"
    assert len((workspace / "quickstart-output" / "notifications.log").read_text().splitlines()) == 1
    first = server.requests[0]
    names = [tool["function"]["name"] for tool in first["body"]["tools"]]
    assert names == ["write_file", "read_file", "notify"]
    assert first["body"]["tools"][2]["function"]["parameters"]["required"] == ["message"]
    assert ("Authorization" in first["headers"]) == (example == "openai")


def test_tool_calls_without_an_index_are_told_apart_by_their_ids(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    events = tool_call_events(
        [("write_file", {"path": "p.txt", "content": "P"}), ("write_file", {"path": "q.txt", "content": "Q"})]
    )
    for event in events:  # some servers send each call whole, with an id and no index
        if isinstance(event, dict):
            for delta in event["choices"][0]["delta"].get("tool_calls") or []:
                if "id" not in delta:
                    delta.pop("index")
    server.reply(sse(events), sse(text_events(["ok"])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert (workspace / "p.txt").read_text() == "P" and (workspace / "q.txt").read_text() == "Q"


def test_recover_without_the_key_is_exit_2_and_changes_nothing(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(sse(text_events(["cut ", "short ", "here"]), cut_after=2))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 75, result.stderr
    session = root / "sessions" / result.json["session_id"]
    before = {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    refused = cli("recover", result.json["session_id"], "--root", str(root))
    assert refused.code == 2
    assert f"{KEY_VAR}, which is not set" in refused.stderr
    assert {p: p.read_bytes() for p in session.rglob("*") if p.is_file()} == before
    assert len(server.requests) == 1


def test_a_server_that_does_not_stream_fails_the_session_rather_than_looping(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(sse(text_events(["x"]), content_type="application/json"))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 7, result.stderr
    assert "not a stream of events" in result.json["reason"]


def test_a_lone_surrogate_the_server_streamed_does_not_break_the_next_request(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    calls = [("write_file", {"path": "s.txt", "content": "ok"})]
    server.reply(sse(tool_call_events(calls, text=["half an emoji: \ud83d", " then a call"])))
    server.reply(sse(text_events(["fine"])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert server.requests[1]["body"]["messages"][2]["content"] == "half an emoji: \ud83d then a call"


def test_line_separators_inside_the_json_are_text_not_line_ends(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    """JSON leaves U+2028, U+2029 and U+0085 unescaped, as some servers send them; only CR and
    LF end a line of the stream (httpx's iter_lines split there too, and the session failed)."""
    pieces = ["one\u2028two", "\u2029three\x85four"]
    events = [json.dumps(e, ensure_ascii=False) if isinstance(e, dict) else e for e in text_events(pieces)]
    server.reply(sse(events))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    records = records_of(root, result.json["session_id"])
    assert "".join(r.data["text"] for r in records if r.type == "model.chunk") == "".join(pieces)


@pytest.mark.parametrize(
    "chunks",
    [
        ["data: a\r\n\r\ndata: b\n\n"],
        ["data: a\r", "\n\r", "\ndata: b\n", "\n"],
        ["data: a\r\rdata: b\r\r"],
        ["da", "ta: a\n", "\nda", "ta: b\n\n"],
    ],
)
def test_lines_end_at_crlf_cr_or_lf_wherever_the_chunks_break(chunks: list[str]) -> None:
    assert list(_lines(chunks)) == ["data: a", "", "data: b", ""]
