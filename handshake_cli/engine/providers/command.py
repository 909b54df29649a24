"""The command provider: an external program is the model.

Each model call starts the program once. It reads the request as one JSON document on
stdin (`turn`, `model`, `messages`, `tools`) and answers on stdout with JSON lines:

    {"text": "..."}                               a piece of the answer, streamed as it comes
    {"tool_call": {"tool": "...", "args": {...}}}  a tool call, in the order they are made
    {"done": true}                                 the answer is complete

So any local model runner or script can be wrapped. Anything else on stdout, a program that
stops without `done`, or one that exits non-zero is a `ProviderError`: the turn ends with an
error that quotes the line (or the end of stderr), and the session FAILS.

The program runs in the workspace with handshake's environment (it stands in for an API
client, which needs its own keys and paths); its stdin and stderr are unlinked temporary
files, so neither side can block on a full pipe. Like a tool, it ignores SIGINT and SIGTERM:
a Ctrl-C stops the session at the next boundary, and the program is killed when the call is
abandoned (it has no side effects by contract).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Generator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from handshake_cli.engine.providers import ModelRequest, ProviderError, Retry, TextChunk, ToolCallRequest
from handshake_cli.engine.tools.process import ignore_stop_signals

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import ModelSpec

QUOTE_LIMIT = 200
STDERR_TAIL = 500


class CommandProvider:
    def __init__(self, spec: ModelSpec, environ: Mapping[str, str], workspace: Path) -> None:
        self.spec = spec
        self.deterministic = spec.deterministic
        self.argv = [str(part) for part in spec.options["command"]]
        self.environ = dict(environ)
        self.workspace = workspace

    def __repr__(self) -> str:
        return f"CommandProvider(argv={self.argv!r})"

    def stream(self, request: ModelRequest) -> Generator[TextChunk | ToolCallRequest | Retry]:
        with ExitStack() as files:
            stdin, stderr = (files.enter_context(tempfile.TemporaryFile()) for _ in range(2))
            stdin.write(_request_json(self.spec, request))
            stdin.seek(0)
            try:
                proc = subprocess.Popen(
                    self.argv,
                    cwd=self.workspace,
                    env=self.environ,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    close_fds=True,
                    preexec_fn=ignore_stop_signals,
                )
            except (OSError, subprocess.SubprocessError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                raise ProviderError(
                    f"could not start the model program {self.argv[0]!r}: {reason}",
                    hint="check [model] command in the job: the program must exist and be executable",
                ) from None
            try:
                yield from self._answer(proc, stderr)
            finally:
                if proc.poll() is None:  # abandoned mid-call (a stop, an error): no effects to finish
                    proc.kill()
                proc.wait()
                if proc.stdout:
                    proc.stdout.close()

    def _answer(
        self, proc: subprocess.Popen[bytes], stderr: IO[bytes]
    ) -> Generator[TextChunk | ToolCallRequest]:
        assert proc.stdout is not None
        done = False
        for number, raw in enumerate(proc.stdout, 1):
            if not raw.strip():
                continue
            if done:
                raise self._bad(number, raw, 'comes after {"done": true}')
            try:
                line = json.loads(raw)
            except ValueError:
                raise self._bad(number, raw, "is not JSON") from None
            if not isinstance(line, dict) or len(line) != 1:
                raise self._bad(number, raw, "is not one of the three shapes")
            if isinstance(line.get("text"), str):
                yield TextChunk(line["text"])
            elif isinstance(line.get("tool_call"), dict):
                yield self._tool_call(number, raw, line["tool_call"])
            elif line.get("done") is True:
                done = True
            else:
                raise self._bad(number, raw, "is not one of the three shapes")
        status = proc.wait()
        if status != 0:
            how = f"exited with status {status}" if status > 0 else f"was killed by signal {-status}"
            raise ProviderError(f"the model program {how}{_stderr_tail(stderr)}")
        if not done:
            raise ProviderError(f'the model program ended without {{"done": true}}{_stderr_tail(stderr)}')

    def _tool_call(self, number: int, raw: bytes, call: dict[str, Any]) -> ToolCallRequest:
        tool, args = call.get("tool"), call.get("args", {})
        if set(call) - {"tool", "args"} or not (isinstance(tool, str) and tool and isinstance(args, dict)):
            raise self._bad(number, raw, 'is not {"tool_call": {"tool": NAME, "args": {...}}}')
        return ToolCallRequest(tool, args)

    def _bad(self, number: int, raw: bytes, problem: str) -> ProviderError:
        quoted = raw.decode("utf-8", "replace").strip()
        if len(quoted) > QUOTE_LIMIT:
            quoted = quoted[:QUOTE_LIMIT] + "…"
        return ProviderError(
            f"the model program's output line {number} {problem}: {quoted!r}",
            hint='each line must be {"text": STRING}, {"tool_call": {"tool": NAME, "args": OBJECT}} '
            'or {"done": true}; see docs/JOBS.md',
        )


def _request_json(spec: ModelSpec, request: ModelRequest) -> bytes:
    document = {
        "turn": request.turn,
        "model": spec.id,
        "messages": request.messages,
        "tools": [
            {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ],
    }
    try:
        return (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape everything rather than send bad UTF-8
        return (json.dumps(document) + "\n").encode("ascii")


def _stderr_tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    data = stderr.read()
    if not data.strip():
        return ""
    tail = data[-STDERR_TAIL:].decode("utf-8", "replace").strip()
    return f"; its stderr ends with: {tail}"
