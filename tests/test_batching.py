"""Tool calls of one model turn that are safe to run again go as one batch (engine/loop.py,
`Runner.run_tool_calls`): their intents, at most one sync before the tools, one after them.
Any other call goes alone, so a crash never leaves more than it in doubt."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.engine import launch
from handshake_cli.engine.jobs import load_job
from handshake_cli.engine.loop import QuietObserver
from handshake_cli.paths import Paths
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.journal.writer import JournalWriter
from tests.support.cli import Cli
from tests.support.jobs import READ, WRITE, send_tool, write_job


def reads(n: int) -> list[dict[str, Any]]:
    return [{"tool": "read_file", "args": {"path": f"in{i}.txt"}} for i in range(n)]


def writes(n: int) -> list[dict[str, Any]]:
    return [{"tool": "write_file", "args": {"path": f"out{i}.txt", "content": f"{i}\n"}} for i in range(n)]


SEND = {"tool": "send", "args": {"message": "hello"}}


class Events(QuietObserver):
    """What happened, in order: records appended, syncs, tools started."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def tool_started(self, call: dict[str, Any]) -> None:
        self.log.append(f"start {call['tool_call_id']}")


def run_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[dict[str, Any]]) -> list[str]:
    """Run a job whose first turn asks for `calls` in-process; return the events from the
    turn's model.completed to the next model.request."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for i in range(5):
        (workspace / f"in{i}.txt").write_text(f"input {i}\n")
    turns = [{"text": "Working.", "tool_calls": calls}, {"text": "Done."}]
    job = load_job(write_job(tmp_path / "job", turns, [READ, WRITE, send_tool()]))
    events = Events()
    real_append = JournalWriter.append
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def append(self: JournalWriter, type_: str, data: dict[str, Any], **kw: Any) -> Any:
        events.log.append(type_)
        return real_append(self, type_, data, **kw)

    def fdatasync(fd: int) -> None:
        events.log.append("sync")
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        events.log.append("sync")
        real_fsync(fd)

    monkeypatch.setattr(JournalWriter, "append", append)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    store = FilesystemStore(Paths(tmp_path / "root"))
    result = launch.start(job, store, workspace=workspace, observer=events, environ={})
    assert result.state == "COMPLETED"
    first = events.log.index("model.completed")
    return events.log[first : events.log.index("model.request", first)]


def syncs(events: list[str]) -> int:
    return events.count("sync")


def test_five_read_calls_cost_one_journal_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = run_turn(tmp_path, monkeypatch, reads(5))
    assert events.count("tool.intent") == 5 and events.count("tool.result") == 5
    assert events.count("checkpoint.created") == 1
    assert syncs(events) == 1  # results and checkpoint together; a read's intent needs none
    assert events[-1] == "sync"


def test_idempotent_writes_cost_two_journal_syncs_and_their_intents_come_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = run_turn(tmp_path, monkeypatch, writes(3) + reads(2))
    journal_syncs = [i for i, e in enumerate(events) if e == "sync"]
    first_start = events.index("start call-1-0")
    # All five intents, then one sync, before any tool starts...
    assert events[:first_start].count("tool.intent") == 5
    assert events[:first_start].count("sync") == 1 and events[first_start - 1] == "sync"
    # ...then the three writes' own durability (file and directory fsyncs, two each), then one
    # sync for the results and the checkpoint.
    assert len(journal_syncs) == 1 + 3 * 2 + 1
    assert events[-2:] == ["checkpoint.created", "sync"]
    assert (tmp_path / "ws" / "out2.txt").read_text() == "2\n"


def test_a_non_idempotent_call_goes_alone_between_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = run_turn(tmp_path, monkeypatch, [*reads(2), SEND, *reads(1)])
    starts = [e for e in events if e.startswith("start")]
    assert starts == ["start call-1-0", "start call-1-1", "start call-1-2", "start call-1-3"]
    send_start = events.index("start call-1-2")
    before_send = events[:send_start]
    # The two reads are finished and durable (checkpoint + sync) before send's intent is
    # written, and send's intent is synced before it starts: only send can be in doubt.
    assert before_send.count("tool.result") == 2
    last_checkpoint = len(before_send) - 1 - before_send[::-1].index("checkpoint.created")
    assert before_send[last_checkpoint + 1] == "sync"
    assert before_send[last_checkpoint + 2 :] == ["tool.intent", "sync"]
    assert events.count("checkpoint.created") == 3  # [read, read], [send], [read]


def test_a_crash_inside_a_batch_is_recovered_and_each_call_has_one_result(
    tmp_path: Path, hs: Cli, root: Path, workspace: Path
) -> None:
    for i in range(5):
        (workspace / f"in{i}.txt").write_text(f"input {i}\n")
    turns = [{"text": "Working.", "tool_calls": writes(2) + reads(3)}, {"text": "Done."}]
    job = write_job(tmp_path / "job", turns, [READ, WRITE])
    crashed = hs(
        "run",
        str(job),
        "--workspace",
        str(workspace),
        "--session-id",
        "b1",
        extra_env={"HANDSHAKE_CRASH_AT": "before_result:4"},
    )
    assert crashed.code < 0  # killed inside the batch, after its fourth call ran
    recovered = hs("recover", "b1", "--json")
    assert recovered.code == 0, recovered.stderr
    assert recovered.json["state_after"] == "COMPLETED"
    assert [c["tool_call_id"] for c in recovered.json["in_doubt"]] == ["call-1-3", "call-1-4"]
    records = scan(root / "sessions" / "b1" / "journal", "b1").records
    results = [r.data["tool_call_id"] for r in records if r.type == "tool.result"]
    assert sorted(set(results)) == [f"call-1-{i}" for i in range(5)]
    assert len(results) == len(set(results))  # no call answered twice
    assert (workspace / "out1.txt").read_text() == "1\n"
    assert json.loads(hs("inspect", "b1", "--json").stdout)["state"] == "COMPLETED"
