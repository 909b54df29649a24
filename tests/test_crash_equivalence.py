"""Crash equivalence: kill `handshake run` (and `handshake recover`) with SIGKILL at random
moments and at every named crash point, then recover until the session is done. Every
session must end with the same message thread as a crash-free run, the non-idempotent call's
effect exactly once (it has a probe), the idempotent_with_key call stored once, and a
journal that verifies.

The default suite kills 100 runs; `pytest -m slow` kills 1,000 more.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.faults import POINTS
from tests.support.crashkit import World, assert_equivalent, drive_to_the_end, kill_after


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
    """At least `count` sessions, and more until the crashes have really landed inside
    sessions and recovery itself was interrupted too: on a loaded machine fewer random kill
    instants land where they were aimed, so the test tells more stories instead of failing
    for want of coverage (at most three times as many)."""
    world = World(base, delay_ms=1)
    rng = random.Random(seed)
    span = reference["seconds"]
    killed_runs = killed_recoveries = mid_session = sessions = 0

    def covered() -> bool:
        return killed_runs >= count * 0.5 and mid_session >= count * 0.3 and killed_recoveries >= count * 0.1

    while sessions < count or (not covered() and sessions < count * 3):
        session_id = f"s{seed}-{sessions}"
        sessions += 1
        proc = world.run(session_id)
        killed = kill_after(proc, rng.uniform(0, span * 0.9))
        killed_runs += killed
        mid_session += killed and world.exists(session_id)
        history = ["run killed" if killed else f"run exit {proc.returncode}"]
        history += drive_to_the_end(world, session_id, rng, kill_chance=0.3, max_delay=span)
        killed_recoveries += history.count("recovery killed")
        assert_equivalent(world, session_id, reference, history)
    assert covered(), (sessions, killed_runs, mid_session, killed_recoveries)


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
