"""Kill -9 at scale: SIGKILL at random instants of `run`, `recover`, `checkpoint` (asking a
running session, or taking one itself) and `gc` (normal, and `--include-unfinished`), all
racing on the same roots, recover itself killed again and again.

Any kill point is valid: delays are random and the checks hold whatever instant a kill
lands on. After each session's story it must hold that:
- the session ends COMPLETED with the crash-free thread, or, only when a
  `gc --include-unfinished` ran while it was stopped, it was removed whole;
- the non-idempotent `notify` sent once (never twice), `remember` stored once;
- nothing acknowledged is lost: every effect a tool made has its `tool.intent` (with the
  same idempotency key) in the journal, and every checkpoint `handshake checkpoint`
  acknowledged (exit 0) is in the journal as it was reported;
- `inspect --verify` says intact.

The default run delivers a few hundred kills; `pytest -m slow` at least 10,000.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.crashkit import World, describe, kill_after, records, verdict

WORKERS = 3  # threads: each mostly waits on its subprocesses
CI_KILLS = 200
SLOW_KILLS = 10_000


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    never_created: int = 0  # runs killed before their session existed
    completed: int = 0
    removed_by_gc: int = 0
    acknowledged_checkpoints: int = 0
    effects_checked: int = 0
    lock = threading.Lock()

    def add(self, other: Tally) -> None:
        with self.lock:
            self.kills.update(other.kills)
            self.sessions += other.sessions
            self.never_created += other.never_created
            self.completed += other.completed
            self.removed_by_gc += other.removed_by_gc
            self.acknowledged_checkpoints += other.acknowledged_checkpoints
            self.effects_checked += other.effects_checked

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())


class Story:
    """One session, from `run` to its end, with kills and racing commands along the way."""

    def __init__(
        self, world: World, session_id: str, rng: random.Random, spans: Spans, reference: list[Any]
    ) -> None:
        self.world, self.session_id, self.rng, self.spans = world, session_id, rng, spans
        self.reference = reference
        self.tally = Tally(sessions=1)
        self.checkpoints: list[dict[str, Any]] = []  # acknowledged by `handshake checkpoint`
        self.unfinished_gc = False  # a gc --include-unfinished ran
        self.gc_removed: list[str] = []  # the state each gc that removed it reported
        self.gc_killed = False
        self.seen = False  # the session was found in sessions/
        self.completed = False  # a run or recover exited 0: the session was COMPLETED
        self.history: list[str] = []
        self.errors: list[str] = []

    def delay(self, what: str) -> float:
        """A random instant in the command's life. Any instant is a valid kill point; most of
        the first ones fall in the interpreter's start-up, so those are drawn less often."""
        start_up = self.spans.get("gc")
        return self.rng.uniform(start_up * 0.6, max(self.spans.get(what), start_up))

    def spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.world.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.world.env,
            start_new_session=True,
        )

    def finish(self, what: str, proc: subprocess.Popen[bytes], kill_at: float | None) -> int | None:
        """Kill `proc` after `kill_at` seconds (unless it ended first), or wait for it; its exit
        code, or None when the kill landed."""
        began = time.monotonic()
        if kill_at is not None and kill_after(proc, kill_at):
            self.tally.kills[what] += 1
            self.history.append(f"{what} killed")
            self.gc_killed |= what == "gc"
            return None
        out, err = proc.communicate(timeout=120)
        code = proc.returncode
        self.spans.observe(what, time.monotonic() - began)
        self.history.append(f"{what} exit {code}")
        if code not in ALLOWED[what] and not torn_before_checkpoint(what, code, out):
            self.errors.append(f"{self.session_id}: {what} exit {code}: {out[-500:]!r} {err[-800:]!r}")
        elif what == "checkpoint" and code == 0:
            self.checkpoints.append(json.loads(out))
        elif what in ("run", "recover") and code == 0:
            self.completed = True
        elif what == "gc" and code == 0:
            for entry in json.loads(out).get("removed", []):
                if entry["session_id"] == self.session_id:
                    self.gc_removed.append(entry["state"])
        return code

    def racer(self, what: str, args: list[str], start: float, kill_at: float | None) -> threading.Thread:
        def go() -> None:
            time.sleep(start)  # only picks the instant; any instant is a valid one
            self.finish(what, self.spawn(args), kill_at)

        thread = threading.Thread(target=go)
        thread.start()
        return thread

    def racing(self, main: str) -> list[threading.Thread]:
        """Maybe a checkpoint request and a gc while `main` runs, each perhaps killed too."""
        threads = []
        if self.rng.random() < 0.35:
            args = ["checkpoint", self.session_id, "--json", "--wait", "60"]
            kill = self.delay("checkpoint") if self.rng.random() < 0.5 else None
            threads.append(self.racer("checkpoint", args, self.delay(main), kill))
        if self.rng.random() < 0.2:
            unfinished = self.rng.random() < 0.3
            args = ["gc", "--older-than", "0s", "--json", *(["--include-unfinished"] if unfinished else [])]
            self.unfinished_gc |= unfinished
            kill = self.delay("gc") if self.rng.random() < 0.5 else None
            threads.append(self.racer("gc", args, self.delay(main), kill))
        return threads

    def step(self, what: str, args: list[str], kill_chance: float) -> None:
        """One run or recover, maybe killed, with racing commands."""
        proc = self.spawn(args)
        threads = self.racing(what)
        self.finish(what, proc, self.delay(what) if self.rng.random() < kill_chance else None)
        for thread in threads:
            thread.join()
        assert not self.errors, self.errors

    def tell(self) -> Tally | None:
        """The story of this session; None when no session came of it (the run was killed
        before creating it, or a gc removed it before anyone saw it): tell another."""
        workspace = str(self.world.workspace(self.session_id))
        run = ["run", str(self.world.job), "--session-id", self.session_id, "--workspace", workspace]
        self.step("run", run, kill_chance=0.9)
        for _attempt in range(60):
            if not self.world.exists(self.session_id):
                if not self.seen and not self.completed:
                    self.gone()
                    self.tally.sessions, self.tally.never_created = 0, 1
                    return None
                return self.gone()
            self.seen = True
            if describe(self.world.root, self.session_id).get("state") == "COMPLETED":
                # A kill after the last record may leave head.json (a cache) behind: a last,
                # quiet recover rewrites it and must find nothing else to do.
                final = subprocess.run(
                    self.world.command("recover", self.session_id, "--json"),
                    capture_output=True,
                    env=self.world.env,
                    check=False,
                    timeout=120,
                )
                assert final.returncode == 0, (final.stdout[-500:], final.stderr[-800:], self.history)
                return self.check()
            self.step("recover", ["recover", self.session_id, "--json"], kill_chance=0.7)
        raise AssertionError(f"{self.session_id} never completed: {self.history}")

    def notified(self) -> list[str]:
        log = self.world.workspace(self.session_id) / "quickstart-output" / "notifications.log"
        return log.read_text().splitlines() if log.exists() else []

    def gone(self) -> Tally:
        """A session that is not there: only gc may have removed it, and only when it could."""
        context = f"{self.session_id}: {self.history}"
        assert len(self.notified()) <= 1, (self.notified(), context)  # never twice
        if self.seen or self.completed:
            # Only gc removes a session: one that said so (a normal gc only a finished one), or
            # one killed before it could say.
            assert self.gc_removed or self.gc_killed, f"the session vanished and no gc removed it: {context}"
            if not self.unfinished_gc:
                finished = {"COMPLETED", "FAILED", "CANCELLED"}
                assert set(self.gc_removed) <= finished, (self.gc_removed, context)
            self.tally.removed_by_gc += 1
        return self.tally

    def check(self) -> Tally:
        context = f"{self.session_id}: {self.history}"
        workspace = self.world.workspace(self.session_id)
        notified = self.notified()
        info = describe(self.world.root, self.session_id)
        assert info["state"] == "COMPLETED", (info["state"], context)
        assert info["messages"] == self.reference, context
        assert len(notified) == 1, (notified, context)  # and exactly once: it has a probe
        journal = records(self.world.root, self.session_id)
        intents = {r.data["idempotency_key"] for r in journal if r.type == "tool.intent"}
        remembered = json.loads((workspace / "remembered.json").read_text())
        effects = [line.split("\t", 1)[0] for line in notified] + list(remembered)
        assert len(remembered) == 1 and set(effects) <= intents, (effects, intents, context)
        by_seq = {r.seq: r for r in journal}
        for ack in self.checkpoints:
            found = by_seq.get(ack["seq"])
            assert found is not None and found.type == "checkpoint.created", (ack, context)
            assert found.data["checkpoint_id"] == ack["checkpoint_id"], (ack, found.data, context)
            assert found.data["artifact_id"] == ack["artifact_id"], (ack, context)
        assert verdict(self.world.root, self.session_id) == "intact", context
        self.tally.completed += 1
        self.tally.acknowledged_checkpoints += len(self.checkpoints)
        self.tally.effects_checked += len(effects)
        return self.tally


