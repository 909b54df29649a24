"""What a failed call to an OpenAI-compatible server does to the session, against the loopback
server: a permanent server error is told from a transient one (so `recover --all` does not
exit 75 forever), a call that never connected is no abandoned stream, and the pieces of a
tool call already streamed are journaled, so a kill mid-call leaves a trace in `inspect`."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.storage.journal import records
from tests.support.cli import CliResult, start_run, wait_for
from tests.support.openai_server import FakeOpenAI, error, sse, text_events, tool_call_events
from tests.support.sessions import only_session, records_of
from tests.test_openai_provider import KEY, KEY_VAR, openai_job, recover, run, unused_port


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def error_event(message: str, code: int | None = 500) -> dict[str, Any]:
    """An error inside the stream, as llama.cpp's server sends it after the 200."""
    body: dict[str, Any] = {"message": message, "type": "server_error"}
    if code is not None:
        body["code"] = code
    return {"error": body}


def types_of(root: Path, session_id: str) -> list[str]:
    return [r.type for r in records_of(root, session_id)]


# -- permanent or transient ---------------------------------------------------------------------


def test_a_server_error_that_answers_every_attempt_alike_fails_the_session_with_guidance(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    """llama-cpp-python's 500 to a request it cannot handle: the same answer to the same body,
    whatever the timing. Pausing (exit 75) made every `recover --all` pause it again."""
    server.reply(*[error(500, "can only concatenate str", Retry_After="0") for _ in range(5)])
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 7, result.stderr
    assert result.json["state"] == "FAILED"
    assert "HTTP 500: can only concatenate str" in result.json["reason"]
    assert "same error answered all 5 attempts" in result.json["reason"]
    fork = f"handshake recover {result.json['session_id']} --fork NEW_ID --from-checkpoint ck-1"
    assert fork in result.json["hint"] and "server's log" in result.json["hint"]
    assert len(server.requests) == 5
    session_id = result.json["session_id"]
    assert [r.data["attempt"] for r in records_of(root, session_id) if r.type == "model.retry"] == [
        1,
        2,
        3,
        4,
    ]

    again = cli("recover", "--all", "--root", str(root), "--json", extra_env={KEY_VAR: KEY})
    assert again.code == 0, again.stderr
    assert len(server.requests) == 5  # nothing asked again

    # The server fixed, the hint's way on: a fork from the last checkpoint, recovered.
    forked = recover(cli, session_id, root, "--fork", "fixed", "--from-checkpoint", "ck-1")
    assert forked.code == 0, forked.stderr
    server.reply(sse(text_events(["fixed"])))
    resumed = recover(cli, "fixed", root, "--json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.json["state_after"] == "COMPLETED"


def test_server_errors_that_change_between_attempts_are_transient(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    """OpenAI's own 500s name a new request id each time: a server having a bad moment."""
    server.reply(*[error(500, f"server error (request req_{i})", Retry_After="0") for i in range(5)])
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 75, result.stderr
    assert result.json["state"] == "PAUSED"
    assert "gave up after 5 attempts" in result.json["reason"]


def test_a_request_timeout_is_retried_not_a_refusal(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(error(408, "request timed out", Retry_After="0"), sse(text_events(["fine"])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert len(server.requests) == 2


def test_an_unprocessable_request_fails_at_once(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    server.reply(error(422, "tool_choice is not supported"))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 7, result.stderr
    assert len(server.requests) == 1


def test_an_error_event_saying_the_request_is_invalid_fails_at_once(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    events = [*text_events(["Let ", "me "], done=False), error_event("the prompt is too long", 400)]
    server.reply(sse(events))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 7, result.stderr
    assert "the server reported an error mid-stream: the prompt is too long" in result.json["reason"]
    assert len(server.requests) == 1


def test_an_error_event_mid_answer_is_asked_again_in_the_same_run(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    """What the failed attempt streamed is abandoned (reason `retried`), the call is made again
    at once, and the answer is the second attempt's alone."""
    failed = [*text_events(["Half ", "an "], done=False), error_event("slot unavailable")]
    server.reply(sse(failed), sse(text_events(["A ", "whole ", "answer."])))
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 0, result.stderr
    session_id = result.json["session_id"]
    kinds = [t for t in types_of(root, session_id) if t.startswith("model.") and t != "model.chunk"]
    assert kinds == [
        "model.request",
        "model.stream_aborted",
        "model.request",
        "model.retry",
        "model.completed",
    ]
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    assert shown["messages"][-1]["content"] == "A whole answer."
    assert [(s["reason"], s["text"]) for s in shown["abandoned_streams"]] == [("retried", "Half an ")]


def test_an_error_event_that_comes_back_on_every_attempt_fails_the_session(
    cli: Callable[..., CliResult], server: FakeOpenAI, root: Path, workspace: Path, tmp_path: Path
) -> None:
    """A template or parser failure after the same text every time recurs whatever the timing:
    before, each attempt paused the session, and every recovery paused it again."""
    failed = [*text_events(["Same ", "words "], done=False), error_event("Failed to parse tool call")]
    server.reply(*[sse(failed) for _ in range(5)])
    result = run(cli, openai_job(tmp_path / "job", server.url), root, workspace, "--json")
    assert result.code == 7, result.stderr
    assert "Failed to parse tool call" in result.json["reason"]
    assert len(server.requests) == 5
    records = records_of(root, result.json["session_id"])
    reasons = [r.data["reason"] for r in records if r.type == "model.stream_aborted"]
    assert reasons == ["retried"] * 4 + ["provider_error"]


# -- what inspect lists ---------------------------------------------------------------------------


def test_a_call_that_never_connected_is_not_an_abandoned_stream(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    result = run(cli, openai_job(tmp_path / "job", url), root, workspace, "--json")
    assert result.code == 75, result.stderr
    session_id = result.json["session_id"]
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    assert shown["abandoned_streams"] == []
    assert "abandoned model calls" not in cli("inspect", session_id, "--root", str(root)).stdout
    # Asked again and unreachable again: still nothing streamed, still no abandoned stream.
    again = recover(cli, session_id, root, "--json")
    assert again.code == 75, again.stderr
    assert cli("inspect", session_id, "--root", str(root), "--json").json["abandoned_streams"] == []


def test_a_kill_mid_tool_call_leaves_its_streamed_pieces_in_inspect(
    env: dict[str, str],
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    args = {"path": "notes/a-long-file-name.txt", "content": "x" * 200}
    server.reply(sse(tool_call_events([("write_file", args)], text=["Writing."], pieces=40), delay=0.05))
    job = openai_job(tmp_path / "job", server.url)
    proc = start_run({**env, KEY_VAR: KEY}, root, workspace, job)
    wait_for(lambda: (root / "sessions").exists() and any((root / "sessions").iterdir()))
    session_id = only_session(root)
    wait_for(lambda: any(r.data.get("arguments") for r in records_of(root, session_id)))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)

    pieces = [r.data for r in records_of(root, session_id) if r.type == "model.tool_call_chunk"]
    assert pieces[0]["name"] == "write_file" and pieces[0]["call"] == 0 and pieces[0]["index"] == 0
    streamed = "".join(piece["arguments"] for piece in pieces)
    whole = json.dumps(args)
    assert streamed and streamed != whole and whole.startswith(streamed)
    assert not (workspace / "notes").exists()
    events = cli("inspect", session_id, "--root", str(root), "--events").stdout
    assert "model.tool_call_chunk" in events  # the trace, before any recovery

    server.reply(sse(text_events(["Not ", "now."])))
    again = recover(cli, session_id, root, "--json")
    assert again.code == 0, again.stderr
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    (abandoned,) = shown["abandoned_streams"]
    assert abandoned["reason"] == "process_stopped" and abandoned["text"] == "Writing."
    assert abandoned["tool_calls"] == [{"call": 0, "name": "write_file", "arguments": streamed}]
    human = cli("inspect", session_id, "--root", str(root)).stdout
    assert f"tool call write_file: {streamed[:40]}" in human


def test_a_stop_mid_tool_call_is_served_and_its_pieces_are_kept(
    env: dict[str, str],
    cli: Callable[..., CliResult],
    server: FakeOpenAI,
    root: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    """Before, a Ctrl-C waited for the end of a tool call's stream, however long."""
    args = {"path": "b.txt", "content": "y" * 300}
    server.reply(sse(tool_call_events([("write_file", args)], pieces=100), delay=0.05))
    job = openai_job(tmp_path / "job", server.url)
    proc = start_run({**env, KEY_VAR: KEY}, root, workspace, job)
    wait_for(lambda: (root / "sessions").exists() and any((root / "sessions").iterdir()))
    session_id = only_session(root)
    wait_for(lambda: "model.tool_call_chunk" in types_of(root, session_id))
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    (abandoned,) = shown["abandoned_streams"]
    assert abandoned["reason"] == "cancelled" and abandoned["tool_calls"][0]["name"] == "write_file"
    assert len(server.requests) == 1


# -- the new record's shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"turn": 1, "call": 0, "index": 0, "count": 2, "name": "write_file", "arguments": '{"pa'}, None),
        ({"turn": 1, "call": 1, "index": 3, "count": 1, "arguments": "th"}, None),
        ({"turn": 1, "call": "0", "index": 0, "count": 1, "arguments": ""}, "call"),
        ({"turn": 1, "call": 0, "index": 0, "count": 1, "arguments": {"path": "x"}}, "arguments"),
        ({"turn": 1, "call": 0, "index": 0, "count": 1, "name": None, "arguments": ""}, "name"),
        ({"turn": True, "call": 0, "index": 0, "count": 1, "arguments": ""}, "turn"),
    ],
)
def test_a_tool_call_chunk_of_another_shape_is_damage(data: dict[str, Any], problem: str | None) -> None:
    found = records.data_problem("model.tool_call_chunk", data)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
