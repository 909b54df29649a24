"""A real HTTP server on loopback that answers like an OpenAI-compatible chat-completions
endpoint, replaying the replies a test scripts, and remembering every request it got.

Streams are server-sent events in HTTP/1.1 chunked encoding, as OpenAI sends them; a reply
may pause between events, stop after some of them (the connection cut mid-stream), or be a
plain error status with a JSON body.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    events: list[Any] = field(default_factory=list)  # dicts, or the string "[DONE]"
    delay: float = 0.0  # seconds before each event
    cut_after: int | None = None  # drop the connection after this many events
    body: Any = None  # for an error status
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"


def sse(events: list[Any], **options: Any) -> Reply:
    return Reply(events=events, **options)


def error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "test"}}, headers=headers)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def text_events(pieces: list[str], *, done: bool = True) -> list[Any]:
    """An answer streamed in `pieces`, then the finish chunk and `[DONE]`."""
    events: list[Any] = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": piece}) for piece in pieces]
    if done:
        events += [_chunk({}, "stop"), "[DONE]"]
    return events


def tool_call_events(
    calls: list[tuple[str, dict[str, Any]]],
    *,
    text: list[str] | None = None,
    pieces: int = 3,
    interleave: bool = False,
) -> list[Any]:
    """Text (optional), then tool calls whose JSON arguments arrive in `pieces` fragments each:
    the first fragment of a call carries its index, id and name, the others only the index.
    With `interleave`, the fragments of the calls alternate."""
    events: list[Any] = [_chunk({"role": "assistant", "content": None})]
    events += [_chunk({"content": piece}) for piece in text or []]
    streams = []
    for index, (name, args) in enumerate(calls):
        raw = json.dumps(args)
        size = max(1, -(-len(raw) // pieces))
        fragments = [raw[i : i + size] for i in range(0, len(raw), size)]
        first = {"index": index, "id": f"call_srv_{index}", "type": "function"}
        deltas = [{**first, "function": {"name": name, "arguments": ""}}]
        deltas += [{"index": index, "function": {"arguments": fragment}} for fragment in fragments]
        streams.append(deltas)
    if interleave:
        order = [d for group in _zip_longest(streams) for d in group]
    else:
        order = [d for deltas in streams for d in deltas]
    events += [_chunk({"tool_calls": [delta]}) for delta in order]
    events += [_chunk({}, "tool_calls"), "[DONE]"]
    return events


def _zip_longest(streams: list[list[Any]]) -> list[list[Any]]:
    longest = max(len(s) for s in streams)
    return [[s[i] for s in streams if i < len(s)] for i in range(longest)]


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a test of a cut stream, or a keep-alive connection closed at
    the end) is expected here: not a traceback on the test run's output."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeOpenAI:
    """Start with `with FakeOpenAI() as server:`; `server.url` is the base URL (ending in /v1).

    `strict_content`: answer as llama-cpp-python's server does to a message whose `content`
    is not a string (its chat templates concatenate it): HTTP 500, whatever was scripted.
    """

    def __init__(self, *, strict_content: bool = False) -> None:
        self.strict_content = strict_content
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        handler = _handler(self)
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reply(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(request)
            if self.strict_content and _has_null_content(request["body"]):
                return error(500, 'can only concatenate str (not "NoneType") to str')
            if not self.replies:
                return error(500, "the test scripted no reply for this request")
            return self.replies.pop(0)


def _has_null_content(body: Any) -> bool:
    messages = body.get("messages") if isinstance(body, dict) else None
    return any(isinstance(m, dict) and not isinstance(m.get("content"), str) for m in messages or [])


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            reply = fake._next({"path": self.path, "headers": dict(self.headers.items()), "body": body})
            try:
                if reply.status != 200:
                    self._error(reply)
                else:
                    self._stream(reply)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away mid-stream

        def _error(self, reply: Reply) -> None:
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Reply) -> None:
            self.send_response(200)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for number, event in enumerate(reply.events):
                if reply.cut_after is not None and number >= reply.cut_after:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                data = event if isinstance(event, str) else json.dumps(event)
                payload = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
