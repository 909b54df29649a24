"""Shared fixtures: a hermetic environment and a `cli` that runs the real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
GOLDEN = FIXTURES / "sessions"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


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
