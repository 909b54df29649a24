"""The command provider's keys in a job: `command`, the program that is the model (an argv,
./ and ../ resolved against the job file's directory), and an optional `model` name, which
defaults to the program's file name.

Kept apart from the provider, which starts processes: reading a job starts nothing.
"""

from __future__ import annotations

import os
from typing import Any

from handshake_cli.engine.jobs.job import ModelSpec, ToolSpec
from handshake_cli.engine.jobs.parts import stored_options
from handshake_cli.engine.jobs.tables import Table

OPTIONS = ("command",)
JOB_KEYS = ("provider", "command", "model", "deterministic")


def from_job_file(model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    deterministic = model.boolean("deterministic", False)
    options = _options(model)
    model_id = model.optional_string("model") or os.path.basename(options["command"][0])
    return ModelSpec("command", model_id, deterministic, options=options)


def from_stored(model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    deterministic, options = stored_options(model, OPTIONS, "the command provider's options")
    return ModelSpec("command", model.string("id"), deterministic, options=_options(options))


def _options(table: Table) -> dict[str, Any]:
    argv = table.optional_argv("command")
    if argv is None:
        table.fail("command", "is missing; the command provider needs the program to run, as an array")
    return {"command": list(argv)}
