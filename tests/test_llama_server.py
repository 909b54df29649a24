"""Opt-in (`pytest -m llama`): the quickstart task against llama.cpp's real server with
SmolLM2-135M, a kill mid-stream and the recovery, through the console script. What it needs
and how to get it: docs/REAL_MODELS.md; without it every test here is skipped, saying what
is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import llama_server
from tests.support.cli import CliResult, start_run, wait_for
from tests.support.sessions import only_session, records_of

pytestmark = pytest.mark.llama

JOBS = Path(__file__).resolve().parent.parent / "fixtures" / "jobs"
# A model answering on a CPU shared with other work can take minutes: the `cli` fixture's 60 s
# is for commands that do not wait for a model.
MODEL_COMMAND_SECONDS = 600


@pytest.fixture
def slow_cli(env: dict[str, str]) -> Callable[..., CliResult]:
    def run(*args: str) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "handshake_cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=MODEL_COMMAND_SECONDS,
            check=False,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llama_server.LlamaServer]:
    reason = llama_server.missing()
    if reason:
        pytest.skip(reason)
    server = llama_server.start(tmp_path_factory.mktemp("llama") / "server.log")
    try:
        yield server
    finally:
        server.stop()


def quickstart_job(directory: Path, url: str, *, user: str | None = None, max_tokens: int = 200) -> Path:
    """fixtures/jobs/ollama.toml (the quickstart's task for a local model), pointed at `url`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "notify.py").write_bytes((JOBS / "notify.py").read_bytes())
    lines = []
    for line in (JOBS / "ollama.toml").read_text().splitlines():
        if line.startswith("base_url = "):
            line = f'base_url = "{url}"'
        elif line.startswith("model = "):
            line = f'model = "smollm2-135m"\nmax_tokens = {max_tokens}'
        elif line.startswith("user = ") and user is not None:
            line = f"user = {user!r}"
        lines.append(line)
    path = directory / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def streamed_after_last_request(root: Path, session_id: str) -> str:
    records = records_of(root, session_id)
    last = max(i for i, r in enumerate(records) if r.type == "model.request")
    return "".join(r.data["text"] for r in records[last:] if r.type == "model.chunk")


def test_the_quickstart_task_runs_against_llama_cpp(
    cli: Callable[..., CliResult],
    slow_cli: Callable[..., CliResult],
    llama: llama_server.LlamaServer,
    root: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    job = quickstart_job(tmp_path / "job", llama.url)
    result = slow_cli("run", str(job), "--root", str(root), "--workspace", str(workspace), "--json")
    # SmolLM2-135M may answer at once, or call tools (whose results go back as the thread)
    # until it answers or max_turns ends the session: either way, the server took every request.
    assert result.code in (0, 7), result.stderr
    assert result.json["state"] == "COMPLETED" or "max_turns" in result.json["reason"], result.json
    session_id = result.json["session_id"]
    records = records_of(root, session_id)
    assert not [r.data for r in records if r.type == "model.retry"]
    assert not [r.data for r in records if r.type == "model.stream_aborted"]
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    last = shown["messages"][-1]
    assert last["role"] in ("assistant", "tool")
    if result.json["state"] == "COMPLETED":
        assert last["content"] and last["content"] == streamed_after_last_request(root, session_id)


def test_killed_mid_stream_then_recovered(
    env: dict[str, str],
    cli: Callable[..., CliResult],
    slow_cli: Callable[..., CliResult],
    llama: llama_server.LlamaServer,
    root: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    long_answer = "Tell the long story of a lighthouse keeper and the storm, in many paragraphs."
    job = quickstart_job(tmp_path / "job", llama.url, user=long_answer, max_tokens=240)
    proc = start_run(env, root, workspace, job)
    wait_for(lambda: (root / "sessions").exists() and any((root / "sessions").iterdir()), timeout=60)
    session_id = only_session(root)

    def chunks() -> int:
        return sum(r.type == "model.chunk" for r in records_of(root, session_id))

    wait_for(lambda: chunks() >= 3, timeout=MODEL_COMMAND_SECONDS)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = records_of(root, session_id)
    assert before[-1].type in ("model.chunk", "model.tool_call_chunk", "model.request", "checkpoint.created")
    assert not any(r.type == "model.completed" for r in before)

    plan = cli("recover", session_id, "--root", str(root), "--dry-run", "--json")
    assert plan.code == 0, plan.stderr
    assert plan.json["in_flight"]["turn"] == 1

    again = slow_cli("recover", session_id, "--root", str(root), "--json")
    assert again.code in (0, 7), again.stderr
    shown = cli("inspect", session_id, "--root", str(root), "--json").json
    (abandoned,) = shown["abandoned_streams"][:1]
    assert abandoned["turn"] == 1 and abandoned["reason"] == "process_stopped"
    assert abandoned["text"]  # what streamed before the kill is kept, apart from the answer
    if shown["state"] == "COMPLETED":
        assert shown["messages"][-1]["content"] == streamed_after_last_request(root, session_id)
    human = cli("inspect", session_id, "--root", str(root)).stdout
    assert "abandoned model calls" in human
