"""A small MCP server for handshake's tests (tests/test_mcp.py), over stdio; with `--http`,
over the streamable HTTP transport on a free loopback port, which it prints (`PORT\n` on
stdout) once it listens.

- `append` (not idempotent): appends a line, with the idempotency key handshake sent in the
  request's `_meta`, to ledger.txt in its working directory;
- `lookup` (read-only): the ledger, so a probe can look for a call's key;
- `hang`: never answers; `crash`: the server dies mid-call; `fail`: an `isError` result;
  `refuse`: a JSON-RPC error answer;
- TOY_VARIANT=changed (an environment variable the job passes through): `append` takes
  another argument and `lookup` is gone, as after an upgrade;
- TOY_CRASH_AFTER_APPEND=1: the first `append` dies after its effect (saying so on stderr);
- `append_when_released` (not idempotent): writes `held.PID` (its server's pid), waits for
  a file `release` to appear, then appends like `append`: a call still in progress when
  handshake is killed, which its orphaned server would finish. `lookup` notes in
  lookups.txt which of the servers that wrote `held.PID` are still running when it is asked.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import ToolAnnotations

CHANGED = os.environ.get("TOY_VARIANT") == "changed"
LEDGER = Path("ledger.txt")
server = MCPServer("toy")


def _key(ctx: Context) -> str:
    meta = ctx.request_context.meta or {}
    return str(dict(meta).get("handshake/idempotency_key", "-"))


if CHANGED:

    @server.tool(name="append", annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False))
    def append_v2(line: str, priority: int, ctx: Context) -> str:
        with LEDGER.open("a") as out:
            out.write(f"{line} {_key(ctx)} {priority}\n")
        return f"appended {line}"

else:

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False))
    def append(line: str, ctx: Context) -> str:
        with LEDGER.open("a") as out:
            out.write(f"{line} {_key(ctx)}\n")
            out.flush()
            os.fsync(out.fileno())
        if os.environ.get("TOY_CRASH_AFTER_APPEND") and not Path("crashed-once").exists():
            Path("crashed-once").touch()
            print("toy: crashing after the append", file=sys.stderr, flush=True)
            os._exit(3)  # the effect happened; the answer never comes
        return f"appended {line}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(line: str = "") -> str:
        held = sorted(int(path.suffix[1:]) for path in Path().glob("held.*"))
        if held:
            with open("lookups.txt", "a") as out:
                out.write(f"running: {[pid for pid in held if _running(pid)]}\n")
        return LEDGER.read_text() if LEDGER.exists() else ""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"  # a zombie has exited


@server.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False))
def append_when_released(line: str, ctx: Context) -> str:
    Path(f"held.{os.getpid()}").touch()
    while not Path("release").exists():
        time.sleep(0.01)
    with LEDGER.open("a") as out:
        out.write(f"{line} {_key(ctx)}\n")
    return f"appended {line}"


@server.tool()
def hang(seconds: float = 3600) -> str:
    if Path("hung-once").exists():
        return "answered"
    Path("hung-once").touch()
    time.sleep(seconds)
    return "woke up"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def crash() -> str:
    os._exit(7)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def fail() -> str:
    raise ValueError("the toy failed on purpose")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def refuse() -> str:
    raise MCPError(code=-32602, message="refused on purpose")


def serve_http() -> None:
    """Bind and listen before saying the port, so a client that read it never finds nothing
    there; uvicorn then serves the SDK's streamable HTTP app on that socket."""
    import socket

    import anyio
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning")
    print(sock.getsockname()[1], flush=True)
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    if sys.argv[1:] == ["--http"]:
        serve_http()
    else:
        server.run()
