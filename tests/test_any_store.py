"""The commands' core works on any store: a session run, checkpointed on request, inspected,
verified, replayed, recovered, forked and exported on the in-memory store tells the same story
as the same job on the filesystem store, and a bundle carries it from one to the other.

Nothing here reaches past the session-store contract into files: what passes on the memory
store needs nothing of a directory, which is what a database store relies on."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.engine import launch
from handshake_cli.engine.jobs import load_job
from handshake_cli.errors import SessionLocked
from handshake_cli.maintenance.bundle import export_session, import_bundle
from handshake_cli.paths import Paths
from handshake_cli.readers.describe import describe
from handshake_cli.readers.events import events, session_at
from handshake_cli.readers.verify import verify
from handshake_cli.recovery import execute
from handshake_cli.recovery.fork import fork
from handshake_cli.session.status import list_sessions
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.memory import MemoryStore
from tests.support.jobs import READ, WRITE, write_job

# Fields that differ between two runs of one job: times, the workspace, and the hashes of what
# holds a time (a record's chain; a checkpoint's body, which holds the session's `updated_at`).
VOLATILE = {
    *("created_at", "updated_at", "last_checkpoint_at", "ts", "elapsed", "workspace", "size_bytes"),
    *("started_at", "ended_at"),  # when each process wrote (the history)
    *("sum", "prev", "artifact_id", "checkpoint_artifact_id"),
    *("segment", "offset", "checkpoint_location"),  # a position is the store's own (opaque)
}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _without_positions(store: SessionStore, session_id: str) -> list[Any]:
    """The records, byte for byte, but where they sit (each store's own)."""
    return [replace(r, segment="", offset=0) for r in store.scan(session_id).records]


def _job(tmp_path: Path) -> Path:
    turns = [
        {
            "text": "Writing.",
            "tool_calls": [{"tool": "write_file", "args": {"path": "a.txt", "content": "x" * 70000}}],
        },
        {"text": "Reading.", "tool_calls": [{"tool": "read_file", "args": {"path": "a.txt"}}]},
        {"text": "Done."},
    ]
    return write_job(tmp_path / "job", turns, [WRITE, READ])


def _run(store: SessionStore, tmp_path: Path, name: str) -> str:
    workspace = tmp_path / f"ws-{name}"
    workspace.mkdir()
    result = launch.start(load_job(_job(tmp_path)), store, workspace=workspace, session_id="one")
    assert result.state == "COMPLETED", result.reason
    return result.session_id


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SessionStore, SessionStore]:
    memory, files = MemoryStore(), FilesystemStore(Paths(tmp_path / "root"))
    _run(memory, tmp_path, "memory")
    _run(files, tmp_path, "files")
    return memory, files


def test_every_reader_tells_the_same_story_on_either_store(stores: tuple[SessionStore, SessionStore]) -> None:
    memory, files = stores
    for read in (
        lambda s: describe(s, "one"),
        lambda s: verify(s, "one").as_json(),
        lambda s: events(s, "one", types=["tool"]),
        lambda s: events(s, "one", since_seq=5, tail=3),
        lambda s: session_at(s, "one", 6),
        lambda s: execute.recover(s, "one", execute.Options(dry_run=True)).as_json(),
        lambda s: list_sessions(s),
    ):
        assert _stable(read(memory)) == _stable(read(files))
    described = describe(memory, "one")
    assert described["state"] == "COMPLETED" and described["integrity"]["verdict"] == "intact"
    # the large output of the read went to an artifact, and the memory store keeps and checks it
    assert verify(memory, "one").artifacts_checked >= 1


def test_a_fork_and_a_checkpoint_are_made_through_the_store(
    stores: tuple[SessionStore, SessionStore],
) -> None:
    memory, files = stores
    for store in (memory, files):
        forked = fork(store, "one", "two")
        assert forked["records_copied"] > 0
        answer = launch.checkpoint(store, "two", reason="before the change", wait=1)
        assert answer.running is False and answer.checkpoint["checkpoint_id"] == "ck-2"
    assert _stable(describe(memory, "two")) == _stable(describe(files, "two"))


def test_a_running_session_answers_a_checkpoint_request_through_its_lease(tmp_path: Path) -> None:
    """The request channel of the contract, on the memory store: asked while the run holds the
    lease, answered at its next boundary by the runner."""
    store = MemoryStore()
    turns = [
        {"text": f"Turn {i}.", "tool_calls": [{"tool": "read_file", "args": {"path": "f.txt"}}]}
        for i in range(50)
    ]
    job = write_job(
        tmp_path / "job", [*turns, {"text": "Done."}], [READ], limits={"max_turns": 100}, delay_ms=2
    )
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "f.txt").write_text("hello\n")
    created = threading.Event()
    asked: dict[str, Any] = {}

    def ask() -> None:  # as `handshake checkpoint` does; the run keeps the main thread (signals)
        if not created.wait(30):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # past its first boundary: a tool call is on record
            if any(r.type == "tool.result" for r in store.scan("live").records):
                break
            time.sleep(0.01)
        request = store.submit_request("live", "asked from outside")
        os.kill(os.getpid(), signal.SIGUSR1)
        asked["answer"] = store.wait_for_answer("live", request, 60)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        result = launch.start(
            load_job(job), store, workspace=workspace, session_id="live", on_created=lambda _: created.set()
        )
    finally:
        created.set()
        asker.join(90)
    answer = asked.get("answer")
    assert answer is not None and str(answer["checkpoint_id"]).startswith("ck-")
    assert result.state == "COMPLETED", result.reason
    reasons = [r.data["reason"] for r in store.scan("live").records if r.type == "checkpoint.created"]
    assert "requested: asked from outside" in reasons


