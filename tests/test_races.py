"""Races: eight commands at once (recover, checkpoint, inspect, export, gc and gc
--include-unfinished) on a live session and an interrupted one.

The live session is a real `handshake run` held inside a tool call until the test opens its
gate (an event, not a delay); the interrupted one is a run killed at a named crash point.
Each round must end with:
- exactly one writer per session: every loser exits 4 naming the holder (readers exit 0);
- no exit 1 and no traceback from any of them;
- journals that verify intact (no interleaved records);
- no session lost: the live one completes once released, the interrupted one completes
  when recovered, or is gone only because a gc --include-unfinished says it removed it;
- the non-idempotent notification sent exactly once, every acknowledged checkpoint on record.

The default run plays a few rounds; `pytest -m slow` many more.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.crashkit import World, describe, kill_after, make_gated_job, records, verdict, wait_for

CI_ROUNDS = 3
SLOW_ROUNDS = 30
CRASHES = ["after_intent:3", "before_result:3", "after_result:2", "mid_stream:4", "after_checkpoint:2"]
# Exit codes each command may end with when racing: 4 another process holds the lock, 6 the
# session was removed by gc.
ALLOWED = {
    "recover": {0, 4, 6},
    "checkpoint": {0, 4, 6},
    "inspect": {0, 6},
    "export": {0, 6},
    "gc": {0},
}


@dataclass
class Racer:
    what: str
    target: str | None
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None
    out: Any = None
    err: str = ""


@dataclass
class Figures:
    rounds: int = 0
    processes: int = 0
    exits: dict[str, int] = field(default_factory=dict)
    unnamed_holders: int = 0
    removed_by_gc: int = 0
    seconds: float = 0.0


def racers(world: World, rng: random.Random, round_no: int) -> list[Racer]:
    out_dir = world.base / "exports"
    out_dir.mkdir(exist_ok=True)

    def make(what: str, target: str | None, extra: list[str] | None = None) -> Racer:
        args = [what, *([target] if target else []), *(extra or []), "--json"]
        if what == "export":
            args += ["--output", str(out_dir / f"{target}-{round_no}-{len(chosen)}.tar.gz")]
        if what == "checkpoint":
            args += ["--wait", "600"]  # the live run answers at its next boundary, after the gate
        return Racer(what, target, args)

    chosen: list[Racer] = []
    # gc --include-unfinished races in every round; in odd rounds it may take the interrupted
    # session (any age), in even ones it only looks (nothing is an hour old).
    age = "0s" if round_no % 2 else "1h"
    for what, target in [("recover", "stopped"), ("recover", "live"), ("gc", None)]:
        chosen.append(
            make(what, target, ["--older-than", age, "--include-unfinished"] if what == "gc" else None)
        )
    pool: list[tuple[str, str | None]] = [
        (w, t) for w in ("recover", "checkpoint", "inspect", "export") for t in ("live", "stopped")
    ]
    pool.append(("gc", None))
    while len(chosen) < 8:
        what, target = rng.choice(pool)
        extra = (
            ["--older-than", "1h"] + (["--include-unfinished"] if rng.random() < 0.5 else [])
            if what == "gc"
            else None
        )
        chosen.append(make(what, target, extra))
    rng.shuffle(chosen)
    return chosen


def play_round(base: Path, rng: random.Random, round_no: int, reference: list[Any], figures: Figures) -> None:
    world = World(base, delay_ms=0)
    gated = make_gated_job(base / "gated")
    live_ws, stopped_ws = world.workspace("live"), world.workspace("stopped")
    # The interrupted session: the crash-equivalence job killed at a named point.
    crashed = world.run("stopped", crash_at=rng.choice(CRASHES))
    crashed.wait(timeout=120)
    assert world.exists("stopped"), crashed.stderr.read() if crashed.stderr else ""
    # The live one: held in its first tool call until the gate opens.
    run = subprocess.Popen(
        world.command("run", str(gated), "--session-id", "live", "--workspace", str(live_ws), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=world.env,
        start_new_session=True,
    )
    wait_for(live_ws / "gate.reached", run)

    racing = racers(world, rng, round_no)
    for racer in racing:  # all eight at once
        racer.proc = subprocess.Popen(
            world.command(*racer.args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env
        )
    # Everything but a checkpoint of the live session ends on its own; that one is answered
    # at the run's next boundary, after the gate.
    for racer in racing:
        if not (racer.what == "checkpoint" and racer.target == "live"):
            finish(racer)
    (live_ws / "gate.open").touch()
    for racer in racing:
        if racer.code is None:
            finish(racer)
    _, run_err = run.communicate(timeout=120)
    assert run.returncode == 0, (run.returncode, run_err[-800:])

    context = [(r.what, r.target, r.code, r.err[-300:]) for r in racing]
    figures.rounds += 1
    figures.processes += len(racing)
    for racer in racing:
        key = f"{racer.what} {racer.target or ''}".strip() + f": {racer.code}"
        figures.exits[key] = figures.exits.get(key, 0) + 1
        assert racer.code != 1 and "Traceback" not in racer.err, (
            f"{racer.what} {racer.target}: {json.dumps(racer.out)} {racer.err}"
        )
        assert racer.code in ALLOWED[racer.what], (racer.what, racer.target, racer.code, racer.out, racer.err)
        if racer.code == 4:
            message = racer.out["error"]["message"]
            assert "locked by" in message or "held by" in message, message
            figures.unnamed_holders += "pid" not in message
        if racer.code == 6:
            assert racer.target == "stopped" and gc_removed(racing, "stopped"), context
    # recover of the live session: always refused, naming the run that holds it.
    for racer in racing:
        if racer.what == "recover" and racer.target == "live":
            assert racer.code == 4 and f"pid {run.pid}" in racer.out["error"]["message"], context

    # The live session: completed once released, every acknowledged checkpoint on record.
    assert describe(world.root, "live")["state"] == "COMPLETED", context
    assert verdict(world.root, "live") == "intact", context
    check_acknowledged(world, "live", racing)
    # The interrupted one: gone only by gc's word, else recovered to the crash-free thread.
    notified = stopped_ws / "quickstart-output" / "notifications.log"
    if not world.exists("stopped"):
        assert gc_removed(racing, "stopped"), f"the interrupted session vanished: {context}"
        assert len(notified.read_text().splitlines() if notified.exists() else []) <= 1
        figures.removed_by_gc += 1
        return
    for _ in range(3):
        if describe(world.root, "stopped")["state"] == "COMPLETED":
            break
        proc = world.recover("stopped")
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    info = describe(world.root, "stopped")
    assert info["state"] == "COMPLETED" and info["messages"] == reference, context
    assert len(notified.read_text().splitlines()) == 1, context
    assert verdict(world.root, "stopped") == "intact", context
    check_acknowledged(world, "stopped", racing)


def finish(racer: Racer) -> None:
    assert racer.proc is not None
    out, err = racer.proc.communicate(timeout=300)
    racer.code = racer.proc.returncode
    racer.err = err.decode("utf-8", "replace")
    try:
        racer.out = json.loads(out)
    except ValueError:
        racer.out = out.decode("utf-8", "replace")


def gc_removed(racing: list[Racer], session_id: str) -> bool:
    return any(
        r.what == "gc"
        and r.code == 0
        and any(entry["session_id"] == session_id for entry in r.out.get("removed", []))
        for r in racing
    )


def check_acknowledged(world: World, session_id: str, racing: list[Racer]) -> None:
    by_seq = {r.seq: r for r in records(world.root, session_id)}
    for racer in racing:
        if racer.what == "checkpoint" and racer.target == session_id and racer.code == 0:
            found = by_seq.get(racer.out["seq"])
            assert found is not None and found.type == "checkpoint.created", racer.out
            assert found.data["checkpoint_id"] == racer.out["checkpoint_id"], (racer.out, found.data)


def play(base: Path, rounds: int, seed: int) -> Figures:
    reference_world = World(base / "reference", delay_ms=0)
    assert reference_world.run("reference").wait(timeout=120) == 0
    reference = describe(reference_world.root, "reference")["messages"]
    figures = Figures()
    started = time.monotonic()
    rng = random.Random(seed)
    for round_no in range(rounds):
        play_round(base / f"round-{round_no}", rng, round_no, reference, figures)
    figures.seconds = round(time.monotonic() - started, 1)
    print(f"race figures: {json.dumps(figures.__dict__, sort_keys=True)}")
    return figures


def test_eight_commands_racing_on_live_and_interrupted_sessions(tmp_path: Path) -> None:
    play(tmp_path, CI_ROUNDS, seed=20261202)


@pytest.mark.slow
def test_many_rounds_of_racing_commands(tmp_path: Path) -> None:
    play(tmp_path, SLOW_ROUNDS, seed=7)


def test_a_checkpoint_stops_waiting_when_the_running_session_it_asked_dies(tmp_path: Path) -> None:
    """`handshake checkpoint` asks a running session and waits for its answer; when that
    process is killed it can never answer: the command must not sit out its --wait, but take
    the checkpoint from the journal (the session is stopped now)."""
    world = World(tmp_path, delay_ms=0)
    gated = make_gated_job(tmp_path / "gated")
    workspace = world.workspace("live")
    run = subprocess.Popen(
        world.command("run", str(gated), "--session-id", "live", "--workspace", str(workspace)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=world.env,
        start_new_session=True,
    )
    wait_for(workspace / "gate.reached", run)
    asking = subprocess.Popen(
        world.command("checkpoint", "live", "--json", "--wait", "3600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=world.env,
    )
    requests = world.root / "sessions" / "live" / "requests"
    while not (requests.is_dir() and any(requests.glob("*.json"))):  # the request is made
        assert asking.poll() is None, asking.communicate()
        time.sleep(0.01)
    assert kill_after(run, 0)  # the run (and its tool) die before any boundary
    out, err = asking.communicate(timeout=120)  # well before its hour-long --wait
    assert asking.returncode == 0, (out, err)
    answer = json.loads(out)
    assert answer["running"] is False
    found = {r.seq: r for r in records(world.root, "live")}[answer["seq"]]
    assert found.type == "checkpoint.created" and found.data["checkpoint_id"] == answer["checkpoint_id"]
    assert verdict(world.root, "live") == "intact"


def test_a_writer_that_lost_the_race_with_gc_never_makes_the_session_directory_again(tmp_path: Path) -> None:
    """gc renames a session away between a writer's look and its lock. The writer must find
    nothing there; it used to make `sessions/<id>/` again (filelock creates a missing parent)
    for a moment, and a reader at that moment saw a session without session.toml: exit 5
    instead of 6. The directory of sessions is not touched at all (its mtime is unchanged)."""
    from handshake_cli.errors import NotFound
    from handshake_cli.storage.lock import SessionLock

    sessions = tmp_path / "sessions"
    sessions.mkdir()
    before = os.stat(sessions).st_mtime_ns
    with pytest.raises(NotFound, match="removed"):
        SessionLock(sessions / "gone", "gone").acquire()
    assert not (sessions / "gone").exists()
    assert os.stat(sessions).st_mtime_ns == before


def test_a_session_moved_away_while_being_read_is_not_found_not_damaged(tmp_path: Path) -> None:
    """A reader (inspect, export, checkpoint) that looked up a session just before gc renamed
    it into the trash then finds its files gone: that is exit 6 (not found), not 5 (damage)."""
    from handshake_cli.errors import NotFound
    from handshake_cli.storage.journal.scan import scan
    from handshake_cli.storage.store import SessionDir

    gone = SessionDir("gone", tmp_path / "sessions" / "gone")
    with pytest.raises(NotFound, match="removed"):
        gone.read_config()
    with pytest.raises(NotFound, match="removed"):
        gone.check_identity()
    with pytest.raises(NotFound, match="removed"):
        scan(gone.journal, "gone")


def test_a_checkpoint_request_never_kills_the_process_holding_the_lock(tmp_path: Path) -> None:
    """owner.json names the lock holder, and `handshake checkpoint` signals it (SIGUSR1).
    A holder that does not serve requests (a recovery that only blocks, a checkpoint of a
    stopped session, a run before its handler is in place) used to die of it. It must live
    on; the asker, unanswered, says so (exit 4) and leaves the session as it was."""
    world = World(tmp_path, delay_ms=0)
    assert world.run("s").wait(timeout=120) == 0
    session = world.root / "sessions" / "s"
    holding = "\n".join(
        [
            "import sys",
            "from pathlib import Path",
            "from handshake_cli.storage.lock import SessionLock",
            "held = SessionLock(Path(sys.argv[1]), 's')",
            "held.acquire('handshake recover s')",
            "print('held', flush=True)",
            "sys.stdin.readline()",
            "held.release()",
        ]
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holding, str(session)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=world.env,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == b"held\n"
    before = (session / "journal" / "00000001.jsonl").read_bytes()
    asking = subprocess.run(
        world.command("checkpoint", "s", "--json", "--wait", "2"),
        capture_output=True,
        env=world.env,
        timeout=120,
    )
    assert asking.returncode == 4, asking
    assert f"pid {holder.pid}" in json.loads(asking.stdout)["error"]["message"]
    assert holder.poll() is None  # alive, still holding the lock
    holder.stdin.write(b"done\n")
    holder.stdin.flush()
    assert holder.wait(timeout=120) == 0
    assert (session / "journal" / "00000001.jsonl").read_bytes() == before


@pytest.mark.parametrize("command", ["run", "recover"])
def test_a_late_checkpoint_request_never_kills_a_writer_that_has_let_go(tmp_path: Path, command: str) -> None:
    """`handshake checkpoint` reads owner.json, then signals the pid it names. When the writer
    lets go of the lock in between (its session just COMPLETED), the signal arrives after the
    release; the writer used to die of it on its way out (exit -10, seen in the kill -9 suite).
    Here the writer pauses after its command returns, and the late signal is sent then."""
    world = World(tmp_path, delay_ms=0)
    if command == "recover":
        assert world.run("s", crash_at="after_intent").wait(timeout=120) != 0
        argv = ["recover", "s", "--root", str(world.root)]
    else:
        argv = ["run", str(world.job), "--session-id", "s", "--workspace", str(world.workspace("s"))]
        argv += ["--root", str(world.root)]
    writer = "\n".join(
        [
            "import sys",
            "from handshake_cli.cli.app import main",
            "try:",
            "    main(sys.argv[1:])",
            "except SystemExit as exc:",
            "    code = exc.code",
            "print('ended', code, flush=True)",
            "sys.stdin.readline()",
            "sys.exit(code)",
        ]
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=world.env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    lines = iter(proc.stdout.readline, b"")
    ended = next(line for line in lines if line.startswith(b"ended"))
    assert ended == b"ended 0\n", ended
    os.kill(proc.pid, signal.SIGUSR1)  # what the asker sends, a moment too late
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    assert world.inspect("s")["state"] == "COMPLETED"