# Exit codes a command may end with here: 4 is a lock another process holds (say, a
# recovery the checkpoint raced), 6 a session gc removed or not made yet, 75 a run that
# stopped at a boundary. Never 1 (a bug), never 5 (damage), except a checkpoint that meets a
# torn tail (`torn_before_checkpoint`).
ALLOWED = {
    "run": {0},
    "recover": {0, 4, 6, 75},
    "checkpoint": {0, 4, 6, 75},
    "gc": {0},
}


def torn_before_checkpoint(what: str, code: int | None, out: bytes) -> bool:
    """`checkpoint` of a stopped session whose last record a kill tore (Linux stops a write
    between pages for SIGKILL, so a killed writer of a multi-page record leaves part of it):
    only recovery may cut a torn tail, so the checkpoint refuses, with `journal_needs_repair`
    (exit 5, its documented code) and `handshake recover` as the way on."""
    if what != "checkpoint" or code != 5:
        return False
    answer = json.loads(out)
    return answer["error"]["code"] == "journal_needs_repair" and any(
        line.startswith("handshake recover ") for line in answer["guidance"]
    )


class Spans:
    """How long each command takes, from its last few runs that were not killed: the machine's
    load changes during a long run, and kills should keep landing inside the commands."""

    def __init__(self, initial: dict[str, float]) -> None:
        self.recent: dict[str, deque[float]] = {what: deque([t], maxlen=15) for what, t in initial.items()}
        self.lock = threading.Lock()

    def observe(self, what: str, seconds: float) -> None:
        with self.lock:
            self.recent[what].append(seconds)

    def get(self, what: str) -> float:
        with self.lock:
            times = sorted(self.recent[what])
        return times[len(times) // 2]


def spans(world: World) -> tuple[dict[str, float], list[Any]]:
    """How long each command takes here (median of three), so kills land all along it; and
    the thread of a crash-free run."""

    def median(make_args: Any) -> float:
        times = []
        for attempt in range(3):
            started = time.monotonic()
            args = make_args(attempt)
            subprocess.run(world.command(*args), capture_output=True, env=world.env, check=False, timeout=120)
            times.append(time.monotonic() - started)
        return sorted(times)[1]

    run = median(
        lambda i: [
            "run",
            str(world.job),
            "--session-id",
            f"span-{i}",
            "--workspace",
            str(world.workspace(f"span-{i}")),
        ]
    )
    reference: list[Any] = world.inspect("span-0")["messages"]
    quick = median(lambda i: ["gc", "--older-than", "0s"])
    return {"run": run, "recover": run, "checkpoint": quick, "gc": quick}, reference


def kill9(base: Path, target: int, seed: int, workers: int = WORKERS) -> Tally:
    """Tell stories in parallel, one root per worker, until `target` kills were delivered."""
    probe = World(base / "probe", delay_ms=0)
    initial, reference = spans(probe)
    timing = Spans(initial)
    total = Tally()
    started = time.monotonic()
    failed: list[BaseException] = []

    def worker(index: int) -> None:
        world = World(base / f"w{index}", delay_ms=0)
        rng = random.Random(seed * 1000 + index)
        number = 0
        while total.total_kills < target and not failed:
            number += 1
            for attempt in range(10):
                told = Story(world, f"k{index}-{number}.{attempt}", rng, timing, reference)
                try:
                    tally = told.tell()
                except BaseException as exc:
                    failed.append(exc)  # the other workers stop at their next story
                    print(f"  worker {index}: FAILED {told.session_id}: {exc}", flush=True)
                    raise
                total.add(told.tally)
                if tally is not None:
                    break
            if number % 25 == 0:  # progress, for a long run's log
                print(f"  worker {index}: {total.total_kills} kills, {total.sessions} sessions", flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(worker, i) for i in range(workers)]:
            future.result()
    figures = {
        "kills": dict(total.kills),
        "total_kills": total.total_kills,
        "sessions": total.sessions,
        "never_created": total.never_created,
        "completed": total.completed,
        "removed_by_gc": total.removed_by_gc,
        "acknowledged_checkpoints": total.acknowledged_checkpoints,
        "effects_checked": total.effects_checked,
        "seconds": round(time.monotonic() - started, 1),
        "spans": {k: round(timing.get(k), 3) for k in ("run", "recover", "gc")},
    }
    print(f"kill -9 figures: {json.dumps(figures)}")
    assert total.total_kills >= target
    assert total.kills["run"] and total.kills["recover"] and total.kills["checkpoint"] and total.kills["gc"]
    assert total.completed + total.removed_by_gc == total.sessions, figures
    return total


def test_hundreds_of_sigkills_across_run_recover_checkpoint_and_gc(tmp_path: Path) -> None:
    kill9(tmp_path, CI_KILLS, seed=20261202)


@pytest.mark.slow
def test_ten_thousand_sigkills(tmp_path: Path) -> None:
    kill9(tmp_path, SLOW_KILLS, seed=11)