def test_a_directory_root_still_refuses_to_ask_a_holder_on_another_host(
    stores: tuple[SessionStore, SessionStore],
) -> None:
    """A directory shared between machines has no `request_poll`: its holders look only when
    signalled, so asking one on another host would only wait for nothing."""
    _, files = stores
    assert files.request_poll is None
    owner = {"pid": 999_999_999, "host": "some-other-host", "started_at": "2026-01-01T00:00:00Z"}
    owner |= {"command": "handshake run job.toml", "pid_start": None}
    (Path(files.location("one")) / "owner.json").write_text(json.dumps(owner))
    before = _without_positions(files, "one")
    with pytest.raises(SessionLocked, match="running on this machine") as refused:
        launch.checkpoint(files, "one", reason=None, wait=60)
    assert refused.value.details["lock_holder"]["host"] == "some-other-host"
    assert _without_positions(files, "one") == before
    assert not list((Path(files.location("one")) / "requests").glob("*.json"))


@pytest.mark.parametrize("poll", [0.05, None], ids=["request_poll", "signalled_only"])
def test_a_store_with_request_poll_has_its_running_session_find_a_request_nobody_signals(
    tmp_path: Path, poll: float | None
) -> None:
    """An asker on another machine cannot signal: with a `request_poll` the run finds the
    request by itself at a boundary; without one (files, one machine) only a signal wakes it,
    so the request waits until the run has ended."""
    store = MemoryStore()
    store.request_poll = poll
    turns = [
        {"text": f"Turn {i}.", "tool_calls": [{"tool": "read_file", "args": {"path": "f.txt"}}]}
        for i in range(50)
    ]
    job = write_job(
        tmp_path / "job", [*turns, {"text": "Done."}], [READ], limits={"max_turns": 100}, delay_ms=2
    )
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "f.txt").write_text("hello\n")
    created, ended = threading.Event(), threading.Event()
    asked: dict[str, Any] = {}

    def ask() -> None:  # after the run's first boundary, with no signal
        if not created.wait(30):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(r.type == "tool.result" for r in store.scan("far").records):
                break
            time.sleep(0.01)
        asked["request"] = store.submit_request("far", "asked from afar")
        asked["answer"] = store.wait_for_answer("far", asked["request"], 60, alive=lambda: not ended.is_set())

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        result = launch.start(
            load_job(job), store, workspace=workspace, session_id="far", on_created=lambda _: created.set()
        )
    finally:
        created.set()
        ended.set()
        asker.join(90)
    assert result.state == "COMPLETED", result.reason
    reasons = [r.data["reason"] for r in store.scan("far").records if r.type == "checkpoint.created"]
    if poll is None:
        assert asked["answer"] is None and "requested: asked from afar" not in reasons
        store.withdraw_request("far", asked["request"])
    else:
        assert asked["answer"] is not None and reasons.count("requested: asked from afar") == 1
        assert asked["answer"]["checkpoint_id"].startswith("ck-")


def test_a_bundle_carries_a_session_from_one_store_to_the_other(
    stores: tuple[SessionStore, SessionStore], tmp_path: Path
) -> None:
    memory, files = stores
    export_session(memory, "one", tmp_path / "from-memory.tgz")
    other = FilesystemStore(Paths(tmp_path / "other"))
    report = import_bundle(other, tmp_path / "from-memory.tgz")
    assert report.verdict == "intact" and report.path == other.location("one")
    assert _without_positions(other, "one") == _without_positions(memory, "one")
    # Positions are the store's own: the memory store's (line numbers) name nothing on disk, so
    # a delta checkpoint's link to its parent does not load there, and recovery falls back to a
    # checkpoint that does (a snapshot), as it does for any checkpoint that fails to load.
    assert describe(other, "one")["state"] == describe(memory, "one")["state"] == "COMPLETED"
    assert verify(other, "one").verdict == "intact"
    export_session(files, "one", tmp_path / "from-files.tgz")
    back = MemoryStore()
    assert import_bundle(back, tmp_path / "from-files.tgz").verdict == "intact"
    assert _without_positions(back, "one") == _without_positions(files, "one")
