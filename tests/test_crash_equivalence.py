"""Crash equivalence: kill `handshake run` (and `handshake recover`) with SIGKILL at random
moments and at every named crash point, then recover until the session is done. Every
session must end with the same message thread as a crash-free run, the non-idempotent call's
effect exactly once (it has a probe), the idempotent_with_key call stored once, and a
journal that verifies.

The default suite kills 100 runs; `pytest -m slow` kills 1,000 more.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from handshake_cli.faults import POINTS
from tests.conftest import FIXTURES, REPO

CRASH_JOBS = Path(__file__).resolve().parent / "crash_jobs"


def make_job(directory: Path, delay_ms: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(CRASH_JOBS / "script.toml", directory / "script.toml")
    job = {
        "name": "crash-equivalence",
        "prompt": {"system": "Be careful.", "user": "Write, remember, notify, check."},
        "model": {"provider": "scripted", "script": "script.toml", "chunk_delay_ms": delay_ms},
        "tools": [
            {
                "name": "write_file",
                "builtin": "write_file",
                "side_effect": "write",
                "idempotency": "idempotent",
            },
            {"name": "read_file", "builtin": "read_file", "side_effect": "read", "idempotency": "idempotent"},
            {
                "name": "remember",
                "command": [sys.executable, str(CRASH_JOBS / "remember.py")],
                "side_effect": "write",
                "idempotency": "idempotent_with_key",
            },
            {
                "name": "notify",
                "command": [sys.executable, str(FIXTURES / "jobs" / "notify.py")],
                "probe": [sys.executable, str(FIXTURES / "jobs" / "notify.py"), "--probe"],
                "side_effect": "execute",
                "idempotency": "non_idempotent",
            },
        ],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


class World:
    """One root, one job; sessions with their own workspaces."""

    def __init__(self, base: Path, delay_ms: int) -> None:
        self.base = base
        self.root = base / "root"
        self.job = make_job(base / "job", delay_ms)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
        self.env.update({"NO_COLOR": "1", "PYTHONPATH": str(REPO)})

    def workspace(self, session_id: str) -> Path:
        path = self.base / "ws" / session_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "handshake_cli", *args, "--root", str(self.root)]

    def run(self, session_id: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, **({"HANDSHAKE_CRASH_AT": crash_at} if crash_at else {})}
        args = self.command(
            "run", str(self.job), "--session-id", session_id, "--workspace", str(self.workspace(session_id))
        )
        return subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
        )

    def recover(self, session_id: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, **({"HANDSHAKE_CRASH_AT": crash_at} if crash_at else {})}
        return subprocess.Popen(
            self.command("recover", session_id),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    def inspect(self, session_id: str, *extra: str) -> Any:
        out = subprocess.run(
            self.command("inspect", session_id, *extra, "--json"),
            capture_output=True,
            env=self.env,
            check=False,
            timeout=60,
        )
        return json.loads(out.stdout)

    def exists(self, session_id: str) -> bool:
        return (self.root / "sessions" / session_id).is_dir()


def kill_after(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL the whole process group after `delay` seconds, unless it ended first."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def drive_to_the_end(
    world: World, session_id: str, rng: random.Random, kill_chance: float, max_delay: float
) -> list[str]:
    """Recover (maybe killing recovery itself now and then) until the session is COMPLETED."""
    history = []
    for _attempt in range(30):
        if not world.exists(session_id):
            history.append("rerun: no session yet")
            proc = world.run(session_id)
        else:
            proc = world.recover(session_id)
        if rng.random() < kill_chance and kill_after(proc, rng.uniform(0, max_delay)):
            history.append("recovery killed")
            continue
        proc.wait(timeout=120)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        history.append(f"exit {proc.returncode}")
        if proc.returncode == 0 and world.inspect(session_id)["state"] == "COMPLETED":
            return history
        assert proc.returncode in (0, 75), f"recover failed: {proc.returncode}: {stderr}\n{history}"
    raise AssertionError(f"session {session_id} never completed: {history}")


def assert_equivalent(world: World, session_id: str, reference: dict[str, Any], history: list[str]) -> None:
    info = world.inspect(session_id)
    context = f"{session_id}: {history}"
    assert info["state"] == "COMPLETED", context
    assert info["messages"] == reference["messages"], context
    workspace = world.workspace(session_id)
    notified = (workspace / "quickstart-output" / "notifications.log").read_text().splitlines()
    assert len(notified) == 1, (notified, context)  # exactly once: it has a probe
    remembered = json.loads((workspace / "remembered.json").read_text())
    keys = [c["idempotency_key"] for c in info["tool_calls"] if c["tool"] == "remember"]
    assert list(remembered) == keys and len(keys) == 1, (remembered, keys, context)
    assert (workspace / "notes.txt").read_text() == "the sky is blue\n"
    verify = world.inspect(session_id, "--verify")
    assert verify["verdict"] == "intact", (verify, context)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world = World(tmp_path_factory.mktemp("reference"), delay_ms=1)
    durations = []
    for attempt in range(3):  # the median run time: the first run pays for cold caches
        started = time.monotonic()
        proc = world.run(f"reference-{attempt}")
        assert proc.wait(timeout=120) == 0
        durations.append(time.monotonic() - started)
    info = world.inspect("reference-0")
    assert info["state"] == "COMPLETED"
    return {"messages": info["messages"], "seconds": sorted(durations)[1]}


def random_crashes(base: Path, reference: dict[str, Any], count: int, seed: int) -> None:
    world = World(base, delay_ms=1)
    rng = random.Random(seed)
    span = reference["seconds"]
    killed_runs = killed_recoveries = mid_session = 0
    for index in range(count):
        session_id = f"s{seed}-{index}"
        proc = world.run(session_id)
        killed = kill_after(proc, rng.uniform(0, span * 0.9))
        killed_runs += killed
        mid_session += killed and world.exists(session_id)
        history = ["run killed" if killed else f"run exit {proc.returncode}"]
        history += drive_to_the_end(world, session_id, rng, kill_chance=0.3, max_delay=span)
        killed_recoveries += history.count("recovery killed")
        assert_equivalent(world, session_id, reference, history)
    # The crashes really landed inside sessions, and recovery itself was interrupted too.
    assert killed_runs >= count * 0.5 and mid_session >= count * 0.3, (killed_runs, mid_session)
    assert killed_recoveries >= count * 0.1, killed_recoveries


def test_random_sigkills_then_recovery_end_as_a_crash_free_run(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    random_crashes(tmp_path, reference, count=100, seed=20261124)


@pytest.mark.slow
def test_a_thousand_random_sigkills(tmp_path: Path, reference: dict[str, Any]) -> None:
    random_crashes(tmp_path, reference, count=1000, seed=1)


RUN_POINTS = [p for p in POINTS if not p.startswith("recovery_")]


@pytest.mark.parametrize("point", RUN_POINTS)
@pytest.mark.parametrize("occurrence", [1, 2, 3, 4])
def test_a_crash_at_each_named_point_then_recovery(
    tmp_path: Path, reference: dict[str, Any], point: str, occurrence: int
) -> None:
    world = World(tmp_path, delay_ms=0)
    session_id = f"{point}-{occurrence}"
    proc = world.run(session_id, crash_at=f"{point}:{occurrence}")
    proc.wait(timeout=120)
    history = [f"run exit {proc.returncode}"]
    history += drive_to_the_end(world, session_id, random.Random(0), kill_chance=0, max_delay=0)
    assert_equivalent(world, session_id, reference, history)


@pytest.mark.parametrize(
    ("run_point", "recovery_point"),
    [
        ("before_result:3", "recovery_after_probe"),  # notify in doubt; the probe answers, then a crash
        ("before_result:3", "recovery_started"),
        ("after_intent:2", "after_intent"),  # the rerun of `remember` is itself cut short
        ("before_result:2", "before_result"),
        ("mid_stream:2", "mid_stream"),
        ("after_result:1", "mid_checkpoint"),
        ("after_checkpoint:3", "after_checkpoint"),
    ],
)
def test_a_crash_inside_recovery_then_recovery_again(
    tmp_path: Path, reference: dict[str, Any], run_point: str, recovery_point: str
) -> None:
    world = World(tmp_path, delay_ms=0)
    session_id = "twice"
    world.run(session_id, crash_at=run_point).wait(timeout=120)
    proc = world.recover(session_id, crash_at=recovery_point)
    proc.wait(timeout=120)
    history = [f"recovery with {recovery_point}: exit {proc.returncode}"]
    history += drive_to_the_end(world, session_id, random.Random(0), kill_chance=0, max_delay=0)
    assert_equivalent(world, session_id, reference, history)


def test_a_torn_tail_is_cut_into_quarantine_then_the_session_ends_as_crash_free(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    world = World(tmp_path, delay_ms=0)
    session_id = "torn"
    world.run(session_id, crash_at="after_result:2").wait(timeout=120)
    journal = world.root / "sessions" / session_id / "journal"
    segment = sorted(journal.iterdir())[-1]
    data = segment.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    segment.write_bytes(data[: last + (len(data) - last) // 2])  # the last record, half written
    proc = world.recover(session_id, crash_at="recovery_after_quarantine")
    proc.wait(timeout=120)
    history = drive_to_the_end(world, session_id, random.Random(0), kill_chance=0, max_delay=0)
    quarantine = list((world.root / "sessions" / session_id / "quarantine").iterdir())
    assert len(quarantine) == 1 and quarantine[0].read_bytes() == data[last : last + (len(data) - last) // 2]
    assert_equivalent(world, session_id, reference, history)
