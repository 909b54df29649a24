"""Job files (DESIGN section 8): reading, checking and resolving a job into a `Job`.

This package owns the job file's contract: which keys exist, their types, defaults and
ranges, how paths in it resolve (against the job file's directory, never the current
directory). Every mistake is a `JobError` (exit 2) whose message starts with the file and
names the key: a typo that was silently ignored would run a different job from the one the
user wrote. Loading creates nothing on disk and reads no environment variable: secrets and
provider keys are looked up by name at run time.

- `job`: the resolved `Job` and its stored form (session.toml's `[job]`);
- `tables`: the strict reader (typed values, errors by key path);
- `parts`: the keys of each part of a job, in a job file and stored;
- each provider's [model] keys live with the provider (`providers/*_options.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from handshake_cli.engine.jobs.job import (
    CheckpointPolicy,
    Job,
    JobConfigError,
    JobError,
    Limits,
    McpOverride,
    McpServerSpec,
    ModelSpec,
    ScriptedCall,
    ScriptedTurn,
    ToolSpec,
)
from handshake_cli.engine.jobs.parts import (
    BUILTINS,
    CHUNK_DELAY_MS,
    EVERY_MESSAGES,
    EVERY_TOKENS,
    IDEMPOTENCIES,
    MAX_OUTPUT_BYTES,
    MAX_TURNS,
    SIDE_EFFECTS,
    TOOL_TIMEOUT_SECONDS,
    job_from_file,
)
from handshake_cli.engine.jobs.tables import INT64, JOB_FILE_MAX_BYTES, Source, Table, read_document
from handshake_cli.engine.providers import PROVIDERS

__all__ = [
    "BUILTINS",
    "CHUNK_DELAY_MS",
    "EVERY_MESSAGES",
    "EVERY_TOKENS",
    "IDEMPOTENCIES",
    "INT64",
    "JOB_FILE_MAX_BYTES",
    "MAX_OUTPUT_BYTES",
    "MAX_TURNS",
    "PROVIDERS",
    "SIDE_EFFECTS",
    "STORED_JOB_MAX_BYTES",
    "TOOL_TIMEOUT_SECONDS",
    "CheckpointPolicy",
    "Job",
    "JobConfigError",
    "JobError",
    "Limits",
    "McpOverride",
    "McpServerSpec",
    "ModelSpec",
    "ScriptedCall",
    "ScriptedTurn",
    "ToolSpec",
    "load_job",
]

STORED_JOB_MAX_BYTES = 30 << 20  # the job as session.toml stores it (the script inline, resolved)


def load_job(path: str | Path) -> Job:
    """Read, check and resolve the job file at `path` (relative paths in it: to its directory)."""
    job_file = Path(os.path.abspath(path))
    source = Source(str(job_file), JobError, base=job_file.parent)

    def cannot_open(problem: str) -> NoReturn:
        source.fail(None, f"the job file {job_file} {problem}")

    job = job_from_file(Table(read_document(job_file, source, cannot_open), source), job_file)
    _check_stored_size(job, source)
    return job


def _check_stored_size(job: Job, source: Source) -> None:
    """A job whose stored form (session.toml, with the script inline and every string escaped
    as TOML needs) would pass the limit a reader of session.toml holds it to is refused now."""
    import tomli_w

    size = len(tomli_w.dumps({"job": job.to_config()}).encode("utf-8"))
    if size > STORED_JOB_MAX_BYTES:
        source.fail(
            None,
            f"with its script makes a stored job of {size} bytes; the limit is {STORED_JOB_MAX_BYTES}",
        )
