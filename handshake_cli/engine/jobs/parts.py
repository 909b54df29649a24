"""The parts of a job, read from a job file or from a stored job: which keys exist at each
level, their types, defaults and ranges.

[prompt], [[tools]], [checkpoint], [limits] and `secret_env` are read here. [model] is read
here only as far as `provider`: the rest belongs to that provider's options module
(`providers.job_options`), so that a new provider brings its keys with it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from handshake_cli.engine.jobs.job import (
    DEFAULT_CHECKPOINT,
    DEFAULT_LIMITS,
    CheckpointPolicy,
    Job,
    JobConfigError,
    Limits,
    McpOverride,
    McpServerSpec,
    ModelSpec,
    ToolSpec,
)
from handshake_cli.engine.jobs.tables import Source, Table, kind_of, listed
from handshake_cli.engine.providers import PROVIDERS, job_options

SIDE_EFFECTS = ("read", "write", "execute")
IDEMPOTENCIES = ("idempotent", "idempotent_with_key", "non_idempotent")
BUILTINS = ("write_file", "read_file")

TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", re.ASCII)

TOP_KEYS = ("name", "prompt", "model", "tools", "mcp", "checkpoint", "limits", "secret_env")
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
MCP_KEYS = (
    "name",
    "command",
    "url",
    "env",
    "tools",
    "timeout_seconds",
    "start_timeout_seconds",
    "max_output_bytes",
    "override",
)
MCP_OVERRIDE_KEYS = (
    "side_effect",
    "idempotency",
    "probe",
    "probe_tool",
    "probe_match",
    "timeout_seconds",
    "max_output_bytes",
)
MCP_START_TIMEOUT_SECONDS = 600.0
CHECKPOINT_KEYS = ("every_messages", "every_tokens", "after_tool_call", "on_state_change")
LIMITS_KEYS = ("max_turns",)
CONFIG_KEYS = ("name", "source", *TOP_KEYS[1:])
CONFIG_MODEL_KEYS = ("provider", "id", "deterministic", "chunk_delay_ms", "options", "turns")

# Limits (docs/FORMAT.md, "Limits"; docs/JOBS.md). A value beyond its range is refused when
# the job is loaded, so that no run or recovery meets it later (a chunk_delay_ms of 2**63
# once validated, then made every run and recover die in time.sleep).
CHUNK_DELAY_MS = (0, 60_000)
EVERY_MESSAGES = (1, 1_000_000)
EVERY_TOKENS = (1, 1_000_000_000)
MAX_TURNS = (1, 1_000_000)  # a long-lived agent may take many turns; 1M is what the benchmarks build
MAX_OUTPUT_BYTES = (1, 1 << 20)  # what a tool result keeps inline; the whole output is an artifact
TOOL_TIMEOUT_SECONDS = 7 * 24 * 3600.0


def job_from_file(top: Table, job_file: Path) -> Job:
    """The job a job file's top-level table describes."""
    top.only(TOP_KEYS, "a job")
    name = top.optional_string("name")
    tools = _tools(top)
    mcp = _mcp_servers(top, tools)
    system, user = _prompt(top)
    return Job(
        name=job_file.stem if name is None else name,
        source=str(job_file),
        user=user,
        system=system,
        model=_file_model(top.table("model"), (*tools, *_listed_mcp_tools(mcp))),
        tools=tools,
        checkpoint=_checkpoint(top.table("checkpoint")),
        limits=_limits(top.table("limits")),
        secret_env=top.names("secret_env"),
        mcp=mcp,
    )


def stored_job(config: dict[str, Any], origin: str) -> Job:
    """The job `Job.to_config` stored; a `JobConfigError` naming `origin` when it does not check out."""
    source = Source(origin, JobConfigError, base=None)
    if not isinstance(config, dict):
        source.fail(None, f"must be a table, not {kind_of(config)}")
    top = Table(config, source)
    top.only(CONFIG_KEYS, "a stored job")
    job_file = top.string("source")
    if not os.path.isabs(job_file):
        top.fail("source", f"must be an absolute path, not {job_file!r}")
    tools = _tools(top)
    mcp = _mcp_servers(top, tools)
    system, user = _prompt(top)
    return Job(
        name=top.string("name"),
        source=job_file,
        user=user,
        system=system,
        model=_stored_model(top.table("model"), (*tools, *_listed_mcp_tools(mcp))),
        tools=tools,
        checkpoint=_checkpoint(top.table("checkpoint")),
        limits=_limits(top.table("limits")),
        secret_env=top.names("secret_env"),
        mcp=mcp,
    )


