"""MCP tool servers in recovery: the listings a session journaled, the tool specs they give,
and the servers started again and compared with what was journaled.

A session's MCP tools are not in its stored job: they are what the servers offered when the
session started (`mcp.tools` records), gated by the job's [mcp.override.NAME]. The planner
reads them here (a pure function of the session's files); the executor starts the servers
again and blocks with `mcp_tools_changed` when a tool the session relies on is gone or its
input schema or annotations differ, rather than call it blindly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handshake_cli.engine.jobs import ToolSpec
from handshake_cli.engine.tools import mcp_tools
from handshake_cli.recovery.view import SessionView
from handshake_cli.storage.journal.scan import scan

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import Job
    from handshake_cli.engine.tools.mcp import McpHost


def journaled_listings(view: SessionView) -> dict[str, list[dict[str, Any]]]:
    """Each server's last journaled listing (none when the job declares no MCP server)."""
    if not view.job.mcp:
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    for record in scan(view.session.journal, view.session.session_id).records:
        if record.type == mcp_tools.RECORD_TYPE:
            tools = record.data.get("tools")
            found[str(record.data.get("server"))] = [t for t in tools or [] if isinstance(t, dict)]
    return found


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
