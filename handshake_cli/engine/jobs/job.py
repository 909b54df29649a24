"""A resolved job (`Job` and its parts) and its stored form, session.toml's `[job]`.

A loaded job is self-contained. `Job.to_config()` holds everything resolved (absolute
paths, the script's turns), so session.toml carries the whole job and a session never reads
the job file again; `Job.from_config()` reads it back, as strictly as the file itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.errors import IntegrityError, UsageError


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
    # A tool an MCP server offers (docs/JOBS.md, [[mcp]]): never stored as a [[tools]] entry,
    # made at run time from the server's listing and the job's [mcp.override.NAME].
    mcp_server: str | None = None
    probe_tool: str | None = None  # another tool of the same server that answers for it
    probe_match: str | None = None  # what the probe tool's text must hold: "idempotency_key" or an argument
    # Where side_effect, idempotency (and the rest) came from: "annotation", "job" or "default".
    origin: dict[str, str] | None = None


@dataclass(frozen=True)
class McpOverride:
    """The job's own declaration of one MCP tool ([mcp.override.NAME]); it beats the annotations."""

    side_effect: str | None = None
    idempotency: str | None = None
    probe: tuple[str, ...] | None = None
    probe_tool: str | None = None
    probe_match: str | None = None
    timeout_seconds: float | None = None
    max_output_bytes: int | None = None


@dataclass(frozen=True)
class McpServerSpec:
    """An MCP server a job declares ([[mcp]]): started over stdio from `command`, or reached at `url`."""

    name: str
    command: tuple[str, ...] | None = None
    url: str | None = None
    env: tuple[str, ...] = ()
    tools: tuple[str, ...] | None = None  # the tools the model may use; None: all it offers
    timeout_seconds: float = 60.0  # one tools/call
    start_timeout_seconds: float = 30.0  # starting the server and listing its tools
    max_output_bytes: int = 65536
    override: dict[str, McpOverride] = field(default_factory=dict)


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
    # The provider's own settings, as its options module reads them (providers/*_options.py).
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


DEFAULT_CHECKPOINT = CheckpointPolicy()
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Job:
    name: str
    source: str
    user: str
    model: ModelSpec
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    checkpoint: CheckpointPolicy = DEFAULT_CHECKPOINT
    limits: Limits = DEFAULT_LIMITS
    secret_env: tuple[str, ...] = ()
    mcp: tuple[McpServerSpec, ...] = ()

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
        config: dict[str, Any] = {
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
        if self.mcp:  # only then: a session without MCP stores the job as it always did
            config["mcp"] = [_mcp_config(server) for server in self.mcp]
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], *, origin: str = "stored job") -> Job:
        """The inverse of `to_config`. A config that does not check out is a `JobConfigError`
        whose message starts with `origin` (e.g. the session.toml it came from)."""
        # The reading lives with the job file's, which it mirrors key for key.
        from handshake_cli.engine.jobs.parts import stored_job

        return stored_job(config, origin)


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


def _mcp_config(server: McpServerSpec) -> dict[str, Any]:
    config: dict[str, Any] = {"name": server.name}
    if server.command is not None:
        config["command"] = list(server.command)
        config["env"] = list(server.env)  # only a server handshake starts has an environment
    if server.url is not None:
        config["url"] = server.url
    if server.tools is not None:
        config["tools"] = list(server.tools)
    config["timeout_seconds"] = server.timeout_seconds
    config["start_timeout_seconds"] = server.start_timeout_seconds
    config["max_output_bytes"] = server.max_output_bytes
    if server.override:
        config["override"] = {
            name: {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in vars(override).items()
                if value is not None
            }
            for name, override in server.override.items()
        }
    return config
