"""The tool gate: call ids, idempotency keys, and running one tool call (DESIGN section 4).

This module owns what happens between a `tool.intent` and its `tool.result`: it runs a
builtin file tool or a command tool and turns whatever happens into a `ToolOutcome` the
model will see. A failing tool never raises; its outcome carries an error object
(`code`, `kind`, `retryable`, `message`, and details). The one exception is a failed
fsync of a builtin's own write (`DurabilityError`): the effect's durability is then
unknown and the process must stop (DESIGN section 2, rules 4 and 7).

Error kinds, coarse enough for a model to act on:

- `refused`: the gate would not do it (a path outside the workspace, a link that moved
  while being resolved, something that is not a regular file);
- `invalid_arguments`: the arguments do not fit the tool (missing or wrong-typed fields);
- `timeout`: the tool ran past `timeout_seconds` and was killed (the only retryable kind);
- `tool_failed`: the tool ran and failed (non-zero exit, file not found, an I/O error);
- `launch_failed`: the tool could not be started (program missing, workspace missing).

Builtin file tools stay inside the workspace (`files`: the path resolved, links included,
then opened component by component with O_NOFOLLOW). Command tools run from an argv list,
never through a shell, with a small environment, immune to a Ctrl-C aimed at handshake
(`process`). What either says is capped here at the tool's `max_output_bytes`; the whole
of a longer output is stored as an artifact and named in the outcome.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from handshake_cli.engine.tools import files, process
from handshake_cli.storage.journal.codec import json_encoder

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import ToolSpec

KEY_PREFIX = "hk_"
KEY_HEX_CHARS = 40
PROBE_DETAIL_CHARS = 500

_CANONICAL = json_encoder(sort_keys=True, ensure_ascii=False, allow_nan=True)


def tool_call_id(turn: int, index: int) -> str:
    """The id of the `index`-th tool call of model turn `turn`: the same on every retry."""
    return f"call-{turn}-{index}"


def idempotency_key(session_id: str, tool_call_id: str, tool: str, args: Any) -> str:
    """A key derived from the session, the call and its canonical arguments: the same on every retry."""
    canonical = _CANONICAL([session_id, tool_call_id, tool, args])
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return KEY_PREFIX + digest[:KEY_HEX_CHARS]


class ToolInDoubt(Exception):
    """A call whose outcome cannot be known (an MCP server that died or hung mid-call): no
    result is recorded, and recovery's usual rules decide (DESIGN section 5)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class McpCaller(Protocol):
    """The session's MCP servers (engine/tools/mcp.py `McpHost`), as the gate calls them."""

    def call(self, spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome: ...
    def probe(self, spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> tuple[str, str, Any]: ...


@dataclass(frozen=True)
class ToolContext:
    """What one call needs besides the spec and the arguments."""

    session_id: str
    tool_call_id: str
    idempotency_key: str
    workspace: Path
    store_large_output: Callable[[bytes], str]  # stores bytes as an artifact, returns its id
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    mcp: McpCaller | None = None  # the session's MCP servers, when its job declares any


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one call: `output` on success, `error` on failure (never both)."""

    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_result_data(self) -> dict[str, Any]:
        return {"output": self.output} if self.error is None else {"error": self.error}


def _failure(code: str, kind: str, message: str, *, retryable: bool = False, **details: Any) -> ToolOutcome:
    return ToolOutcome(
        error={"code": code, "kind": kind, "retryable": retryable, "message": message, **details}
    )


def run_tool(spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    """Run one call of `spec`. Never raises for a tool failure; see the module docstring.
    An MCP tool whose server dies or hangs mid-call raises ToolInDoubt."""
    if spec.mcp_server is not None:
        if ctx.mcp is None:
            return _failure(
                "mcp_unavailable", "launch_failed", f"the MCP server of {spec.name!r} is not running"
            )
        return ctx.mcp.call(spec, args, ctx)
    if spec.builtin == "write_file":
        return _write_file(args, ctx)
    if spec.builtin == "read_file":
        return _read_file(spec, args, ctx)
    if spec.builtin is not None:
        return _failure("unknown_builtin", "launch_failed", f"no builtin tool named {spec.builtin!r}")
    if not spec.command:
        return _failure(
            "no_command", "launch_failed", f"tool {spec.name!r} has neither a builtin nor a command"
        )
    finished = _run_command(spec, spec.command, args, ctx)
    if isinstance(finished, ToolOutcome):
        return finished
    streams = {
        **_capped_stream("stdout", finished.stdout, spec.max_output_bytes, ctx),
        **_capped_stream("stderr", finished.stderr, spec.max_output_bytes, ctx),
    }
    if finished.returncode == 0:
        return ToolOutcome(output={"exit_code": 0, **streams})
    details: dict[str, Any] = {"exit_code": finished.returncode}
    if finished.returncode < 0:
        details["signal"] = process.signal_name(-finished.returncode)
        message = f"{spec.name} was killed by {details['signal']}"
    else:
        message = f"{spec.name} exited with status {finished.returncode}"
    return _failure("exit_status", "tool_failed", message, **details, **streams)


def run_probe(
    spec: ToolSpec, args: dict[str, Any], ctx: ToolContext
) -> tuple[str, str, dict[str, Any] | None]:
    """Ask the tool's probe whether an in-doubt call took effect.

    Exit 0 means it happened, 1 that it did not; any other status, a timeout or a probe that
    cannot be started means unknown. Returns the verdict, a short detail text, and, when it
    happened, the probe's output shaped like the tool's own (`exit_code`, `stdout`,
    `stderr`): a probe that prints what the call printed makes the recovered thread the one
    a crash-free run would have had.
    """
    if spec.probe_tool is not None and ctx.mcp is not None:
        return ctx.mcp.probe(spec, args, ctx)
    if not spec.probe:
        return "unknown", f"tool {spec.name!r} declares no probe", None
    finished = _run_command(spec, spec.probe, args, ctx)
    if isinstance(finished, ToolOutcome):
        reason = finished.error["message"] if finished.error else "unknown failure"
        return "unknown", f"probe failed: {reason}", None
    verdict = {0: "happened", 1: "not_happened"}.get(finished.returncode, "unknown")
    detail = f"probe exited with status {finished.returncode}"
    said = _decode_capped(finished.stdout or finished.stderr, PROBE_DETAIL_CHARS * 4)[0].strip()
    if said:
        detail += ": " + said[:PROBE_DETAIL_CHARS]
    output = None
    if verdict == "happened":
        output = {
            "exit_code": 0,
            **_capped_stream("stdout", finished.stdout, spec.max_output_bytes, ctx),
            **_capped_stream("stderr", finished.stderr, spec.max_output_bytes, ctx),
        }
    return verdict, detail, output


# --- command tools -----------------------------------------------------------------------


def _run_command(
    spec: ToolSpec, argv: tuple[str, ...], args: Any, ctx: ToolContext
) -> process.Finished | ToolOutcome:
    """Run `argv` (the tool's command or its probe) to completion or to its timeout; a
    failure to start it or a timeout is already the call's outcome."""
    if not ctx.workspace.is_dir():
        return _failure(
            "workspace_missing", "launch_failed", f"the workspace {ctx.workspace} is not a directory"
        )
    try:
        stdin = process.stdin_json(args)
    except (TypeError, ValueError) as exc:
        return _failure("invalid_arguments", "invalid_arguments", f"arguments are not JSON: {exc}")
    env = process.tool_environment(
        ctx.environ,
        spec.env,
        idempotency_key=ctx.idempotency_key,
        session_id=ctx.session_id,
        tool_call_id=ctx.tool_call_id,
    )
    try:
        return process.run(argv, cwd=ctx.workspace, env=env, stdin=stdin, timeout=spec.timeout_seconds)
    except process.NotStarted as exc:
        return _failure("launch_failed", "launch_failed", f"could not start {argv[0]!r}: {exc.reason}")
    except process.TimedOut:
        return _failure(
            "timeout",
            "timeout",
            f"{spec.name} did not finish within {spec.timeout_seconds:g} s and was killed",
            retryable=True,
            timeout_seconds=spec.timeout_seconds,
        )


def capped_text(name: str, text: str, limit: int, ctx: ToolContext) -> dict[str, Any]:
    """`{name: text}`, cut at `limit` UTF-8 bytes; the whole text kept as an artifact then."""
    return _capped_stream(name, text.encode("utf-8", "surrogatepass"), limit, ctx)


def _capped_stream(name: str, data: bytes, limit: int, ctx: ToolContext) -> dict[str, Any]:
    text, truncated = _decode_capped(data, limit)
    if not truncated:
        return {name: text}
    return {name: text, f"{name}_truncated": True, f"{name}_artifact_id": ctx.store_large_output(data)}


def _decode_capped(data: bytes, limit: int) -> tuple[str, bool]:
    """Decode at most `limit` bytes, cut where a UTF-8 character starts; returns (text, truncated)."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    end = limit = max(limit, 0)
    # A UTF-8 character has at most three continuation bytes: step back over them so no
    # character is split in two. Data that is not UTF-8 there is simply cut at the limit.
    while end > 0 and limit - end < 3 and data[end] & 0xC0 == 0x80:
        end -= 1
    if data[end] & 0xC0 == 0x80:
        end = limit
    return data[:end].decode("utf-8", "replace"), True


# --- builtin file tools ------------------------------------------------------------------


def _write_file(args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    try:
        return ToolOutcome(output=files.write_file(args, ctx.workspace))
    except files.FileToolFailed as failure:
        return _failure_of(failure)


def _read_file(spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    try:
        path, data = files.read_file(args, ctx.workspace)
    except files.FileToolFailed as failure:
        return _failure_of(failure)
    output: dict[str, Any] = {"path": path}
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        output["binary"] = True
    content, truncated = _decode_capped(data, spec.max_output_bytes)
    output["content"] = content
    if truncated:
        output.update(truncated=True, total_bytes=len(data), artifact_id=ctx.store_large_output(data))
    return ToolOutcome(output=output)


def _failure_of(failure: files.FileToolFailed) -> ToolOutcome:
    return _failure(failure.code, failure.kind, failure.message, **failure.details)
