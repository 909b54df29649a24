"""MCP tool servers, run for a session: the one module that imports the MCP SDK.

The SDK is asynchronous (anyio); the runner is not. An `McpHost` owns one event loop on a
background thread and, on it, one task per server that holds the server's transport and
`ClientSession` open from start to stop (anyio's scopes must be left by the task that
entered them). The runner's thread hands it coroutines and waits for their answers.

- `start()` starts every server (a program over stdio, with the workspace as its current
  directory and a small environment: the SDK's few safe variables plus those the job names;
  or a streamable HTTP endpoint), initializes it and lists its tools;
- `call()` sends one tools/call, the idempotency key, session id and call id in its
  `_meta`, and turns the answer into the `ToolOutcome` the model sees: text, structured
  content, `isError`. A JSON-RPC error answer is a tool error. A server that dies, a
  connection that closes, or no answer within the tool's timeout raise `ToolInDoubt`: the
  call may have happened, and recovery's usual rules decide;
- `probe()` asks another tool of the same server about an in-doubt call;
- `close()` stops every server (stdin closed, then the SDK terminates its process tree).

Each stdio server's stderr goes to a temporary file, which the runner keeps as an artifact.
The SDK starts a stdio server in a session (process group) of its own, so a SIGKILL of
handshake leaves it running, finishing the call in progress: `process()` says what
identifies it (pid, process group, start time), which the session journals (`mcp.process`)
so that recovery can stop it before it probes or calls anything (recovery/mcp.py).
Nothing here raises for what a server says: only `ToolInDoubt` (for the loop) and
`McpUnavailable` (a server that cannot be started or listed) leave it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any, cast

import mcp.client.stdio as sdk_stdio
import mcp_types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from handshake_cli.engine.jobs import McpServerSpec, ToolSpec
from handshake_cli.engine.tools import mcp_tools
from handshake_cli.engine.tools.gate import ToolContext, ToolInDoubt, ToolOutcome, capped_text
from handshake_cli.engine.tools.process import BASE_ENV, identity
from handshake_cli.errors import EnvironmentFailure

IN_DOUBT_CODES = (mcp_types.CONNECTION_CLOSED, mcp_types.REQUEST_TIMEOUT)
GRACE_SECONDS = 5.0  # past a call's own timeout, before the host stops waiting for the SDK
STOP_SECONDS = 10.0
STDERR_TAIL_CHARS = 2000


# The pids of the processes the SDK spawns in the current task (one server's task).
_SPAWNED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "handshake_mcp_spawned", default=None
)


def _watch_spawns() -> None:
    """Wrap the SDK's spawn so each server's task learns its process's pid: `stdio_client`
    keeps the process to itself. The SDK is pinned below 3; should the function move, the
    servers run as before and nothing identifies them (recovery then has nothing to stop)."""
    spawn = getattr(sdk_stdio, "_create_platform_compatible_process", None)
    if spawn is None or getattr(spawn, "handshake_watched", False):
        return

    async def watched(*args: Any, **kwargs: Any) -> Any:
        process = await spawn(*args, **kwargs)
        found = _SPAWNED.get()
        if found is not None:
            found.append(int(process.pid))
        return process

    watched.handshake_watched = True  # type: ignore[attr-defined]
    sdk_stdio._create_platform_compatible_process = watched


_watch_spawns()


class McpUnavailable(EnvironmentFailure):
    """An MCP server the job declares could not be started, initialized or listed."""

    code = "mcp_unavailable"


class _Server:
    """One server: its task on the host's loop, its session, its stderr."""

    def __init__(self, spec: McpServerSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.session: ClientSession | None = None
        self.ready: concurrent.futures.Future[list[dict[str, Any]]] = concurrent.futures.Future()
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.stop_event: asyncio.Event | None = None
        self.stderr: IO[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.process: dict[str, Any] | None = None  # a stdio server's identity, once started

    @property
    def transport(self) -> str:
        return "stdio" if self.spec.command else "http"

    async def run(self, workspace: Path, environ: Mapping[str, str]) -> None:
        self.stop_event = asyncio.Event()
        try:
            async with AsyncExitStack() as stack:
                if self.spec.command:
                    self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept until the host goes)
                    env = {name: environ[name] for name in (*BASE_ENV, *self.spec.env) if name in environ}
                    params = StdioServerParameters(
                        command=self.spec.command[0], args=list(self.spec.command[1:]), env=env, cwd=workspace
                    )
                    errlog: Any = os.fdopen(os.dup(self.stderr.fileno()), "w")
                    stack.callback(errlog.close)
                    spawned: list[int] = []
                    _SPAWNED.set(spawned)  # this task's own context: no other server sees it
                    streams = await stack.enter_async_context(stdio_client(params, errlog=errlog))
                    self.process = identity(spawned[0]) if spawned else None
                else:
                    assert self.spec.url is not None
                    streams = await stack.enter_async_context(streamable_http_client(self.spec.url))
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                init = await session.initialize()
                server_info = getattr(init, "server_info", None)
                if server_info is not None:
                    self.info = {"name": server_info.name, "version": server_info.version}
                tools: list[dict[str, Any]] = []
                cursor: str | None = None
                while True:
                    params_page = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await session.list_tools(params=params_page)
                    tools.extend(
                        mcp_tools.listing_tool(tool.model_dump(mode="json", by_alias=True, exclude_none=True))
                        for tool in page.tools
                    )
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.session = session
                self.ready.set_result(tools)
                await self.stop_event.wait()
        except BaseException as exc:  # whatever the SDK or the server did: report, never escape the loop
            if not self.ready.done():
                self.ready.set_exception(exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
        finally:
            self.session = None
            if not self.stopped.done():
                self.stopped.set_result(None)

    def stderr_bytes(self) -> bytes:
        if self.stderr is None:
            return b""
        self.stderr.seek(0)
        return self.stderr.read()


class McpHost:
    """The MCP servers of one session, on one background event loop."""

    def __init__(
        self, servers: tuple[McpServerSpec, ...], *, workspace: Path, environ: Mapping[str, str]
    ) -> None:
        self.workspace = workspace
        self.environ = dict(environ)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="handshake-mcp", daemon=True)
        self.thread.start()
        self.servers = {spec.name: _Server(spec, self.loop) for spec in servers}
        self.closed = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> dict[str, list[dict[str, Any]]]:
        """Start every server and list its tools; McpUnavailable when one cannot."""
        listings: dict[str, list[dict[str, Any]]] = {}
        for name, server in self.servers.items():
            asyncio.run_coroutine_threadsafe(server.run(self.workspace, self.environ), self.loop)
            try:
                listings[name] = server.ready.result(timeout=server.spec.start_timeout_seconds)
            except concurrent.futures.TimeoutError:
                self.close()
                raise McpUnavailable(
                    f"the MCP server {name!r} did not start and list its tools within "
                    f"{server.spec.start_timeout_seconds:g} s{self._stderr_tail(server)}"
                ) from None
            except Exception as exc:
                self.close()
                said = self._stderr_tail(server)
                raise McpUnavailable(
                    f"the MCP server {name!r} could not be started: {_describe(exc)}{said}"
                ) from None
        return listings

    def record(self, name: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The `mcp.tools` record's data for a server's listing."""
        server = self.servers[name]
        where = {"command": list(server.spec.command)} if server.spec.command else {"url": server.spec.url}
        return {
            "server": name,
            "transport": server.transport,
            **where,
            "server_info": server.info or None,
            "tools": mcp_tools.kept_tools(server.spec, tools),
        }

    def process(self, name: str) -> dict[str, Any] | None:
        """The `mcp.process` record's data for a started stdio server: what identifies its
        process (engine/tools/process.py `identity`); None for an HTTP server, or where the
        process cannot be identified."""
        process = self.servers[name].process
        return {"server": name, **process} if process else None

    def stderr(self, name: str) -> bytes:
        return self.servers[name].stderr_bytes()

    def close(self) -> None:
        """Stop every server and the loop. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for server in self.servers.values():
            self._stop(server)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=STOP_SECONDS)

    def _stop(self, server: _Server) -> None:
        event = server.stop_event
        if event is not None and not server.stopped.done():
            self.loop.call_soon_threadsafe(event.set)
            try:
                server.stopped.result(timeout=STOP_SECONDS)
            except concurrent.futures.TimeoutError:
                pass

    def _stderr_tail(self, server: _Server) -> str:
        said = server.stderr_bytes().decode("utf-8", "replace").strip()
        return f"; its stderr ends: {said[-STDERR_TAIL_CHARS:]}" if said else ""

    # -- calls ---------------------------------------------------------------------------

    def call(self, spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        """One tools/call. Raises ToolInDoubt when its outcome cannot be known."""
        raw = self._call(spec.mcp_server or "", spec.name, args, ctx, spec.timeout_seconds)
        if isinstance(raw, ToolOutcome):
            return raw
        return _outcome(spec, raw, ctx)

    def probe(self, spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> tuple[str, str, Any]:
        """Ask the spec's probe tool, with the original arguments, whether the call happened."""
        tool = spec.probe_tool or ""
        try:
            raw = self._call(spec.mcp_server or "", tool, args, ctx, spec.timeout_seconds)
        except ToolInDoubt as exc:
            return "unknown", f"probe tool {tool} gave no answer: {exc.reason}", None
        if isinstance(raw, ToolOutcome):
            message = raw.error["message"] if raw.error else "no answer"
            return "unknown", f"probe tool {tool} failed: {message}", None
        verdict, detail = mcp_tools.probe_verdict(raw, args, ctx.idempotency_key, spec.probe_match or "")
        return verdict, f"probe tool {tool}: {detail}", None

    def _call(
        self, server_name: str, tool: str, args: dict[str, Any], ctx: ToolContext, timeout: float
    ) -> dict[str, Any] | ToolOutcome:
        server = self.servers.get(server_name)
        session = server.session if server is not None else None
        if server is None or session is None:
            raise ToolInDoubt(f"the MCP server {server_name!r} is not running")
        meta = {
            mcp_tools.META_IDEMPOTENCY_KEY: ctx.idempotency_key,
            mcp_tools.META_SESSION_ID: ctx.session_id,
            mcp_tools.META_TOOL_CALL_ID: ctx.tool_call_id,
        }
        try:
            json.dumps(args, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return _error("invalid_arguments", "invalid_arguments", f"arguments are not JSON: {exc}")
        future = asyncio.run_coroutine_threadsafe(
            session.call_tool(tool, args, read_timeout_seconds=timeout, meta=cast(Any, meta)),
            self.loop,
        )
        try:
            result = future.result(timeout=timeout + GRACE_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ToolInDoubt(f"the MCP server {server_name!r} did not answer within {timeout:g} s") from None
        except MCPError as exc:
            if exc.code in IN_DOUBT_CODES:
                why = (
                    "did not answer in time"
                    if exc.code == mcp_types.REQUEST_TIMEOUT
                    else "closed the connection"
                )
                raise ToolInDoubt(f"the MCP server {server_name!r} {why} during the call") from None
            return _error(
                "mcp_error",
                "tool_failed",
                f"the MCP server {server_name!r} answered with an error: {exc.error.message}",
                mcp_code=exc.code,
                **_stderr_details(server, ctx),
            )
        except Exception as exc:  # an answer the SDK could not read: the server did answer
            if server.stopped.done():
                raise ToolInDoubt(f"the MCP server {server_name!r} stopped during the call") from None
            return _error(
                "mcp_protocol_error",
                "tool_failed",
                f"the MCP server {server_name!r} gave an answer that is not valid MCP: {_describe(exc)}",
                **_stderr_details(server, ctx),
            )
        dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error(code: str, kind: str, message: str, **details: Any) -> ToolOutcome:
    return ToolOutcome(error={"code": code, "kind": kind, "retryable": False, "message": message, **details})


def _stderr_details(server: _Server, ctx: ToolContext) -> dict[str, Any]:
    data = server.stderr_bytes()
    return {"stderr_artifact_id": ctx.store_large_output(data)} if data else {}


def _outcome(spec: ToolSpec, result: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    """A tools/call answer as the model sees it: its text (capped, the rest an artifact), its
    structured content, and other content items as the server sent them."""
    texts: list[str] = []
    others: list[Any] = []
    for item in result.get("content") or []:
        if isinstance(item, dict) and item.get("type") == "text":
            texts.append(str(item.get("text", "")))
        else:
            others.append(item)
    body: dict[str, Any] = capped_text("text", "\n".join(texts), spec.max_output_bytes, ctx)
    if "structuredContent" in result:
        body["structured_content"] = result["structuredContent"]
    if others:
        body["content"] = others
    if not result.get("isError"):
        return ToolOutcome(output=body)
    message = body["text"][:500] if body["text"] else "the tool reported an error"
    return _error("tool_error", "tool_failed", f"{spec.name}: {message}", **body)
