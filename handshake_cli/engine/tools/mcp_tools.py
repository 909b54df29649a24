"""MCP tools as the gate sees them: a server's listing turned into `ToolSpec`s, listings
compared, a probe tool's answer read. Pure functions of plain JSON; no MCP SDK here, so the
planner, `inspect` and the job reader use them without loading it (`mcp` runs the servers).

The gate from a tool's annotations (docs/JOBS.md, [[mcp]]): `readOnlyHint` → side_effect
`read` (and `idempotent`: reading twice changes nothing); otherwise `write`, and
`idempotentHint` → `idempotent`, else `non_idempotent`. A tool without annotations is the
worst case, `write` + `non_idempotent`. The job's [mcp.override.NAME] always wins. Each
spec's `origin` says where each declaration came from: `job`, `annotation` or `default`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from handshake_cli.engine.jobs import JobError, McpServerSpec, ToolSpec

RECORD_TYPE = "mcp.tools"  # the listing journaled when a server starts (docs/FORMAT.md)
FAILED_RECORD_TYPE = "mcp.server_failed"  # a server that died or hung mid-call
STOPPED_RECORD_TYPE = "mcp.stopped"  # a server stopped with the session: its stderr artifact
META_IDEMPOTENCY_KEY = "handshake/idempotency_key"
META_SESSION_ID = "handshake/session_id"
META_TOOL_CALL_ID = "handshake/tool_call_id"
PROBE_MATCH_KEY = "idempotency_key"  # probe_match's default: the call's key must appear


def listing_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """One tool of a tools/list answer as the journal keeps it: name, description, input
    schema and annotations (null when the server gives none)."""
    out: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description") is not None:
        out["description"] = tool.get("description")
    out["input_schema"] = tool.get("inputSchema") or {"type": "object"}
    out["annotations"] = tool.get("annotations")
    return out


def kept_tools(server: McpServerSpec, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools of a listing that the session depends on: those the model may use and the
    probe tools of those; the rest of what the server offers is not journaled or offered."""
    allowed = set(server.tools) if server.tools is not None else {str(t["name"]) for t in tools}
    probes = {o.probe_tool for name, o in server.override.items() if o.probe_tool and name in allowed}
    return [tool for tool in tools if tool["name"] in allowed or tool["name"] in probes]


def check_listing(server: McpServerSpec, index: int, tools: list[dict[str, Any]], source: str) -> None:
    """Refuse (JobError, exit 2) a job whose [[mcp]] names what the server does not offer."""
    offered = {str(tool["name"]) for tool in tools}
    where = f"mcp[{index}]"

    def fail(key: str, problem: str) -> None:
        raise JobError(
            f"{source}: {where}.{key} {problem}", details={"file": source, "key": f"{where}.{key}"}
        )

    shown = ", ".join(sorted(offered)) or "none"
    for name in server.tools or ():
        if name not in offered:
            fail(
                "tools", f"names {name!r}, which the server {server.name!r} does not offer; it offers {shown}"
            )
    for name, override in server.override.items():
        if name not in offered:
            fail(f"override.{name}", f"is not a tool the server {server.name!r} offers; it offers {shown}")
        if override.probe_tool is not None and override.probe_tool not in offered:
            fail(
                f"override.{name}.probe_tool",
                f"names {override.probe_tool!r}, which the server {server.name!r} does not offer",
            )


def tool_specs(server: McpServerSpec, tools: Iterable[Mapping[str, Any]]) -> tuple[ToolSpec, ...]:
    """The specs of the tools the model may use, from the server's (journaled) listing."""
    out = []
    allowed = server.tools
    for tool in tools:
        name = str(tool["name"])
        if allowed is not None and name not in allowed:
            continue
        out.append(_spec(server, tool))
    return tuple(out)