def stored_options(model: Table, known: tuple[str, ...], owner: str) -> tuple[bool, Table]:
    """A stored [model] of a provider that plays no script: its `deterministic` and its
    `options` table, whose keys must be among `known`."""
    deterministic = model.boolean("deterministic", False)
    chunk_delay_ms = model.integer("chunk_delay_ms", 0, CHUNK_DELAY_MS)
    options = model.table("options")
    if "turns" in model.data:
        model.fail("turns", "is only for the scripted provider")
    if chunk_delay_ms:
        model.fail("chunk_delay_ms", "is only for the scripted provider")
    options.only(known, owner)
    return deterministic, options


def _file_model(table: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    """[model] as a job file writes it: the provider's own keys, flat."""
    provider = table.choice("provider", PROVIDERS, default="scripted")
    options = job_options(provider)
    table.only(options.JOB_KEYS, f"[model] with provider = {provider!r}")
    return options.from_job_file(table, tools)


def _stored_model(table: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    """[model] as `Job.to_config` writes it: id and options spelled out, the script's turns inline."""
    table.only(CONFIG_MODEL_KEYS, "a stored model")
    provider = table.choice("provider", PROVIDERS)
    return job_options(provider).from_stored(table, tools)


def _prompt(top: Table) -> tuple[str | None, str]:
    prompt = top.table("prompt")
    prompt.only(PROMPT_KEYS, "[prompt]")
    system = prompt.optional_string("system", allow_empty=True)
    return system, prompt.string("user", hint="; a job needs the user's prompt")


def _checkpoint(table: Table) -> CheckpointPolicy:
    table.only(CHECKPOINT_KEYS, "[checkpoint]")
    default = DEFAULT_CHECKPOINT
    return CheckpointPolicy(
        every_messages=table.integer("every_messages", default.every_messages, EVERY_MESSAGES),
        every_tokens=table.integer("every_tokens", default.every_tokens, EVERY_TOKENS),
        after_tool_call=table.boolean("after_tool_call", default.after_tool_call),
        on_state_change=table.boolean("on_state_change", default.on_state_change),
    )


def _limits(table: Table) -> Limits:
    table.only(LIMITS_KEYS, "[limits]")
    return Limits(max_turns=table.integer("max_turns", DEFAULT_LIMITS.max_turns, MAX_TURNS))


def _tools(top: Table) -> tuple[ToolSpec, ...]:
    tools: list[ToolSpec] = []
    for table in top.tables("tools") or []:
        tool = _tool(table)
        for index, earlier in enumerate(tools):
            if earlier.name == tool.name:
                table.fail("name", f"{tool.name!r} is already the name of tools[{index}]")
        tools.append(tool)
    return tuple(tools)


def _tool(table: Table) -> ToolSpec:
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


# --- [[mcp]]: MCP tool servers --------------------------------------------------------------


def _mcp_servers(top: Table, tools: tuple[ToolSpec, ...]) -> tuple[McpServerSpec, ...]:
    servers: list[McpServerSpec] = []
    for table in top.tables("mcp") or []:
        server = _mcp_server(table)
        for index, earlier in enumerate(servers):
            if earlier.name == server.name:
                table.fail("name", f"{server.name!r} is already the name of mcp[{index}]")
        servers.append(server)
    # A tool name the model sees belongs to one tool only: a [[tools]] entry or one server's.
    seen = {tool.name: "[[tools]]" for tool in tools}
    for index, server in enumerate(servers):
        for name in server.tools or ():
            if name in seen:
                top.source.fail(f"mcp[{index}].tools", f"names {name!r}, which {seen[name]} already has")
            seen[name] = f"mcp[{index}] ({server.name})"
    return tuple(servers)


def _listed_mcp_tools(servers: tuple[McpServerSpec, ...]) -> tuple[ToolSpec, ...]:
    """Stand-ins for the MCP tools a job lists by name, so that a script may call them (a
    server that offers all its tools is only asked at run time, after the script is checked)."""
    return tuple(
        ToolSpec(name=name, side_effect="write", idempotency="non_idempotent", mcp_server=server.name)
        for server in servers
        for name in server.tools or ()
    )


def _mcp_server(table: Table) -> McpServerSpec:
    table.only(MCP_KEYS, "an MCP server ([[mcp]])")
    name = table.string("name")
    if not TOOL_NAME.fullmatch(name):
        table.fail(
            "name",
            f"{name!r} is not a valid server name: 1-64 ASCII letters, digits, '_' or '-', "
            "starting with a letter or '_'",
        )
    command = table.optional_argv("command")
    url = _mcp_url(table)
    if command is None and url is None:
        table.fail(
            None, "has neither command nor url; an MCP server is started from one or reached at the other"
        )
    if command is not None and url is not None:
        table.fail("url", "cannot be given with command; an MCP server is exactly one of them")
    if "env" in table.data and command is None:
        table.fail("env", "is only for a server handshake starts (command); a url names a running one")
    tools = _mcp_tool_names(table)
    timeout = table.optional_number("timeout_seconds", positive=True, maximum=TOOL_TIMEOUT_SECONDS)
    start = table.optional_number("start_timeout_seconds", positive=True, maximum=MCP_START_TIMEOUT_SECONDS)
    overrides: dict[str, McpOverride] = {}
    block = table.table("override")
    for tool_name in block.data:
        if tools is not None and tool_name not in tools:
            block.fail(tool_name, f"is not among this server's tools ({listed(tools)})")
        overrides[tool_name] = _mcp_override(block.table(tool_name))
    defaults = McpServerSpec(name)
    return McpServerSpec(
        name=name,
        command=command,
        url=url,
        env=table.names("env"),
        tools=tools,
        timeout_seconds=defaults.timeout_seconds if timeout is None else timeout,
        start_timeout_seconds=defaults.start_timeout_seconds if start is None else start,
        max_output_bytes=table.integer("max_output_bytes", defaults.max_output_bytes, MAX_OUTPUT_BYTES),
        override=overrides,
    )


def _mcp_url(table: Table) -> str | None:
    url = table.optional_string("url")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError as exc:
        table.fail("url", f"{url!r} is not a URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        table.fail("url", f"{url!r} is not an http:// or https:// URL")
    if has_credentials:
        table.fail("url", "may not contain user:password@; the session stores the URL")
    return url


def _mcp_tool_names(table: Table) -> tuple[str, ...] | None:
    value = table.data.get("tools")
    if value is None:
        return None
    if not isinstance(value, list):
        table.fail("tools", f"must be an array of tool names (leave it out for all), not {kind_of(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            table.fail_item("tools", index, f"must be a string, not {kind_of(item)}")
        if not TOOL_NAME.fullmatch(item):
            table.fail_item("tools", index, f"{item!r} is not a valid tool name")
        if item in value[:index]:
            table.fail_item("tools", index, f"repeats {item!r}")
    return tuple(value)


def _mcp_override(table: Table) -> McpOverride:
    table.only(MCP_OVERRIDE_KEYS, "an MCP tool's override")
    side_effect = table.optional_choice("side_effect", SIDE_EFFECTS)
    idempotency = table.optional_choice("idempotency", IDEMPOTENCIES)
    probe = table.optional_argv("probe")
    probe_tool = table.optional_string("probe_tool")
    if probe is not None and probe_tool is not None:
        table.fail("probe_tool", "cannot be given with probe; a tool has one probe")
    if probe_tool is not None and not TOOL_NAME.fullmatch(probe_tool):
        table.fail("probe_tool", f"{probe_tool!r} is not a valid tool name")
    probe_match = table.optional_string("probe_match")
    if probe_match is not None and probe_tool is None:
        table.fail("probe_match", "is only for probe_tool")
    return McpOverride(
        side_effect=side_effect,
        idempotency=idempotency,
        probe=probe,
        probe_tool=probe_tool,
        probe_match=probe_match,
        timeout_seconds=table.optional_number("timeout_seconds", positive=True, maximum=TOOL_TIMEOUT_SECONDS),
        max_output_bytes=table.optional_integer("max_output_bytes", MAX_OUTPUT_BYTES),
    )
