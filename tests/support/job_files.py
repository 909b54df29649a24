"""The job the job-file tests start from (`q.toml` with a write and a non-idempotent notify,
and its script `q.script.toml`), and how they expect a mistake to be refused (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from handshake_cli.engine.jobs import JobError, load_job
from handshake_cli.errors import ExitCode

BASE_JOB: dict[str, Any] = {
    "name": "q",
    "prompt": {"system": "Be careful.", "user": "Write hello.txt, then notify the team."},
    "model": {"provider": "scripted", "script": "q.script.toml"},
    "tools": [
        {"name": "write_file", "builtin": "write_file", "side_effect": "write", "idempotency": "idempotent"},
        {
            "name": "notify",
            "command": ["python3", "./notify.py"],
            "probe": ["python3", "./notify.py", "--probe"],
            "side_effect": "execute",
            "idempotency": "non_idempotent",
        },
    ],
}
BASE_SCRIPT: dict[str, Any] = {
    "turns": [
        {
            "text": "Writing, then notifying.",
            "tool_calls": [
                {"tool": "write_file", "args": {"path": "hello.txt", "content": "hi"}},
                {"tool": "notify", "args": {"message": "written"}},
            ],
        },
        {"text": "Done."},
    ]
}
OPENAI_MODEL: dict[str, Any] = {
    "provider": "openai",
    "base_url": "http://127.0.0.1:11434/v1",
    "model": "llama3.2",
}


def write_job(
    directory: Path, job: dict[str, Any] | None = None, script: dict[str, Any] | None = None
) -> Path:
    """q.toml and q.script.toml in `directory` (the base ones unless given)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "q.script.toml").write_text(tomli_w.dumps(BASE_SCRIPT if script is None else script))
    path = directory / "q.toml"
    path.write_text(tomli_w.dumps(BASE_JOB if job is None else job))
    return path


def job_error(path: Path | str) -> JobError:
    with pytest.raises(JobError) as info:
        load_job(path)
    error = info.value
    assert error.exit_code is ExitCode.USAGE and int(error.exit_code) == 2
    assert error.code == "invalid_job"
    assert error.message.startswith(f"{error.details['file']}: ")
    return error
