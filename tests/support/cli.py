"""Running the real console script as a user would: a finished command's result, and
processes started in the background, crashed at a named point or waited on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


# The `cli` and `hs` fixtures (tests/conftest.py): `handshake ARGS...` as a real process.
Cli = Callable[..., CliResult]


def handshake(*args: str) -> list[str]:
    """The argv of `handshake ARGS...` run by this Python."""
    return [sys.executable, "-m", "handshake_cli", *args]


def _run_argv(root: Path, workspace: Path, job: Path) -> list[str]:
    return handshake("run", str(job), "--root", str(root), "--workspace", str(workspace))


def start_run(env: dict[str, str], root: Path, workspace: Path, job: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _run_argv(root, workspace, job),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def start(home_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        handshake(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=home_env,
        start_new_session=True,
    )


def run_until_killed(
    env: dict[str, str], root: Path, workspace: Path, job: Path, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    extra = {"HANDSHAKE_CRASH_AT": crash_at} if crash_at else {}
    return subprocess.run(
        _run_argv(root, workspace, job),
        capture_output=True,
        text=True,
        env={**env, **extra},
        timeout=60,
        check=False,
        start_new_session=True,  # a tool that kills its process group must not reach pytest
    )


def crash_run(
    home_env: dict[str, str], job: Path, session_id: str, workspace: Path, crash_at: str
) -> subprocess.CompletedProcess[str]:
    """`handshake run` that SIGKILLs itself at a named crash point."""
    proc = subprocess.run(
        handshake("run", str(job), "--session-id", session_id, "--workspace", str(workspace)),
        capture_output=True,
        text=True,
        env={**home_env, "HANDSHAKE_CRASH_AT": crash_at},
        timeout=60,
        check=False,
        start_new_session=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    return proc


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
