"""Job files (DESIGN section 8): reading, checking and resolving a job into a `Job`.

This module owns the job file's contract: which keys exist, their types, defaults and
ranges, how paths in it resolve (against the job file's directory, never the current
directory), and the scripted model's script file. Every mistake is a `JobError` (exit 2)
whose message starts with the file and names the key: a typo that was silently ignored
would run a different job from the one the user wrote.

A loaded job is self-contained. `Job.to_config()` holds everything resolved (absolute
paths, the script's turns), so session.toml carries the whole job and a session never reads
the job file again; `Job.from_config()` reads it back, as strictly as the file itself.
Loading creates nothing on disk and reads no environment variable: secrets and provider
keys are looked up by name at run time.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from handshake_cli import documents
from handshake_cli.errors import IntegrityError, UsageError

PROVIDERS = ("scripted", "openai", "command")
SIDE_EFFECTS = ("read", "write", "execute")
IDEMPOTENCIES = ("idempotent", "idempotent_with_key", "non_idempotent")
BUILTINS = ("write_file", "read_file")

TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", re.ASCII)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# Credentials belong in the environment (api_key_env), never in a file that is copied into session.toml.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})

TOP_KEYS = ("name", "prompt", "model", "tools", "checkpoint", "limits", "secret_env")
PROMPT_KEYS = ("system", "user")
TOOL_KEYS = (
    "name",
    "builtin",
    "command",
    "probe",
    "side_effect",
    "idempotency",
    "description",
    "parameters",
    "timeout_seconds",
    "max_output_bytes",
    "env",
)
CHECKPOINT_KEYS = ("every_messages", "every_tokens", "after_tool_call", "on_state_change")
LIMITS_KEYS = ("max_turns",)
OPENAI_OPTIONS = (
    "base_url",
    "api_key_env",
    "temperature",
    "seed",
    "max_tokens",
    "headers",
    "timeout_seconds",
)
COMMAND_OPTIONS = ("command",)
MODEL_KEYS = {
    "scripted": ("provider", "script", "chunk_delay_ms", "deterministic"),
    "openai": ("provider", "model", *OPENAI_OPTIONS, "deterministic"),
    "command": ("provider", "command", "model", "deterministic"),
}
SCRIPT_KEYS = ("turns",)
TURN_KEYS = ("text", "tool_calls")
CALL_KEYS = ("tool", "args")
CONFIG_KEYS = ("name", "source", *TOP_KEYS[1:])
CONFIG_MODEL_KEYS = ("provider", "id", "deterministic", "chunk_delay_ms", "options", "turns")

# Limits (docs/FORMAT.md, "Limits"; docs/JOBS.md). A value beyond its range is refused when
# the job is loaded, so that no run or recovery meets it later (a chunk_delay_ms of 2**63
# once validated, then made every run and recover die in time.sleep).
JOB_FILE_MAX_BYTES = 8 << 20  # a job file, and a script file: each
STORED_JOB_MAX_BYTES = 30 << 20  # the job as session.toml stores it (the script inline, resolved)
INT64 = (-(1 << 63), (1 << 63) - 1)  # TOML's integers; any integer inside args or parameters
CHUNK_DELAY_MS = (0, 60_000)
EVERY_MESSAGES = (1, 1_000_000)
EVERY_TOKENS = (1, 1_000_000_000)
MAX_TURNS = (1, 1_000_000)  # a long-lived agent may take many turns; 1M is what the benchmarks build
MAX_OUTPUT_BYTES = (1, 1 << 20)  # what a tool result keeps inline; the whole output is an artifact
TOOL_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MODEL_TIMEOUT_SECONDS = 3600.0
TEMPERATURE = (0.0, 2.0)
MAX_TOKENS = (1, 10_000_000)


class JobError(UsageError):
    """A job file (or its script) that handshake will not run. The message names file and key."""

    code = "invalid_job"


class JobConfigError(IntegrityError):
    """A stored job (session.toml's `[job]`) that does not read back: edited by hand or damaged."""

    code = "invalid_job_config"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    side_effect: str
    idempotency: str
    builtin: str | None = None
    command: tuple[str, ...] | None = None
    probe: tuple[str, ...] | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    timeout_seconds: float = 60.0
    max_output_bytes: int = 65536
    env: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScriptedCall:
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ScriptedTurn:
    text: str
    tool_calls: tuple[ScriptedCall, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    id: str
    deterministic: bool
    chunk_delay_ms: int = 0
    script: tuple[ScriptedTurn, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointPolicy:
    every_messages: int = 5
    every_tokens: int = 4096
    after_tool_call: bool = True
    on_state_change: bool = True


@dataclass(frozen=True)
class Limits:
    max_turns: int = 20


_DEFAULT_CHECKPOINT = CheckpointPolicy()
_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Job:
    name: str
    source: str
    user: str
    model: ModelSpec
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    checkpoint: CheckpointPolicy = _DEFAULT_CHECKPOINT
    limits: Limits = _DEFAULT_LIMITS
    secret_env: tuple[str, ...] = ()

    @property
    def masked_variables(self) -> tuple[str, ...]:
        """Variables whose values are masked everywhere: `secret_env`, and the model's API key."""
        key = self.model.options.get("api_key_env")
        return (*self.secret_env, key) if key and key not in self.secret_env else self.secret_env

    def tool(self, name: str) -> ToolSpec | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    def to_config(self) -> dict[str, Any]:
        """The resolved job as plain TOML values (no None: absent keys are omitted), for session.toml."""
        prompt: dict[str, Any] = {"user": self.user}
        if self.system is not None:
            prompt["system"] = self.system
        model: dict[str, Any] = {
            "provider": self.model.provider,
            "id": self.model.id,
            "deterministic": self.model.deterministic,
            "chunk_delay_ms": self.model.chunk_delay_ms,
            "options": copy.deepcopy(self.model.options),
        }
        if self.model.script:
            model["turns"] = [
                {
                    "text": turn.text,
                    "tool_calls": [
                        {"tool": call.tool, "args": copy.deepcopy(call.args)} for call in turn.tool_calls
                    ],
                }
                for turn in self.model.script
            ]
        return {
            "name": self.name,
            "source": self.source,
            "prompt": prompt,
            "model": model,
            "tools": [_tool_config(tool) for tool in self.tools],
            "checkpoint": {
                "every_messages": self.checkpoint.every_messages,
                "every_tokens": self.checkpoint.every_tokens,
                "after_tool_call": self.checkpoint.after_tool_call,
                "on_state_change": self.checkpoint.on_state_change,
            },
            "limits": {"max_turns": self.limits.max_turns},
            "secret_env": list(self.secret_env),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], *, origin: str = "stored job") -> Job:
        """The inverse of `to_config`. A config that does not check out is a `JobConfigError`
        whose message starts with `origin` (e.g. the session.toml it came from)."""
        source = _Source(origin, JobConfigError, base=None)
        if not isinstance(config, dict):
            source.fail(None, f"must be a table, not {_kind(config)}")
        top = _Table(config, source)
        top.only(CONFIG_KEYS, "a stored job")
        job_file = top.string("source")
        if not os.path.isabs(job_file):
            top.fail("source", f"must be an absolute path, not {job_file!r}")
        tools = _tools(top)
        system, user = _prompt(top)
        return cls(
            name=top.string("name"),
            source=job_file,
            user=user,
            system=system,
            model=_stored_model(top.table("model"), tools),
            tools=tools,
            checkpoint=_checkpoint(top.table("checkpoint")),
            limits=_limits(top.table("limits")),
            secret_env=top.names("secret_env"),
        )


def load_job(path: str | Path) -> Job:
    """Read, check and resolve the job file at `path` (relative paths in it: to its directory)."""
    job_file = Path(os.path.abspath(path))
    source = _Source(str(job_file), JobError, base=job_file.parent)

    def cannot_open(problem: str) -> NoReturn:
        source.fail(None, f"the job file {job_file} {problem}")

    top = _Table(_read_document(job_file, source, cannot_open), source)
    top.only(TOP_KEYS, "a job")
    name = top.optional_string("name")
    tools = _tools(top)
    system, user = _prompt(top)
    job = Job(
        name=job_file.stem if name is None else name,
        source=str(job_file),
        user=user,
        system=system,
        model=_file_model(top.table("model"), tools),
        tools=tools,
        checkpoint=_checkpoint(top.table("checkpoint")),
        limits=_limits(top.table("limits")),
        secret_env=top.names("secret_env"),
    )
    _check_stored_size(job, source)
    return job


def _check_stored_size(job: Job, source: _Source) -> None:
    """A job whose stored form (session.toml, with the script inline and every string escaped
    as TOML needs) would pass the limit a reader of session.toml holds it to is refused now."""
    import tomli_w

    size = len(tomli_w.dumps({"job": job.to_config()}).encode("utf-8"))
    if size > STORED_JOB_MAX_BYTES:
        source.fail(
            None,
            f"with its script makes a stored job of {size} bytes; the limit is {STORED_JOB_MAX_BYTES}",
        )


# --- reading files ------------------------------------------------------------------------


def _read_document(path: Path, source: _Source, cannot_open: Callable[[str], NoReturn]) -> dict[str, Any]:
    """The TOML document at `path`. Failing to open it is reported by `cannot_open` (the job
    file's own error, or `model.script` for a script); bad bytes, syntax, nesting or size by
    `source`."""
    try:
        # Opened without blocking, then checked: a FIFO would block until someone writes to it.
        fd = documents.open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        cannot_open("does not exist")
    except documents.DocumentError as exc:
        cannot_open(exc.problem)
    except OSError as exc:
        cannot_open(f"cannot be read: {exc.strerror or exc}")
    try:
        raw = documents.read_limited(fd, JOB_FILE_MAX_BYTES)
        return documents.parse_toml(raw)
    except documents.DocumentError as exc:
        source.fail(None, exc.problem, **exc.position)
    except OSError as exc:
        cannot_open(f"cannot be read: {exc.strerror or exc}")
    finally:
        os.close(fd)


# Kept under its old name for the tests that pin Python-version differences.
_toml_position = documents.toml_position


# --- typed reading with errors that name the key --------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where the values being read came from, so that an error can say so."""

    file: str
    error: type[JobError] | type[JobConfigError]
    base: Path | None  # the directory ./ and ../ resolve against; None: already resolved

    def fail(self, key: str | None, problem: str, **extra: Any) -> NoReturn:
        subject = f"{key} {problem}" if key else problem
        raise self.error(f"{self.file}: {subject}", details={"file": self.file, "key": key, **extra})

    def resolve(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        if self.base is None:
            return argv
        return tuple(
            os.path.normpath(os.path.join(self.base, arg)) if arg.startswith(("./", "../")) else arg
            for arg in argv
        )


def _join(path: str, name: str) -> str:
    part = name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)
    return f"{path}.{part}" if path else part


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def _choices(choices: tuple[str, ...]) -> str:
    return ", ".join(choices)


class _Table:
    """One TOML table being read: typed values out, a refusal for any key nobody asked about."""

    def __init__(self, data: dict[str, Any], source: _Source, path: str = "") -> None:
        self.data = data
        self.source = source
        self.path = path

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def fail(self, name: str | None, problem: str) -> NoReturn:
        self.source.fail(self.key(name) if name is not None else (self.path or None), problem)

    def fail_item(self, name: str, index: int, problem: str) -> NoReturn:
        self.source.fail(f"{self.key(name)}[{index}]", problem)

    def only(self, known: tuple[str, ...], owner: str) -> None:
        for name in self.data:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.fail(name, f"is not a key of {owner}{hint}; its keys are {_choices(known)}")

    def optional_string(self, name: str, *, allow_empty: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(name, f"must be a string, not {_kind(value)}")
        if not allow_empty and not value.strip():
            self.fail(name, "is empty")
        return value

    def string(self, name: str, *, hint: str = "", allow_empty: bool = False) -> str:
        value = self.optional_string(name, allow_empty=allow_empty)
        if value is None:
            self.fail(name, f"is missing{hint}")
        return value

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.optional_string(name, allow_empty=True)
        if value is not None and value not in choices:
            self.fail(name, f"is {value!r}, which is not one of {_choices(choices)}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, default: str | None = None) -> str:
        value = self.optional_choice(name, choices)
        if value is not None:
            return value
        if default is None:
            self.fail(name, f"is missing; expected one of {_choices(choices)}")
        return default

    def optional_integer(self, name: str, bounds: tuple[int, int]) -> int | None:
        """An integer within `bounds` (both included)."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be an integer, not {_kind(value)}")
        minimum, maximum = bounds
        if value < minimum:
            self.fail(name, f"must be at least {minimum}, not {value}")
        if value > maximum:
            self.fail(name, f"must be at most {maximum}, not {value}")
        return value

    def integer(self, name: str, default: int, bounds: tuple[int, int]) -> int:
        value = self.optional_integer(name, bounds)
        return default if value is None else value

    def optional_number(self, name: str, *, positive: bool, maximum: float) -> float | None:
        """A finite float (an integer is welcome): > 0 when `positive`, else >= 0; at most `maximum`."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"must be a number, not {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            self.fail(name, "is too large")
        if not math.isfinite(number):
            self.fail(name, f"must be a finite number, not {number}")
        if positive and number <= 0:
            self.fail(name, f"must be greater than 0, not {value}")
        if not positive and number < 0:
            self.fail(name, f"must be at least 0, not {value}")
        if number > maximum:
            self.fail(name, f"must be at most {maximum:g}, not {value}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {_kind(value)}")
        return value

    def table(self, name: str) -> _Table:
        """A sub-table; a missing one reads as empty, so that its keys take their defaults."""
        value = self.data.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, not {_kind(value)}")
        return _Table(value, self.source, self.key(name))

    def tables(self, name: str) -> list[_Table] | None:
        """An array of tables ([[name]] entries); None when the key is missing."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(name, f"must be an array of tables, not {_kind(value)}")
        tables = []
        for index, entry in enumerate(value):
            if not isinstance(entry, dict):
                self.fail_item(name, index, f"must be a table, not {_kind(entry)}")
            tables.append(_Table(entry, self.source, f"{self.key(name)}[{index}]"))
        return tables

    def optional_argv(self, name: str) -> tuple[str, ...] | None:
        """A program and its arguments: a non-empty array of strings, ./ and ../ resolved."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            shown = "an empty array" if isinstance(value, list) else _kind(value)
            self.fail(
                name, f"must be a non-empty array of strings (the program, then its arguments), not {shown}"
            )
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                self.fail_item(name, index, f"must be a string, not {_kind(arg)}")
            if "\0" in arg:
                self.fail_item(name, index, "contains a NUL character, which no command line can carry")
        if not value[0]:
            self.fail_item(name, 0, "is empty; it must name the program to run")
        return self.source.resolve(tuple(value))

    def names(self, name: str) -> tuple[str, ...]:
        """Environment variable names, each at most once; missing reads as none."""
        value = self.data.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(name, f"must be an array of environment variable names, not {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail_item(name, index, f"must be a string, not {_kind(item)}")
            if not ENV_NAME.fullmatch(item):
                self.fail_item(
                    name,
                    index,
                    f"{item!r} is not an environment variable name "
                    "(ASCII letters, digits and '_', not starting with a digit)",
                )
            if item in value[:index]:
                self.fail_item(name, index, f"repeats {item!r}")
        return tuple(value)

    def json_table(self, name: str) -> dict[str, Any] | None:
        """A table that must survive a trip through JSON (tool arguments, JSON schemas)."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, not {_kind(value)}")
        self._check_json(value, self.key(name))
        return value

    def _check_json(self, value: object, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self._check_json(item, _join(key, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._check_json(item, f"{key}[{index}]")
        elif isinstance(value, datetime | date | time):
            self.source.fail(key, "is a TOML date or time, which JSON cannot carry; write it as a string")
        elif isinstance(value, float) and not math.isfinite(value):
            self.source.fail(key, f"is {value}, which JSON cannot carry")
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            self.source.fail(key, "is outside the 64-bit integer range TOML and most JSON readers hold")


# --- the parts of a job ---------------------------------------------------------------------


def _prompt(top: _Table) -> tuple[str | None, str]:
    prompt = top.table("prompt")
    prompt.only(PROMPT_KEYS, "[prompt]")
    system = prompt.optional_string("system", allow_empty=True)
    return system, prompt.string("user", hint="; a job needs the user's prompt")


def _checkpoint(table: _Table) -> CheckpointPolicy:
    table.only(CHECKPOINT_KEYS, "[checkpoint]")
    default = _DEFAULT_CHECKPOINT
    return CheckpointPolicy(
        every_messages=table.integer("every_messages", default.every_messages, EVERY_MESSAGES),
        every_tokens=table.integer("every_tokens", default.every_tokens, EVERY_TOKENS),
        after_tool_call=table.boolean("after_tool_call", default.after_tool_call),
        on_state_change=table.boolean("on_state_change", default.on_state_change),
    )


def _limits(table: _Table) -> Limits:
    table.only(LIMITS_KEYS, "[limits]")
    return Limits(max_turns=table.integer("max_turns", _DEFAULT_LIMITS.max_turns, MAX_TURNS))


def _tools(top: _Table) -> tuple[ToolSpec, ...]:
    tools: list[ToolSpec] = []
    for table in top.tables("tools") or []:
        tool = _tool(table)
        for index, earlier in enumerate(tools):
            if earlier.name == tool.name:
                table.fail("name", f"{tool.name!r} is already the name of tools[{index}]")
        tools.append(tool)
    return tuple(tools)


def _tool(table: _Table) -> ToolSpec:
    table.only(TOOL_KEYS, "a tool")
    name = table.string("name")
    if not TOOL_NAME.fullmatch(name):
        table.fail(
            "name",
            f"{name!r} is not a valid tool name: 1-64 ASCII letters, digits, '_' or '-', "
            "starting with a letter or '_'",
        )
    builtin = table.optional_choice("builtin", BUILTINS)
    command = table.optional_argv("command")
    if builtin is None and command is None:
        table.fail(None, "has neither builtin nor command; a tool is exactly one of them")
    if builtin is not None and command is not None:
        table.fail("command", f"cannot be given with builtin = {builtin!r}; a tool is exactly one of them")
    side_effect = table.choice("side_effect", SIDE_EFFECTS)
    if builtin == "write_file" and side_effect == "read":
        # A read tool's intent is not synced before it runs (DESIGN 2, rule 7): a lie here loses write-ahead.
        table.fail("side_effect", "is 'read', but builtin write_file writes files; declare write")
    idempotency = table.choice("idempotency", IDEMPOTENCIES)
    probe = table.optional_argv("probe")
    if probe is not None and command is None:
        table.fail("probe", "is only for command tools; it needs command")
    if "env" in table.data and command is None:
        table.fail("env", "is only for command tools; a builtin runs inside handshake")
    timeout = table.optional_number("timeout_seconds", positive=True, maximum=TOOL_TIMEOUT_SECONDS)
    return ToolSpec(
        name=name,
        side_effect=side_effect,
        idempotency=idempotency,
        builtin=builtin,
        command=command,
        probe=probe,
        description=table.optional_string("description"),
        parameters=table.json_table("parameters"),
        timeout_seconds=ToolSpec.timeout_seconds if timeout is None else timeout,
        max_output_bytes=table.integer("max_output_bytes", ToolSpec.max_output_bytes, MAX_OUTPUT_BYTES),
        env=table.names("env"),
    )


def _tool_config(tool: ToolSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": tool.name,
        "side_effect": tool.side_effect,
        "idempotency": tool.idempotency,
    }
    if tool.builtin is not None:
        config["builtin"] = tool.builtin
    if tool.command is not None:
        config["command"] = list(tool.command)
    if tool.probe is not None:
        config["probe"] = list(tool.probe)
    if tool.description is not None:
        config["description"] = tool.description
    if tool.parameters is not None:
        config["parameters"] = copy.deepcopy(tool.parameters)
    config["timeout_seconds"] = tool.timeout_seconds
    config["max_output_bytes"] = tool.max_output_bytes
    if tool.command is not None:
        config["env"] = list(tool.env)
    return config


def _file_model(table: _Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    """[model] as a job file writes it: the provider's own keys, flat."""
    provider = table.choice("provider", PROVIDERS, default="scripted")
    table.only(MODEL_KEYS[provider], f"[model] with provider = {provider!r}")
    if provider == "scripted":
        if not table.boolean("deterministic", True):
            table.fail("deterministic", "cannot be false: the scripted provider is deterministic")
        chunk_delay_ms = table.integer("chunk_delay_ms", 0, CHUNK_DELAY_MS)
        return ModelSpec("scripted", "scripted", True, chunk_delay_ms, script=_script(table, tools))
    deterministic = table.boolean("deterministic", False)
    if provider == "openai":
        model_id = table.string("model", hint="; the openai provider needs the model's name")
        return ModelSpec("openai", model_id, deterministic, options=_openai_options(table))
    options = _command_options(table)
    model_id = table.optional_string("model") or os.path.basename(options["command"][0])
    return ModelSpec("command", model_id, deterministic, options=options)


def _stored_model(table: _Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    """[model] as `Job.to_config` writes it: id and options spelled out, the script's turns inline."""
    table.only(CONFIG_MODEL_KEYS, "a stored model")
    provider = table.choice("provider", PROVIDERS)
    deterministic = table.boolean("deterministic", provider == "scripted")
    chunk_delay_ms = table.integer("chunk_delay_ms", 0, CHUNK_DELAY_MS)
    options = table.table("options")
    if provider == "scripted":
        if not deterministic:
            table.fail("deterministic", "cannot be false: the scripted provider is deterministic")
        options.only((), "the scripted provider's options")
        script = _turns(table, tools, declared_by="the job")
        return ModelSpec("scripted", table.string("id"), True, chunk_delay_ms, script=script)
    if "turns" in table.data:
        table.fail("turns", "is only for the scripted provider")
    if chunk_delay_ms:
        table.fail("chunk_delay_ms", "is only for the scripted provider")
    if provider == "openai":
        options.only(OPENAI_OPTIONS, "the openai provider's options")
        return ModelSpec("openai", table.string("id"), deterministic, options=_openai_options(options))
    options.only(COMMAND_OPTIONS, "the command provider's options")
    return ModelSpec("command", table.string("id"), deterministic, options=_command_options(options))


def _openai_options(table: _Table) -> dict[str, Any]:
    options: dict[str, Any] = {"base_url": _base_url(table)}
    api_key_env = table.optional_string("api_key_env")
    if api_key_env is not None:
        if not ENV_NAME.fullmatch(api_key_env):
            table.fail("api_key_env", f"{api_key_env!r} is not an environment variable name")
        options["api_key_env"] = api_key_env
    temperature = table.optional_number("temperature", positive=False, maximum=TEMPERATURE[1])
    if temperature is not None:
        options["temperature"] = temperature
    seed = table.optional_integer("seed", INT64)
    if seed is not None:
        options["seed"] = seed
    max_tokens = table.optional_integer("max_tokens", MAX_TOKENS)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    headers = _headers(table)
    if headers is not None:
        options["headers"] = headers
    timeout = table.optional_number("timeout_seconds", positive=True, maximum=MODEL_TIMEOUT_SECONDS)
    if timeout is not None:
        options["timeout_seconds"] = timeout
    return options


def _base_url(table: _Table) -> str:
    url = table.string(
        "base_url", hint="; the openai provider needs the server's URL, e.g. http://127.0.0.1:11434/v1"
    )
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError as exc:
        table.fail("base_url", f"{url!r} is not a URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        table.fail("base_url", f"{url!r} is not an http:// or https:// URL")
    if has_credentials:
        table.fail("base_url", "carries credentials; they would be stored in the session. Use api_key_env")
    return url


def _headers(table: _Table) -> dict[str, str] | None:
    headers = table.data.get("headers")
    if headers is None:
        return None
    if not isinstance(headers, dict):
        table.fail("headers", f"must be a table of strings, not {_kind(headers)}")
    key = table.key("headers")
    for name, value in headers.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            table.source.fail(_join(key, name), "is not a valid HTTP header name")
        if not isinstance(value, str):
            table.source.fail(_join(key, name), f"must be a string, not {_kind(value)}")
        if "\r" in value or "\n" in value or "\0" in value:
            table.source.fail(_join(key, name), "contains a line break or NUL, which no header can carry")
        if name.lower() in _CREDENTIAL_HEADERS:
            table.source.fail(
                _join(key, name),
                "would store a credential in the session; put the key in an environment variable "
                "and name it in api_key_env",
            )
    return dict(headers)


def _command_options(table: _Table) -> dict[str, Any]:
    argv = table.optional_argv("command")
    if argv is None:
        table.fail("command", "is missing; the command provider needs the program to run, as an array")
    return {"command": list(argv)}


def _script(model: _Table, tools: tuple[ToolSpec, ...]) -> tuple[ScriptedTurn, ...]:
    """The scripted model's turns, from the script file that [model] script names."""
    name = model.string("script", hint="; the scripted provider needs a script file of [[turns]]")
    base = model.source.base
    assert base is not None  # a job file always has a directory
    path = Path(os.path.normpath(os.path.join(base, name)))
    source = _Source(str(path), JobError, base=path.parent)

    def cannot_open(problem: str) -> NoReturn:
        model.fail("script", f"names {path}, which {problem}")

    document = _Table(_read_document(path, source, cannot_open), source)
    document.only(SCRIPT_KEYS, "a script")
    return _turns(document, tools, declared_by=model.source.file)


def _turns(table: _Table, tools: tuple[ToolSpec, ...], *, declared_by: str) -> tuple[ScriptedTurn, ...]:
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
                tools_list = f"its tools are {_choices(declared)}" if declared else "it declares no tools"
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
