"""`handshake run`: a real session, end to end, through the console script.

Sessions run in real subprocesses with real tools; crashes are real SIGKILLs; stops are
real signals. Each test reads the session's files afterwards, as recovery or a person would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.scan import scan
from tests.support.cli import CliResult, run_until_killed, start_run, wait_for
from tests.support.jobs import READ, command_tool, write_job
from tests.support.paths import FIXTURES, REPO
from tests.support.sessions import only_session, records_of

QUICKSTART = FIXTURES / "jobs" / "quickstart.toml"


# -- the quickstart ------------------------------------------------------------------------


def test_quickstart_completes_and_every_tool_runs_once(
    cli: Callable[..., CliResult], root: Path, workspace: Path
) -> None:
    result = cli("run", str(QUICKSTART), "--root", str(root), "--workspace", str(workspace), "--json")
    assert result.code == 0, result.stdout + result.stderr
    doc = result.json
    assert doc["status"] == "ok" and doc["state"] == "COMPLETED"
    session_id = doc["session_id"]
    assert (workspace / "quickstart-output" / "hello.txt").read_text() == "Hello from handshake!\n"
    notifications = (workspace / "quickstart-output" / "notifications.log").read_text().splitlines()
    assert len(notifications) == 1 and notifications[0].endswith("\thello.txt is ready")

    records = records_of(root, session_id)
    intents = [r for r in records if r.type == "tool.intent"]
    results = [r for r in records if r.type == "tool.result"]
    assert [r.data["tool"] for r in intents] == ["write_file", "read_file", "notify"]
    assert [r.data["tool_call_id"] for r in results] == [r.data["tool_call_id"] for r in intents]
    for intent, outcome in zip(intents, results, strict=True):
        assert intent.seq < outcome.seq
        assert "error" not in outcome.data
        # A checkpoint follows every tool call, covering its result.
        after = records[outcome.seq]  # records are 1-based: this is the next one
        assert after.type == "checkpoint.created" and after.data["covers_seq"] == outcome.seq
    assert records[-1].type == "session.completed"
    inspect = cli("inspect", session_id, "--root", str(root), "--json").json
    assert inspect["state"] == "COMPLETED"
    assert inspect["checkpoint_count"] == doc["checkpoint_count"] >= 4
    assert inspect["integrity"]["verdict"] == "intact"
    assert [m["role"] for m in inspect["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]


def test_human_output_shows_text_tools_checkpoints_and_a_summary(
    cli: Callable[..., CliResult], root: Path, workspace: Path
) -> None:
    result = cli("run", str(QUICKSTART), "--root", str(root), "--workspace", str(workspace))
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "I'll write the greeting to hello.txt first" in out
    assert "→ notify" in out and "✓ notify done" in out
    assert "checkpoint ck-" in out and "(tool call completed)" in out
    assert out.strip().splitlines()[-1].startswith("session ")
    assert "COMPLETED after 4 turns, 3 tool calls" in out


def test_intent_is_synced_before_the_tool_runs(tmp_path: Path, workspace: Path) -> None:
    """Record every fdatasync of the journal; the intent's bytes must be covered before the
    tool's effect exists, and the result's before the next model request is journaled."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys, json\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "synced = []\n"
        "real = os.fdatasync\n"
        "def spy(fd):\n"
        "    real(fd)\n"
        "    path = os.readlink(f'/proc/self/fd/{fd}')\n"
        "    hello = os.path.exists(os.path.join(sys.argv[2], 'quickstart-output', 'hello.txt'))\n"
        "    synced.append((path, os.fstat(fd).st_size, hello))\n"
        "os.fdatasync = spy\n"
        "from handshake_cli.engine import launch\n"
        "from handshake_cli.engine.jobs import load_job\n"
        "from handshake_cli.paths import Paths\n"
        "from handshake_cli.storage.filesystem import FilesystemStore\n"
        "from pathlib import Path\n"
        "store = FilesystemStore(Paths(Path(sys.argv[1])))\n"
        "r = launch.start(load_job(sys.argv[3]), store, workspace=Path(sys.argv[2]))\n"
        "print(json.dumps({'session_id': r.session_id, 'synced': synced}))\n"
    )
    root = tmp_path / "root"
    out = subprocess.run(
        [sys.executable, str(probe), str(root), str(workspace), str(QUICKSTART)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    records = records_of(root, report["session_id"])
    journal_syncs = [(size, hello) for path, size, hello in report["synced"] if path.endswith(".jsonl")]
    intent = next(r for r in records if r.type == "tool.intent" and r.data["tool"] == "write_file")
    covering = [hello for size, hello in journal_syncs if size > intent.offset]
    assert covering and covering[0] is False, "the write_file intent was not durable before the file existed"
    result = next(r for r in records if r.type == "tool.result" and r.data["tool"] == "write_file")
    next_request = next(r for r in records if r.type == "model.request" and r.seq > result.seq)
    # A sync covering the result happened, and the next request's bytes came after it.
    assert any(result.offset < size <= next_request.offset for size, _ in journal_syncs)


# -- crashes at every named point ------------------------------------------------------------


def assert_durability_rules(root: Path, session_id: str) -> list[Record]:
    """What the write-ahead rules promise about any crashed session's files."""
    result = scan(root / "sessions" / session_id / "journal", session_id)
    assert result.corruption is None, result.corruption
    records = result.records
    intents = {r.data["tool_call_id"]: r for r in records if r.type == "tool.intent"}
    for outcome in (r for r in records if r.type == "tool.result"):
        assert outcome.data["tool_call_id"] in intents
        assert intents[outcome.data["tool_call_id"]].seq < outcome.seq
    seqs = [r.seq for r in records]
    assert seqs == list(range(1, len(seqs) + 1))
    for checkpoint in (r for r in records if r.type == "checkpoint.created"):
        assert checkpoint.data["covers_seq"] < checkpoint.seq
    return records


@pytest.mark.parametrize(
    ("point", "hello_exists", "last_types"),
    [
        ("mid_stream:3", False, {"model.chunk"}),
        ("before_intent", False, {"model.completed"}),
        ("after_intent", False, {"tool.intent"}),
        ("before_result", True, {"tool.intent"}),
        ("after_result", True, {"tool.result"}),
        ("mid_checkpoint:2", True, {"tool.result"}),
        ("after_checkpoint:2", True, {"checkpoint.created"}),
    ],
)
def test_a_crash_at_each_point_leaves_files_that_keep_the_rules(
    point: str, hello_exists: bool, last_types: set[str], env: dict[str, str], root: Path, workspace: Path
) -> None:
    proc = run_until_killed(env, root, workspace, QUICKSTART, point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    session_id = only_session(root)
    records = assert_durability_rules(root, session_id)
    assert records[-1].type in last_types
    assert (workspace / "quickstart-output" / "hello.txt").exists() is hello_exists
    if point.startswith("mid_checkpoint"):
        # The checkpoint after the write_file call was never written; the result was.
        assert [r.type for r in records].count("checkpoint.created") == 1
    listing = subprocess.run(
        [sys.executable, "-m", "handshake_cli", "inspect", "--root", str(root), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(listing.stdout)["sessions"][0]["state"] == "INTERRUPTED"
    verify = subprocess.run(
        [sys.executable, "-m", "handshake_cli", "inspect", session_id, "--verify", "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout


def test_a_crash_inside_a_tool_leaves_it_in_doubt(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    job = write_job(
        tmp_path / "job",
        [{"text": "Going down.", "tool_calls": [{"tool": "crashy", "args": {}}]}, {"text": "Never."}],
        [command_tool("crashy", "crashy.py")],
    )
    proc = run_until_killed(env, root, workspace, job)
    assert proc.returncode == -signal.SIGKILL
    assert (workspace / "crashy-started.txt").exists()
    session_id = only_session(root)
    records = assert_durability_rules(root, session_id)
    assert records[-1].type == "tool.intent"
    inspect = cli("inspect", session_id, "--root", str(root), "--json").json
    assert inspect["in_doubt_tool_calls"] == ["call-1-0"]


# -- stopping cooperatively ------------------------------------------------------------------


def last_checkpoint_reason(root: Path, session_id: str) -> str:
    records = records_of(root, session_id)
    return str([r for r in records if r.type == "checkpoint.created"][-1].data["reason"])


def test_sigint_mid_stream_pauses_with_a_checkpoint(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    job = write_job(tmp_path / "job", [{"text": words}], [], delay_ms=20)
    proc = start_run(env, root, workspace, job)
    wait_for(lambda: (root / "sessions").exists() and any((root / "sessions").iterdir()))
    session_id = only_session(root)
    wait_for(lambda: any(r.type == "model.chunk" for r in records_of(root, session_id)))
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert f"handshake recover {session_id} --root {root}" in err
    records = records_of(root, session_id)
    assert any(r.type == "model.stream_aborted" for r in records)
    assert not any(r.type == "model.completed" for r in records)
    assert last_checkpoint_reason(root, session_id) == "graceful shutdown"
    assert cli("inspect", session_id, "--root", str(root), "--json").json["state"] == "PAUSED"


def test_sigint_mid_tool_lets_the_tool_finish_then_pauses(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    job = write_job(
        tmp_path / "job",
        [{"text": "Sleeping.", "tool_calls": [{"tool": "slow", "args": {"seconds": 1}}]}, {"text": "Awake."}],
        [command_tool("slow", "slow_tool.py")],
    )
    proc = start_run(env, root, workspace, job)
    wait_for(lambda: (workspace / "slow-started.txt").exists())
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C does
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert (workspace / "slow-done.txt").exists(), "the tool was killed instead of finishing"
    session_id = only_session(root)
    records = records_of(root, session_id)
    assert [r.type for r in records if r.type.startswith("tool.")] == ["tool.intent", "tool.result"]
    assert "error" not in next(r for r in records if r.type == "tool.result").data
    assert last_checkpoint_reason(root, session_id) == "graceful shutdown"
    assert cli("inspect", session_id, "--root", str(root), "--json").json["state"] == "PAUSED"


# -- outcomes ------------------------------------------------------------------------------


def test_a_failing_tool_is_a_result_the_model_sees(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    job = write_job(
        tmp_path / "job",
        [
            {"text": "Trying.", "tool_calls": [{"tool": "fail", "args": {}}]},
            {"text": "It failed; I'll stop."},
        ],
        [command_tool("fail", "fail_tool.py")],
    )
    result = cli("run", str(job), "--root", str(root), "--workspace", str(workspace), "--json")
    assert result.code == 0 and result.json["state"] == "COMPLETED"
    messages = cli("inspect", result.json["session_id"], "--root", str(root), "--json").json["messages"]
    tool_message = next(m for m in messages if m["role"] == "tool")
    error = tool_message["content"]["error"]
    assert error["code"] == "exit_status" and error["retryable"] is False and "kind" in error


def test_max_turns_ends_a_runaway_session_failed(
    cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    looping = [
        {"text": f"Turn {i}.", "tool_calls": [{"tool": "read_file", "args": {"path": "x"}}]} for i in range(5)
    ]
    job = write_job(tmp_path / "job", [*looping, {"text": "Done."}], [READ], limits={"max_turns": 3})
    result = cli("run", str(job), "--root", str(root), "--workspace", str(workspace), "--json")
    assert result.code == 7, result.stdout
    assert result.json["state"] == "FAILED" and "max_turns" in result.json["reason"]
    assert result.json["status"] == "failed"
    assert result.json["guidance"][-1].startswith("handshake inspect ")


def test_run_with_an_existing_session_id_is_exit_2(
    cli: Callable[..., CliResult], root: Path, workspace: Path
) -> None:
    first = cli(
        "run", str(QUICKSTART), "--session-id", "mine", "--root", str(root), "--workspace", str(workspace)
    )
    assert first.code == 0
    again = cli(
        "run",
        str(QUICKSTART),
        "--session-id",
        "mine",
        "--root",
        str(root),
        "--workspace",
        str(workspace),
        "--json",
    )
    assert again.code == 2 and again.json["error"]["code"] == "session_exists"


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda job: job.write_text("name = [unclosed\n"), "line 1"),
        (
            lambda job: job.write_text(job.read_text().replace('provider = "scripted"', 'provider = "nope"')),
            "provider",
        ),
        (
            lambda job: job.write_text(job.read_text().replace('idempotency = "non_idempotent"\n', "")),
            "idempotency",
        ),
        (lambda job: job.write_text(job.read_text().replace("max_turns = 10", "max_turns = 0")), "max_turns"),
        (
            lambda job: job.write_text(job.read_text().replace("quickstart.script.toml", "missing.toml")),
            "script",
        ),
        (lambda job: (job.parent / "quickstart.script.toml").write_text("[[turns]]\ntext = 1\n"), "text"),
    ],
)
def test_a_bad_job_is_exit_2_and_creates_nothing(
    mutate: Callable[[Path], Any],
    words: str,
    cli: Callable[..., CliResult],
    root: Path,
    workspace: Path,
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs"
    shutil.copytree(FIXTURES / "jobs", jobs)
    job = jobs / "quickstart.toml"
    mutate(job)
    result = cli("run", str(job), "--root", str(root), "--workspace", str(workspace), "--json")
    assert result.code == 2, result.stdout
    assert result.json["status"] == "error" and words in result.json["error"]["message"]
    assert list(root.iterdir()) == []
    assert list(workspace.iterdir()) == []
    human = cli("run", str(job), "--root", str(root), "--workspace", str(workspace))
    assert human.code == 2 and "Traceback" not in human.stderr and str(jobs) in human.stderr


def test_a_missing_job_file_is_exit_2(cli: Callable[..., CliResult], root: Path, tmp_path: Path) -> None:
    result = cli("run", str(tmp_path / "nope.toml"), "--root", str(root), "--json")
    assert result.code == 2 and "nope.toml" in result.json["error"]["message"]
    assert list(root.iterdir()) == []


# -- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_of_a_stopped_session(cli: Callable[..., CliResult], root: Path, workspace: Path) -> None:
    run = cli("run", str(QUICKSTART), "--root", str(root), "--workspace", str(workspace), "--json").json
    result = cli(
        "checkpoint", run["session_id"], "--reason", "before the demo", "--root", str(root), "--json"
    )
    assert result.code == 0, result.stdout
    doc = result.json
    assert doc["running"] is False and doc["checkpoint_id"] == f"ck-{run['checkpoint_count'] + 1}"
    inspect = cli("inspect", run["session_id"], "--root", str(root), "--json").json
    assert inspect["checkpoint_artifact_id"] == doc["artifact_id"]
    assert inspect["checkpoint_count"] == run["checkpoint_count"] + 1
    assert last_checkpoint_reason(root, run["session_id"]) == "requested: before the demo"


def test_checkpoint_of_a_running_session(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    words = " ".join(f"word{i}" for i in range(300))
    job = write_job(tmp_path / "job", [{"text": words}], [], delay_ms=10)
    proc = start_run(env, root, workspace, job)
    wait_for(lambda: (root / "sessions").exists() and any((root / "sessions").iterdir()))
    session_id = only_session(root)
    wait_for(lambda: any(r.type == "model.chunk" for r in records_of(root, session_id)))
    result = cli(
        "checkpoint", session_id, "--reason", "mid-flight", "--wait", "20", "--root", str(root), "--json"
    )
    proc.communicate(timeout=60)
    assert result.code == 0, result.stdout
    assert result.json["running"] is True
    records = records_of(root, session_id)
    taken = [
        r for r in records if r.type == "checkpoint.created" and r.data["reason"] == "requested: mid-flight"
    ]
    assert len(taken) == 1 and taken[0].data["checkpoint_id"] == result.json["checkpoint_id"]
    assert any(r.type == "model.chunk" and r.seq > taken[0].seq for r in records), "not taken mid-stream"


def test_checkpoint_of_an_unknown_session_is_exit_6(cli: Callable[..., CliResult], root: Path) -> None:
    assert cli("checkpoint", "ghost", "--root", str(root)).code == 6


def test_checkpoint_bytes_grow_linearly(tmp_path: Path) -> None:
    """Checkpoints write what is new since their parent plus a bounded amount."""
    from handshake_cli.engine import launch
    from handshake_cli.engine.jobs import load_job
    from handshake_cli.paths import Paths
    from handshake_cli.storage.filesystem import FilesystemStore

    def total_checkpoint_bytes(calls: int) -> tuple[int, int]:
        turns = [
            {
                "text": f"Reading file number {i} with some words.",
                "tool_calls": [{"tool": "read_file", "args": {"path": "f.txt"}}],
            }
            for i in range(calls)
        ]
        job = write_job(
            tmp_path / f"job{calls}", [*turns, {"text": "Done."}], [READ], limits={"max_turns": calls + 1}
        )
        ws = tmp_path / f"ws{calls}"
        ws.mkdir()
        (ws / "f.txt").write_text("some content " * 20)
        result = launch.start(load_job(job), FilesystemStore(Paths(tmp_path / f"root{calls}")), workspace=ws)
        assert result.state == "COMPLETED"
        return result.checkpoint_bytes, result.checkpoints

    small, small_count = total_checkpoint_bytes(60)
    large, large_count = total_checkpoint_bytes(240)
    assert large_count > 3.5 * small_count
    # Quadratic growth would make this ratio ~16; linear keeps it near 4.
    assert large / small < 6, (small, large)


def test_a_checkpoint_reads_back_as_the_journal_tells_it(
    cli: Callable[..., CliResult], root: Path, workspace: Path
) -> None:
    from handshake_cli.paths import Paths
    from handshake_cli.session.checkpoints import CheckpointRef, load
    from handshake_cli.session.thread import fold_thread
    from handshake_cli.storage.filesystem import FilesystemStore

    run = cli("run", str(QUICKSTART), "--root", str(root), "--workspace", str(workspace), "--json").json
    session_id = run["session_id"]
    records = records_of(root, session_id)
    store = FilesystemStore(Paths(root))
    for record in (r for r in records if r.type == "checkpoint.created"):
        loaded = load(store, CheckpointRef.from_record(record), session_id)
        expected = fold_thread(records[: record.data["covers_seq"]])
        assert loaded.thread.messages == expected.messages
        assert loaded.thread.ledger == expected.ledger
        assert loaded.thread.pending == expected.pending
        assert loaded.thread.turn == expected.turn


def test_a_second_sigint_exits_at_once_and_leaves_the_session_recoverable(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    job = write_job(
        tmp_path / "job",
        [{"text": "Sleeping.", "tool_calls": [{"tool": "slow", "args": {"seconds": 5}}]}, {"text": "Awake."}],
        [command_tool("slow", "slow_tool.py")],
    )
    proc = start_run(env, root, workspace, job)
    wait_for(lambda: (workspace / "slow-started.txt").exists())
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT
    assert time.monotonic() - started < 4, "the second SIGINT did not stop handshake at once"
    session_id = only_session(root)
    records = assert_durability_rules(root, session_id)
    assert records[-1].type == "tool.intent"
    inspect = cli("inspect", session_id, "--root", str(root), "--json").json
    assert inspect["state"] == "INTERRUPTED" and inspect["in_doubt_tool_calls"] == ["call-1-0"]
    wait_for(lambda: (workspace / "slow-done.txt").exists(), timeout=10)  # let the orphaned tool finish
