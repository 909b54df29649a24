"""The command provider: a real program (tests/data/model_jobs/tiny_model.py) is the model."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.support.cli import CliResult, run_until_killed
from tests.support.jobs import READ, WRITE
from tests.support.paths import DATA
from tests.support.sessions import only_session, records_of

MODEL = DATA / "model_jobs" / "tiny_model.py"


def command_job(directory: Path, *flags: str, **model: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    job = {
        "name": "command-test",
        "prompt": {"system": "Be careful.", "user": "Write out.txt."},
        "model": {"provider": "command", "command": [sys.executable, str(MODEL), *flags], **model},
        "tools": [{**WRITE, "description": "Write a file."}, READ],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def run(cli: Callable[..., CliResult], job: Path, root: Path, workspace: Path, *more: str) -> CliResult:
    return cli("run", str(job), "--root", str(root), "--workspace", str(workspace), *more)


def requests(workspace: Path) -> list[dict[str, Any]]:
    lines = (workspace / "requests.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_program_streams_text_and_tool_calls_to_completion(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    result = run(cli, command_job(tmp_path / "job"), root, workspace, "--json")
    assert result.code == 0, result.stderr
    assert result.json["state"] == "COMPLETED"
    assert (workspace / "out.txt").read_text() == "from the model"

    first, second = requests(workspace)
    assert first["turn"] == 1 and first["model"] == Path(sys.executable).name
    assert first["messages"] == [
        {"role": "system", "content": "Be careful."},
        {"role": "user", "content": "Write out.txt."},
    ]
    assert first["tools"][0] == {
        "name": "write_file",
        "description": "Write a file.",
        "parameters": {"type": "object", "properties": {}},
    }
    assert second["turn"] == 2
    assert second["messages"][2]["tool_calls"][0]["tool_call_id"] == "call-1-0"
    assert second["messages"][3]["role"] == "tool"

    shown = cli("inspect", result.json["session_id"], "--root", str(root), "--json").json
    assert [m.get("content") for m in shown["messages"] if m["role"] == "assistant"] == [
        "I will write the file now.",
        "Done.",
    ]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--bad-line",), "the model program's output line 2 is not JSON: 'this is not json'"),
        (
            ("--exit", "3"),
            "the model program exited with status 3; its stderr ends with: model runner: out of memory",
        ),
        (("--no-done",), 'the model program ended without {"done": true}'),
    ],
)
def test_a_misbehaving_program_fails_the_session_with_a_clear_error(
    cli: Callable[..., CliResult],
    root: Path,
    workspace: Path,
    tmp_path: Path,
    flags: tuple[str, ...],
    said: str,
) -> None:
    result = run(cli, command_job(tmp_path / "job", *flags), root, workspace, "--json")
    assert result.code == 7, result.stderr
    assert result.json["state"] == "FAILED"
    assert said in result.json["reason"]
    records = records_of(root, result.json["session_id"])
    assert [r.data["reason"] for r in records if r.type == "model.stream_aborted"] == ["provider_error"]
    assert not (workspace / "out.txt").exists()


def test_a_program_that_does_not_exist_fails_with_a_hint(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    job = tmp_path / "job" / "job.toml"
    command_job(tmp_path / "job")
    data = job.read_text().replace(str(MODEL), str(tmp_path / "no-such-model"))
    job.write_text(data.replace(sys.executable, str(tmp_path / "no-such-python")))
    result = run(cli, job, root, workspace)
    assert result.code == 7
    assert "could not start the model program" in result.stdout + result.stderr
    assert "[model] command" in result.stderr


def test_a_crash_mid_stream_is_recovered_by_asking_the_program_again(
    env: dict[str, str], cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    job = command_job(tmp_path / "job", "--slow")
    crashed = run_until_killed(env, root, workspace, job, crash_at="mid_stream:3")
    assert crashed.returncode == -9, crashed.stderr
    session_id = only_session(root)
    streamed = [r.data["text"] for r in records_of(root, session_id) if r.type == "model.chunk"]
    assert len(streamed) >= 2 and not (workspace / "out.txt").exists()
    assert cli("inspect", session_id, "--root", str(root), "--json").json["state"] == "INTERRUPTED"

    again = cli("recover", session_id, "--root", str(root), "--json")
    assert again.code == 0, again.stderr
    assert again.json["state_after"] == "COMPLETED"
    assert (workspace / "out.txt").read_text() == "from the model"
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    assert shown["messages"][2]["content"] == "I will write the file now."
    (abandoned,) = shown["abandoned_streams"]
    assert abandoned["turn"] == 1 and abandoned["reason"] == "process_stopped"
    assert "I will write the file now.".startswith(abandoned["text"]) and abandoned["text"]
    assert len(requests(workspace)) == 3  # turn 1 twice (the crash), then turn 2
