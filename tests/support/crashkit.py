"""Shared by the crash suites (crash equivalence, power loss, kill -9, races): a job whose
tools have real effects (a written file, a keyed store, a non-idempotent notification with
a probe), a World (one root, sessions with their own workspaces) that runs the real command
line as subprocesses, and the checks that a session ended as a crash-free run does."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.paths import DATA, FIXTURES, REPO

CRASH_JOBS = DATA / "crash_jobs"


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


# In-process readers for the checks: what `inspect SESSION --json` and `inspect --verify`
# say, without a process each (the commands under test are always real processes).


def describe(root: Path, session_id: str) -> dict[str, Any]:
    """`inspect SESSION --json`'s description."""
    from handshake_cli.paths import Paths
    from handshake_cli.readers.describe import describe
    from handshake_cli.storage.filesystem import FilesystemStore

    return describe(FilesystemStore(Paths(root)), session_id)


def verdict(root: Path, session_id: str) -> str:
    """`inspect SESSION --verify`'s verdict."""
    from handshake_cli.paths import Paths
    from handshake_cli.readers.verify import verify
    from handshake_cli.storage.filesystem import FilesystemStore

    return verify(FilesystemStore(Paths(root)), session_id).verdict


def records(root: Path, session_id: str) -> list[Any]:
    """Every record of the session's journal, verified."""
    from handshake_cli.storage.journal.scan import scan

    result = scan(root / "sessions" / session_id / "journal", session_id)
    assert result.damage is None, result.damage
    return result.records


def make_gated_job(directory: Path) -> Path:
    """A job that stays live inside its first tool call until `gate.open` appears in its
    workspace (see crash_jobs/gate.py); then it writes a file and answers."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(CRASH_JOBS / "gated.script.toml", directory / "script.toml")
    job = {
        "name": "gated",
        "prompt": {"user": "Wait at the gate, then write that you passed."},
        "model": {"provider": "scripted", "script": "script.toml", "chunk_delay_ms": 0},
        "tools": [
            {
                "name": "gate",
                "command": [sys.executable, str(CRASH_JOBS / "gate.py")],
                "side_effect": "execute",
                "idempotency": "idempotent",
            },
            {
                "name": "write_file",
                "builtin": "write_file",
                "side_effect": "write",
                "idempotency": "idempotent",
            },
        ],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def wait_for(path: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120) -> None:
    """Wait until `path` exists (an event the process under test makes), failing early if
    `proc` ends first. `timeout` is only a safety net for a hung test."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)
