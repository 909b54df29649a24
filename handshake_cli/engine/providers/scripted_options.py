"""The scripted provider's keys in a job: `script` (a file of [[turns]]) and `chunk_delay_ms`.

A job file names the script; the job that session.toml stores carries the turns inline, so
a session never reads the script file again. Every turn but the last must make tool calls,
and only tools the job declares: a script that could never complete, or that calls a tool
nobody declared, is refused when the job is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from handshake_cli.engine.jobs.job import JobError, ModelSpec, ScriptedCall, ScriptedTurn, ToolSpec
from handshake_cli.engine.jobs.parts import CHUNK_DELAY_MS
from handshake_cli.engine.jobs.tables import Source, Table, listed, read_document

JOB_KEYS = ("provider", "script", "chunk_delay_ms", "deterministic")
SCRIPT_KEYS = ("turns",)
TURN_KEYS = ("text", "tool_calls")
CALL_KEYS = ("tool", "args")


def from_job_file(model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    if not model.boolean("deterministic", True):
        model.fail("deterministic", "cannot be false: the scripted provider is deterministic")
    chunk_delay_ms = model.integer("chunk_delay_ms", 0, CHUNK_DELAY_MS)
    return ModelSpec("scripted", "scripted", True, chunk_delay_ms, script=_script(model, tools))


def from_stored(model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    deterministic = model.boolean("deterministic", True)
    chunk_delay_ms = model.integer("chunk_delay_ms", 0, CHUNK_DELAY_MS)
    options = model.table("options")
    if not deterministic:
        model.fail("deterministic", "cannot be false: the scripted provider is deterministic")
    options.only((), "the scripted provider's options")
    script = _turns(model, tools, declared_by="the job")
    return ModelSpec("scripted", model.string("id"), True, chunk_delay_ms, script=script)


def _script(model: Table, tools: tuple[ToolSpec, ...]) -> tuple[ScriptedTurn, ...]:
    """The scripted model's turns, from the script file that [model] script names."""
    name = model.string("script", hint="; the scripted provider needs a script file of [[turns]]")
    base = model.source.base
    assert base is not None  # a job file always has a directory
    path = Path(os.path.normpath(os.path.join(base, name)))
    source = Source(str(path), JobError, base=path.parent)

    def cannot_open(problem: str) -> NoReturn:
        model.fail("script", f"names {path}, which {problem}")

    document = Table(read_document(path, source, cannot_open), source)
    document.only(SCRIPT_KEYS, "a script")
    return _turns(document, tools, declared_by=model.source.file)


def _turns(table: Table, tools: tuple[ToolSpec, ...], *, declared_by: str) -> tuple[ScriptedTurn, ...]:
    entries = table.tables("turns")
    if entries is None:
        table.fail("turns", "is missing; a script needs at least one [[turns]] entry")
    if not entries:
        table.fail("turns", "is empty; a script needs at least one turn")
    declared = tuple(tool.name for tool in tools)
    turns: list[ScriptedTurn] = []
    for index, turn in enumerate(entries):
        turn.only(TURN_KEYS, "a script turn")
        text = turn.optional_string("text", allow_empty=True) or ""
        calls: list[ScriptedCall] = []
        for call in turn.tables("tool_calls") or []:
            call.only(CALL_KEYS, "a tool call")
            tool = call.string("tool")
            if tool not in declared:
                tools_list = f"its tools are {listed(declared)}" if declared else "it declares no tools"
                call.fail("tool", f"names {tool!r}, which {declared_by} does not declare; {tools_list}")
            args = call.json_table("args")
            calls.append(ScriptedCall(tool, {} if args is None else args))
        last = index == len(entries) - 1
        if last and calls:
            turn.fail(
                "tool_calls",
                "must be empty in the last turn: a session completes after a turn without tool calls, "
                "so a script that ends with one could never complete",
            )
        if not last and not calls:
            turn.fail(
                "tool_calls",
                f"is empty, so the session would complete after this turn and the {len(entries) - 1 - index} "
                "turn(s) after it would never run; only the last turn may be without tool calls",
            )
        turns.append(ScriptedTurn(text, tuple(calls)))
    return tuple(turns)
