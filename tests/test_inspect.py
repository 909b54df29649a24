"""`inspect` for the post-mortem: event filters, time travel with --at, the summary of a long
session, and reading a session while a run is writing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.paths import Paths
from handshake_cli.readers import describe
from handshake_cli.session.thread import fold_thread
from handshake_cli.storage.filesystem import FilesystemStore
from tests.support.cli import CliResult, start_run, wait_for
from tests.support.jobs import gate_call, gate_tool, write_job
from tests.support.paths import FIXTURES
from tests.support.sessions import only_session, records_of

QUICKSTART = FIXTURES / "jobs" / "quickstart.toml"


@pytest.fixture
def finished(cli: Callable[..., CliResult], root: Path, tmp_path: Path) -> str:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = cli(
        "run", str(QUICKSTART), "--session-id", "done", "--root", str(root), "--workspace", str(workspace)
    )
    assert result.code == 0
    return "done"


def test_events_filters_and_relative_times(cli: Callable[..., CliResult], root: Path, finished: str) -> None:
    every = cli("inspect", finished, "--events", "--root", str(root), "--json").json["events"]
    tools = cli("inspect", finished, "--events", "--type", "tool", "--root", str(root), "--json").json[
        "events"
    ]
    assert tools and {e["type"] for e in tools} == {"tool.intent", "tool.result"}
    exact = cli(
        "inspect",
        finished,
        "--events",
        "--type",
        "tool.result",
        "--type",
        "session.completed",
        "--root",
        str(root),
        "--json",
    ).json["events"]
    assert {e["type"] for e in exact} == {"tool.result", "session.completed"}
    since = cli("inspect", finished, "--events", "--since-seq", "10", "--root", str(root), "--json").json[
        "events"
    ]
    assert [e["seq"] for e in since] == [e["seq"] for e in every if e["seq"] >= 10]
    tail = cli("inspect", finished, "--events", "--tail", "3", "--root", str(root), "--json").json["events"]
    assert tail == every[-3:]
    elapsed = [e["elapsed"] for e in every]
    assert elapsed[0] == 0 and elapsed == sorted(elapsed)
    human = cli("inspect", finished, "--events", "--tail", "2", "--root", str(root))
    assert "+SECONDS" in human.stdout and "session.completed" in human.stdout
    assert cli("inspect", finished, "--type", "tool", "--root", str(root)).code == 2  # without --events


def test_at_starts_from_the_nearest_checkpoint(
    cli: Callable[..., CliResult], root: Path, finished: str
) -> None:
    records = records_of(root, finished)
    checkpoints = [r for r in records if r.type == "checkpoint.created"]
    target = checkpoints[2].seq + 3  # a little after the third checkpoint
    doc = cli("inspect", finished, "--at", str(target), "--root", str(root), "--json").json
    assert doc["from_checkpoint"] == checkpoints[2].data["checkpoint_id"]
    assert doc["last_seq"] == target
    assert doc["messages"] == fold_thread(records[:target]).messages
    before_any = cli("inspect", finished, "--at", "1", "--root", str(root), "--json").json
    assert before_any["from_checkpoint"] is None and before_any["state"] == "CREATED"
    assert cli("inspect", finished, "--at", "0", "--root", str(root)).code == 2


def test_the_summary_of_a_long_session_reads_from_its_newest_checkpoint(
    cli: Callable[..., CliResult], root: Path, finished: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FULL_CHECK_BYTES, inspect reads the newest checkpoint and the tail, and says so;
    what it shows is the same story the whole journal tells."""
    store = FilesystemStore(Paths(root))
    full = describe.describe(store, finished)
    monkeypatch.setattr(describe, "FULL_CHECK_BYTES", 0)
    quick = describe.describe(store, finished)
    assert full["integrity"]["scope"] == "full"
    assert quick["integrity"]["scope"] == "from_checkpoint"
    assert quick["integrity"]["verdict"] == "intact" and quick["integrity"]["checked_from_seq"] > 1
    assert quick["integrity"]["full_check"] == f"handshake inspect {finished} --verify"
    for key in (
        "state",
        "messages",
        "checkpoint_count",
        "checkpoint_artifact_id",
        "last_seq",
        "turns",
        "recovery_plan",
    ):
        assert quick[key] == full[key], key
    assert {c["tool_call_id"]: c["state"] for c in quick["tool_calls"]} == {
        c["tool_call_id"]: c["state"] for c in full["tool_calls"]
    }


def test_inspect_while_a_run_writes(
    cli: Callable[..., CliResult], env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    """The run is held at two gates (a tool that waits for a file this test creates), so each
    inspection sees it running, whatever the machine's speed, and the second sees more records."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    words = " ".join(f"w{i}" for i in range(400))
    turns: list[dict[str, Any]] = [
        {"text": words, "tool_calls": [gate_call(1)]},
        {"text": words, "tool_calls": [gate_call(2)]},
        {"text": "Done."},
    ]
    job = write_job(tmp_path / "job", turns, [gate_tool()])
    proc = start_run(env, root, workspace, job)
    try:
        seen = []
        for gate in (1, 2):
            waiting = workspace / f"waiting{gate}"
            wait_for(waiting.exists, timeout=60)
            session_id = only_session(root)
            listing = cli("inspect", "--root", str(root), "--json")
            described = cli("inspect", session_id, "--root", str(root), "--json")
            verified = cli("inspect", session_id, "--verify", "--root", str(root), "--json")
            assert proc.poll() is None
            assert listing.code == described.code == 0
            assert verified.code == 0 and verified.json["verdict"] in ("intact", "repairable")
            row = listing.json["sessions"][0]
            assert row["state"] == "ACTIVE" and row["lock_holder"]["pid"] == proc.pid
            assert not row["needs_attention"]
            assert described.json["state"] == "ACTIVE" and described.json["recovery_plan"] is None
            assert [c["state"] for c in described.json["tool_calls"]][-1] == "running"
            seen.append(described.json["last_seq"])
            (workspace / f"open{gate}").touch()
        assert seen[0] < seen[1], seen
    finally:
        for gate in (1, 2):
            (workspace / f"open{gate}").touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_a_session_gc_removes_while_inspect_reads_it_is_not_found(
    root: Path, finished: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers never block gc: when the session is moved away between two of inspect's reads,
    the answer is exit 6 (not found), never an internal error."""
    from handshake_cli.errors import NotFound
    from handshake_cli.storage import lock

    store = FilesystemStore(Paths(root))
    real_holder = lock.holder

    def holder_then_gone(path: Path) -> Any:
        answer = real_holder(path)
        path.rename(root / "gone")  # as gc moves a session to its trash
        return answer

    monkeypatch.setattr(lock, "holder", holder_then_gone)
    with pytest.raises(NotFound, match="removed"):
        describe.describe(store, finished)
