"""Job files for the scripted model: the built-in tools, command tools from tests/data/, and
the jobs several test modules run (a non-idempotent `send`, a long streamed turn, a gate)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.paths import DATA

RUN_JOBS = DATA / "run_jobs"
RECOVER_JOBS = DATA / "recover_jobs"
GATE = DATA / "tools" / "gate.py"

WRITE = {"name": "write_file", "builtin": "write_file", "side_effect": "write", "idempotency": "idempotent"}
READ = {"name": "read_file", "builtin": "read_file", "side_effect": "read", "idempotency": "idempotent"}


def command_tool(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "command": [sys.executable, str(RUN_JOBS / script)],
        "side_effect": "execute",
        "idempotency": "non_idempotent",
        **extra,
    }


def write_job(
    directory: Path,
    turns: list[Any],
    tools: list[dict[str, Any]],
    *,
    name: str = "test",
    delay_ms: int = 0,
    **top: Any,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "script.toml").write_text(tomli_w.dumps({"turns": turns}))
    job = {
        "name": name,
        "prompt": {"system": "Be careful.", "user": "Do the thing."},
        "model": {"provider": "scripted", "script": "script.toml", "chunk_delay_ms": delay_ms},
        "tools": tools,
        **top,
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


SEND_TURNS: list[dict[str, Any]] = [
    {"text": "Sending the message.", "tool_calls": [{"tool": "send", "args": {"message": "hello"}}]},
    {"text": "Sent."},
]


def send_tool(*, probe: bool = False) -> dict[str, Any]:
    """The non-idempotent tool: one line in effects.log per call that took effect."""
    tool: dict[str, Any] = {
        "name": "send",
        "command": [sys.executable, str(RECOVER_JOBS / "effect.py")],
        "side_effect": "execute",
        "idempotency": "non_idempotent",
    }
    if probe:
        tool["probe"] = [sys.executable, str(RECOVER_JOBS / "effect.py"), "--probe"]
    return tool


def send_job(tmp_path: Path, *, probe: bool = False) -> Path:
    return write_job(tmp_path / "job-send", SEND_TURNS, [send_tool(probe=probe)])


def long_turn_job(tmp_path: Path, words: int, delay_ms: int, name: str = "job-long") -> Path:
    text = " ".join(f"word{i}" for i in range(words))
    return write_job(tmp_path / name, [{"text": text}], [], delay_ms=delay_ms)


def gate_tool() -> dict[str, Any]:
    """A tool that waits until the test opens its gate (tests/data/tools/gate.py)."""
    return {
        "name": "gate",
        "command": [sys.executable, str(GATE)],
        "side_effect": "read",
        "idempotency": "idempotent",
    }


def gate_call(n: int) -> dict[str, Any]:
    return {"tool": "gate", "args": {"gate": f"open{n}", "started": f"waiting{n}"}}
