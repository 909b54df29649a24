"""Shared fixtures: a hermetic environment, a `cli` that runs the real console script, a
workspace, and a blocked session. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.cli import Cli, CliResult, crash_run
from tests.support.jobs import send_job
from tests.support.paths import GOLDEN
from tests.support.sessions import effects

if TYPE_CHECKING:
    from tests.support.postgres import PostgresServer


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A hermetic environment: no color, fixed width, a throwaway HOME, no HANDSHAKE_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    clean.update(
        {
            "NO_COLOR": "1",
            "COLUMNS": "80",
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return clean


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., CliResult]:
    """Run `handshake ARGS...` as a real process and capture what a user would see."""

    def run(*args: str, input: str | None = None, extra_env: dict[str, str] | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "handshake_cli", *args],
            capture_output=True,
            text=True,
            env={**env, **(extra_env or {})},
            input=input,
            timeout=60,
            check=False,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def golden_root(root: Path) -> Callable[[str], Path]:
    """Copy one golden session into a fresh root; returns the root."""

    def install(name: str) -> Path:
        (root / "sessions").mkdir(mode=0o700, exist_ok=True)
        shutil.copytree(GOLDEN / name, root / "sessions" / name)
        return root

    return install


@pytest.fixture
def home_env(env: dict[str, str], root: Path) -> dict[str, str]:
    """The hermetic environment with the root given through HANDSHAKE_HOME."""
    return {**env, "HANDSHAKE_HOME": str(root)}


@pytest.fixture
def hs(cli: Callable[..., CliResult], root: Path) -> Callable[..., CliResult]:
    """`handshake ...` with the root in HANDSHAKE_HOME, so no output holds a temp path."""

    def run(*args: str, extra_env: dict[str, str] | None = None) -> CliResult:
        return cli(*args, extra_env={"HANDSHAKE_HOME": str(root), **(extra_env or {})})

    return run


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The directory tools run in (`--workspace`)."""
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def blocked(tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli) -> str:
    """Session blocked-1: `send` (non_idempotent, no probe) took effect, then handshake died
    before its result was journaled; a first `recover` blocked it."""
    crash_run(home_env, send_job(tmp_path), "blocked-1", workspace, "before_result")
    assert len(effects(workspace)) == 1
    first = hs("recover", "blocked-1")
    assert first.code == 3, first.stdout + first.stderr
    return "blocked-1"


# -- PostgreSQL (tests/support/postgres.py) ------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test run's PostgreSQL server (started on first use; a test that stops it starts it
    again before it ends)."""
    from tests.support.postgres import shared_server

    yield shared_server()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the test run's server, dropped after the test."""
    from tests.support.postgres import fresh_database

    return fresh_database()


@pytest.fixture(autouse=True, scope="session")
def _stop_postgres() -> Iterator[None]:
    """Stop the test run's PostgreSQL server at the end, if any test started it."""
    yield
    support = sys.modules.get("tests.support.postgres")
    if support is not None:
        support.stop_shared_server()


@pytest.fixture(autouse=True)
def _drop_postgres_databases() -> Iterator[None]:
    """Drop the databases a test made (the conformance harness makes its own)."""
    yield
    support = sys.modules.get("tests.support.postgres")
    if support is not None:
        support.drop_fresh_databases()
