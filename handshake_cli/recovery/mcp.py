"""MCP tool servers in recovery: the listings a session journaled, the tool specs they give,
and the servers started again and compared with what was journaled.

A session's MCP tools are not in its stored job: they are what the servers offered when the
session started (`mcp.tools` records), gated by the job's [mcp.override.NAME]. The planner
reads them here (a pure function of the session's files); the executor starts the servers
again and blocks with `mcp_tools_changed` when a tool the session relies on is gone or its
input schema or annotations differ, rather than call it blindly.

Before that, `stop_left_behind` stops the servers a killed `run` or `recover` left running:
the SDK starts a stdio server in a process group of its own, so it outlives handshake and
finishes the call in progress, and a probe that asked before it had would see "not
happened" and the call would run twice. Each journaled `mcp.process` that is still the same
process (its start time says so) has its group SIGKILLed, and recovery waits until it has
gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handshake_cli.engine.jobs import ToolSpec
from handshake_cli.engine.tools import mcp_tools, process
from handshake_cli.errors import EnvironmentFailure
from handshake_cli.recovery.view import SessionView

PROCESS_RECORD = "mcp.process"  # a started stdio server's process (docs/FORMAT.md)

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import Job
    from handshake_cli.engine.tools.mcp import McpHost


def journaled_listings(view: SessionView) -> dict[str, list[dict[str, Any]]]:
    """Each server's last journaled listing (none when the job declares no MCP server)."""
    if not view.job.mcp:
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    for record in view.store.scan(view.session_id).records:
        if record.type == mcp_tools.RECORD_TYPE:
            tools = record.data.get("tools")
            found[str(record.data.get("server"))] = [t for t in tools or [] if isinstance(t, dict)]
    return found


class McpServerLeftRunning(EnvironmentFailure):
    """A server a crash left running did not go when killed: recovery must not probe or call."""

    code = "mcp_server_left_running"


def stop_left_behind(view: SessionView, root_args: list[str]) -> list[dict[str, Any]]:
    """Stop each stdio server the session journaled (`mcp.process`) that is still running and
    is the same process, and wait until it has gone. Returns what was stopped: the server,
    its pid and the pids of its process group that were killed (empty when none was left)."""
    if not view.job.mcp:
        return []
    stopped: list[dict[str, Any]] = []
    for record in view.store.scan(view.session_id).records:
        if record.type != PROCESS_RECORD:
            continue
        try:
            killed = process.stop_left_behind(record.data)
        except process.StillRunning as exc:
            raise McpServerLeftRunning(
                f"the MCP server {record.data.get('server')!r} (pid {record.data.get('pid')}) left "
                f"running by an interrupted run was killed but {exc}; nothing was recovered",
                guidance=[" ".join(["handshake", "recover", view.session_id, *root_args])],
            ) from None
        if killed:
            data = record.data
            stopped.append({"server": data.get("server"), "pid": data.get("pid"), "killed": killed})
    return stopped


def journaled_specs(view: SessionView) -> dict[str, ToolSpec]:
    """The MCP tools of the session as journaled, by name."""
    listings = journaled_listings(view)
    out: dict[str, ToolSpec] = {}
    for server in view.job.mcp:
        for spec in mcp_tools.tool_specs(server, listings.get(server.name, [])):
            out.setdefault(spec.name, spec)
    return out


class Restarted:
    """The session's MCP servers started again for a recovery."""

    def __init__(
        self, host: McpHost, job: Job, listings: dict[str, list[dict[str, Any]]], changes: list[str]
    ):
        self.host = host
        self.job = job  # the stored job with the servers' tools added
        self.listings = listings  # what each server offers now (masked)
        self.changes = changes  # what differs from the journaled listings; empty when nothing

    def records(self) -> list[dict[str, Any]]:
        return [self.host.record(name, tools) for name, tools in self.listings.items()]


def restart(view: SessionView, workspace: Path, environ: Mapping[str, str], mask: Any) -> Restarted | None:
    """Start the job's servers again (McpUnavailable when one cannot) and compare listings."""
    if not view.job.mcp:
        return None
    from handshake_cli.engine.launch import start_mcp_servers

    journaled = journaled_listings(view)
    host, listings, job = start_mcp_servers(view.job, workspace, environ, mask, check=False)
    assert host is not None
    changes: list[str] = []
    for server in view.job.mcp:
        before = journaled.get(server.name)
        if before is None:
            continue  # nothing journaled (killed before its listing was): what it offers now is
        now = mcp_tools.kept_tools(server, listings[server.name])
        changes.extend(f"{server.name}: {change}" for change in mcp_tools.compare(before, now))
    return Restarted(host, job, listings, changes)