def _spec(server: McpServerSpec, tool: Mapping[str, Any]) -> ToolSpec:
    name = str(tool["name"])
    override = server.override.get(name)
    annotations = tool.get("annotations")
    hints = annotations if isinstance(annotations, dict) else {}
    read_only = hints.get("readOnlyHint")
    idempotent = hints.get("idempotentHint")
    origin: dict[str, str] = {}
    if override is not None and override.side_effect is not None:
        side_effect, origin["side_effect"] = override.side_effect, "job"
    elif isinstance(read_only, bool):
        side_effect, origin["side_effect"] = ("read" if read_only else "write"), "annotation"
    else:
        side_effect, origin["side_effect"] = "write", "default"
    if override is not None and override.idempotency is not None:
        idempotency, origin["idempotency"] = override.idempotency, "job"
    elif read_only is True:
        idempotency, origin["idempotency"] = "idempotent", "annotation"
    elif isinstance(idempotent, bool):
        idempotency, origin["idempotency"] = ("idempotent" if idempotent else "non_idempotent"), "annotation"
    else:
        idempotency, origin["idempotency"] = "non_idempotent", "default"
    origin["probe"] = "job" if override is not None and (override.probe or override.probe_tool) else "none"
    schema = tool.get("input_schema")
    return ToolSpec(
        name=name,
        side_effect=side_effect,
        idempotency=idempotency,
        probe=override.probe if override else None,
        description=tool.get("description") if isinstance(tool.get("description"), str) else None,
        parameters=dict(schema) if isinstance(schema, dict) else None,
        timeout_seconds=(
            override.timeout_seconds
            if override is not None and override.timeout_seconds is not None
            else server.timeout_seconds
        ),
        max_output_bytes=(
            override.max_output_bytes
            if override is not None and override.max_output_bytes is not None
            else server.max_output_bytes
        ),
        env=server.env,
        mcp_server=server.name,
        probe_tool=override.probe_tool if override else None,
        probe_match=(override.probe_match or PROBE_MATCH_KEY) if override and override.probe_tool else None,
        origin=origin,
    )


def all_tool_specs(
    job_tools: Iterable[ToolSpec],
    servers: Iterable[McpServerSpec],
    listings: Mapping[str, list[dict[str, Any]]],
) -> tuple[ToolSpec, ...]:
    """Every MCP tool the model may use; a name that two tools would share is refused."""
    seen = {tool.name: "[[tools]]" for tool in job_tools}
    out: list[ToolSpec] = []
    for server in servers:
        for spec in tool_specs(server, listings.get(server.name, [])):
            if spec.name in seen:
                raise JobError(
                    f"the MCP server {server.name!r} offers a tool {spec.name!r}, and {seen[spec.name]} "
                    "has one of that name; list the tools to use in the server's `tools`"
                )
            seen[spec.name] = f"the MCP server {server.name!r}"
            out.append(spec)
    return tuple(out)


def compare(journaled: list[dict[str, Any]], offered: list[dict[str, Any]]) -> list[str]:
    """What changed between the listing a session journaled and the one a server offers now:
    a tool gone, or its input schema or annotations different. Empty when nothing did."""
    now = {str(tool.get("name")): tool for tool in offered}
    changes = []
    for tool in journaled:
        name = str(tool.get("name"))
        new = now.get(name)
        if new is None:
            changes.append(f"{name} is gone")
            continue
        for key, label in (("input_schema", "input schema"), ("annotations", "annotations")):
            if tool.get(key) != new.get(key):
                changes.append(f"{name}: its {label} changed")
    return changes


def probe_verdict(
    result: Mapping[str, Any], args: Mapping[str, Any], key: str, match: str
) -> tuple[str, str]:
    """What a probe tool's answer says about the call it probes: (verdict, detail).

    - an error (`isError`) → unknown;
    - `structuredContent` with a boolean `happened` → that;
    - otherwise the text: `happened` when it holds the value `probe_match` names (the
      call's idempotency key by default, or one of the call's arguments), else
      `not_happened`. A match value that is empty or missing → unknown.
    """
    if result.get("isError"):
        return "unknown", "the probe tool reported an error: " + _text(result)[:500]
    structured = result.get("structuredContent")
    if isinstance(structured, dict) and isinstance(structured.get("happened"), bool):
        verdict = "happened" if structured["happened"] else "not_happened"
        return verdict, f"the probe tool answered happened={str(structured['happened']).lower()}"
    needle = key if match == PROBE_MATCH_KEY else args.get(match)
    if not isinstance(needle, str) or not needle:
        return "unknown", f"the call has no {match!r} to look for"
    if needle in _text(result):
        return "happened", f"the probe tool's answer holds the call's {match}"
    return "not_happened", f"the probe tool's answer does not hold the call's {match}"


def _text(result: Mapping[str, Any]) -> str:
    parts = [
        str(item.get("text", ""))
        for item in result.get("content") or []
        if isinstance(item, dict) and item.get("type") == "text"
    ]
    return "\n".join(parts)
