"""The openai provider: any server that speaks OpenAI's streaming chat-completions API
(OpenAI, Ollama, vLLM, llama.cpp's server).

It owns the wire: the request body (the thread in OpenAI's message shape, the job's tools
with their descriptions and JSON-schema parameters), server-sent events, the assembly of
tool calls from their deltas (each piece also yielded as it arrives, for the journal), and
what each failure means (docs/DECISIONS.md, "Real models: what a failed model call does to
the session"):

- transient: a connection failure, HTTP 408, 425, 429, 502, 503 or 504 is retried with
  backoff (a `Retry-After` the server sends is honoured, up to a minute); after the last
  attempt it is a `StreamInterrupted`: the session stops recoverable and the call is made
  again;
- a server error (another 5xx, or an error event in the stream) is retried the same way,
  but when every attempt of the call got the same answer (status and message) it is a
  `ProviderError`: the server answers this request that way whatever the timing, and
  asking again on every recovery would loop forever;
- permanent at once: 401/403 and any other 4xx, or an error event whose code is such a
  status, is a `ProviderError` (the session ends FAILED), with a hint that names the
  variable holding the key, never the key;
- a stream cut short or a timeout is a `StreamInterrupted` at once.

httpx is imported here, and this module only when the provider runs.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from handshake_cli import __version__
from handshake_cli.engine.providers import (
    ModelEvent,
    ModelRequest,
    ProviderError,
    Retry,
    StreamInterrupted,
    TextChunk,
    ToolCallDelta,
    ToolCallRequest,
)
from handshake_cli.engine.providers.openai_options import TOOL_CHOICE_MODES

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import ModelSpec, ToolSpec

MAX_ATTEMPTS = 5
FIRST_DELAY = 0.5  # seconds; doubled after each failed attempt
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0  # the longest silence accepted from the server, unless the job says otherwise
ERROR_BODY_LIMIT = 2000
# Statuses that say nothing about the request: timeouts, rate limits, gateways, overload.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 502, 503, 504})
_SAME_ERROR_HINT = (
    "the server gave the same error to every attempt of this request, so asking again would "
    "get it again: the cause is in the request or the server, and the server's log says which "
    "(a message shape or chat template it cannot handle, a model that cannot use tools, a "
    "context too small)"
)
_LINE_END = re.compile(r"\r\n|\r|\n")


class OpenAIProvider:
    def __init__(self, spec: ModelSpec, key: str | None) -> None:
        self.spec = spec
        self.deterministic = spec.deterministic
        self._key = key
        options = spec.options
        self.url = str(options["base_url"]).rstrip("/") + "/chat/completions"
        read = float(options.get("timeout_seconds", READ_TIMEOUT))
        self.timeout = httpx.Timeout(read, connect=min(CONNECT_TIMEOUT, read))
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:  # never the key
        return f"OpenAIProvider(url={self.url!r}, model={self.spec.id!r})"

    # -- one model call -------------------------------------------------------------------

    def stream(self, request: ModelRequest) -> Generator[ModelEvent]:
        # ASCII escapes: a lone surrogate a server once streamed cannot break the next request.
        body = json.dumps(self.body(request), allow_nan=False).encode("ascii")
        answers: list[str | None] = []  # each failed attempt's server error, None if transient
        attempt = 0
        while True:
            attempt += 1
            stream = _Stream()
            try:
                with self._client().stream(
                    "POST", self.url, content=body, headers=self._headers()
                ) as response:
                    if response.status_code != 200:
                        failure = self._refusal(response)
                    else:
                        self._check_streaming(response)
                        try:
                            yield from stream.events(response)
                        except _ErrorEvent as event:
                            failure = self._error_event(event, stream)
                        else:
                            yield from stream.tool_calls()
                            return
            except httpx.TimeoutException as error:
                raise StreamInterrupted(self._timed_out(error, stream)) from None
            except httpx.TransportError as error:
                if stream.started:
                    raise StreamInterrupted(
                        f"the stream from {self.url} was cut short: {_describe(error)}"
                    ) from None
                failure = _Failure(f"could not reach {self.url}: {_describe(error)}")
            answers.append(failure.answer)
            if attempt >= MAX_ATTEMPTS:
                if answers[0] is not None and answers.count(answers[0]) == len(answers):
                    raise ProviderError(
                        f"{failure.reason}; the same error answered all {attempt} attempts",
                        hint=_SAME_ERROR_HINT,
                        fork_after_fix=True,
                    )
                raise StreamInterrupted(
                    f"{failure.reason}; gave up after {attempt} attempts (the server may be down or busy)"
                )
            delay = failure.retry_after
            if delay is None:
                delay = min(FIRST_DELAY * 2 ** (attempt - 1), MAX_DELAY)
            yield Retry(attempt, failure.reason, delay, discarded=stream.started)

    def _client(self) -> httpx.Client:
        """One client for the session's calls: its TLS context costs ~40 ms to build, and
        its connections are kept alive between turns."""
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return self._http

    def body(self, request: ModelRequest) -> dict[str, Any]:
        options = self.spec.options
        body: dict[str, Any] = {
            "model": self.spec.id,
            "messages": [_wire_message(message) for message in request.messages],
            "stream": True,
        }
        if request.tools:  # OpenAI refuses tool_choice and parallel_tool_calls without tools
            body["tools"] = [_wire_tool(tool) for tool in request.tools]
            choice = options.get("tool_choice")
            if choice in TOOL_CHOICE_MODES:
                body["tool_choice"] = choice
            elif choice is not None:
                body["tool_choice"] = {"type": "function", "function": {"name": choice}}
            if "parallel_tool_calls" in options:
                body["parallel_tool_calls"] = options["parallel_tool_calls"]
        for key in ("temperature", "seed", "max_tokens", "max_completion_tokens"):
            if key in options:
                body[key] = options[key]
        return body

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
            "User-Agent": f"handshake/{__version__}",
        }
        headers.update(self.spec.options.get("headers") or {})
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    # -- failures -------------------------------------------------------------------------

    def _refusal(self, response: httpx.Response) -> _Failure:
        """A non-200 answer: a failure to retry, or a ProviderError raised at once."""
        status = response.status_code
        message = _error_message(response)
        said = f"HTTP {status}" + (f": {message}" if message else "")
        if status in TRANSIENT_STATUSES:
            return _Failure(f"{self.url} answered {said}", _retry_after(response))
        if status >= 500:
            return _Failure(f"{self.url} answered {said}", _retry_after(response), answer=said)
        raise ProviderError(f"{self.url} refused the request ({said})", hint=self._hint(status))

    def _error_event(self, event: _ErrorEvent, stream: _Stream) -> _Failure:
        """An error the server reported in the stream: permanent when its code is a 4xx that
        is not transient, else a server error (retried; permanent if it never changes)."""
        where = "mid-stream" if stream.started else "before the answer began"
        said = f"the server reported an error {where}: {event.message}"
        if event.status is not None and 400 <= event.status < 500 and event.status not in TRANSIENT_STATUSES:
            raise ProviderError(said, hint=self._hint(event.status))
        if event.status in TRANSIENT_STATUSES:
            return _Failure(said)
        return _Failure(said, answer=f"error event: {event.message}")

    def _check_streaming(self, response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "")
        if kind.split(";")[0].strip().lower() != "text/event-stream":
            raise ProviderError(
                f"{self.url} answered with {kind or 'no content type'}, not a stream of events",
                hint="the server must support streaming chat completions (stream: true); "
                "check [model] base_url",
            )

    def _hint(self, status: int) -> str | None:
        variable = self.spec.options.get("api_key_env")
        if status in (401, 403):
            if variable:
                return (
                    f"the server did not accept the API key in the environment variable {variable}; "
                    f"check that {variable} holds a valid key for {self.spec.options['base_url']}"
                )
            return (
                'the job sends no API key; add api_key_env = "NAME" under [model] and put the key '
                "in that environment variable"
            )
        if status == 404:
            return (
                f"check [model] base_url ({self.spec.options['base_url']}, usually ending in /v1) "
                f"and model ({self.spec.id!r})"
            )
        return "the request was refused as invalid; check the job's [model] options and tool parameters"

    def _timed_out(self, error: httpx.TimeoutException, stream: _Stream) -> str:
        where = "mid-stream" if stream.started else "before the answer began"
        if isinstance(error, httpx.ConnectTimeout):
            return f"could not connect to {self.url} within {self.timeout.connect:g} s"
        return f"{self.url} went silent for {self.timeout.read:g} s {where} ({type(error).__name__})"


@dataclass
class _Failure:
    reason: str
    retry_after: float | None = None
    # A server error: what the server said (status and message), compared between attempts.
    # None for a transient failure, which says nothing about the request.
    answer: str | None = None


class _ErrorEvent(Exception):
    """An event carrying `error` instead of choices: llama.cpp's server, vLLM and OpenAI send
    one when they fail after the 200 (`{"error": {"code": 500, "message": ...}}`)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class _Call:
    id: str | None = None
    name: str = ""
    arguments: str = ""


class _Stream:
    """One response's server-sent events, turned into text chunks and assembled tool calls."""

    def __init__(self) -> None:
        self.started = False  # text or a tool call has arrived: a failure now is mid-stream
        self.finished = False  # a choice said why it stopped
        self.done = False  # `data: [DONE]`
        self.calls: dict[int, _Call] = {}
        self._order: list[int] = []

    def events(self, response: httpx.Response) -> Iterator[TextChunk | ToolCallDelta]:
        data: list[str] = []
        for line in _lines(response.iter_text()):
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                yield from self._event("\n".join(data))
                data = []
                if self.done:
                    return
            # Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we use.
        if data:
            yield from self._event("\n".join(data))
        if not (self.done or self.finished):
            raise StreamInterrupted(
                f"the stream from {response.request.url} ended before the answer was complete"
            )

    def _event(self, data: str) -> Iterator[TextChunk | ToolCallDelta]:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise ProviderError(f"the server sent an event that is not JSON: {data[:200]!r}") from None
        if not isinstance(event, dict):
            raise ProviderError(f"the server sent an event that is not a JSON object: {data[:200]!r}")
        if event.get("error"):
            raise _ErrorEvent(_message_of(event), _status_of(event["error"]))
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one answer is asked for; other choices are not ours
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.started = True
                yield TextChunk(content)
            for part in delta.get("tool_calls") or []:
                if isinstance(part, dict):
                    self.started = True
                    yield self._tool_delta(part)
            if choice.get("finish_reason"):
                self.finished = True

    def _tool_delta(self, part: dict[str, Any]) -> ToolCallDelta:
        """Fold one fragment into its call: the index says which call (the id, when a server
        leaves the index out); the name arrives once, the arguments in pieces. Returns the
        fragment as the journal keeps it."""
        index = part.get("index")
        call_id = part.get("id")
        if not isinstance(index, int):
            same = [i for i, known in self.calls.items() if call_id and known.id == call_id]
            if same:
                index = same[0]
            elif call_id or not self._order:
                index = max(self._order, default=-1) + 1
            else:
                index = self._order[-1]
        call = self.calls.get(index)
        if call is None:
            call = self.calls[index] = _Call()
            self._order.append(index)
        if call_id and not call.id:
            call.id = str(call_id)
        function = part.get("function") or {}
        name = function.get("name")
        named = None
        if isinstance(name, str) and name and not call.name:
            call.name = named = name
        arguments = function.get("arguments")
        piece = ""
        if isinstance(arguments, str):
            piece = arguments
        elif isinstance(arguments, dict):  # some servers send the object itself
            piece = json.dumps(arguments)
        call.arguments += piece
        return ToolCallDelta(index, named, piece)

    def tool_calls(self) -> Iterator[ToolCallRequest]:
        for index in sorted(self._order):
            call = self.calls[index]
            raw = call.arguments.strip() or "{}"
            try:
                args = json.loads(raw)
            except ValueError:
                args = None
            if isinstance(args, dict):
                yield ToolCallRequest(call.name, args)
            else:
                yield ToolCallRequest(call.name, {}, invalid_args=call.arguments)


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    """The stream's lines, split only where server-sent events end a line: CRLF, CR or LF.
    httpx's `iter_lines` also splits at U+2028, U+2029 and U+0085, which JSON leaves
    unescaped inside a string: a model that wrote one failed the session."""
    partial: list[str] = []  # the line being read, in pieces (a long one spans many chunks)
    after_cr = False  # the last chunk ended in CR: an LF that starts this one completes a CRLF
    for chunk in chunks:
        if after_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith("\r")
        pieces = _LINE_END.split(chunk) if "\r" in chunk else chunk.split("\n")
        if len(pieces) > 1:
            yield "".join([*partial, pieces[0]])
            yield from pieces[1:-1]
            partial = []
        partial.append(pieces[-1])
    if any(partial):
        yield "".join(partial)


# -- the wire format --------------------------------------------------------------------------


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A thread message in OpenAI's shape. Tool call ids are ours (`call-T-I`), so they are
    the same on every recovery."""
    role = message.get("role")
    if role == "tool":
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return {"role": "tool", "tool_call_id": message.get("tool_call_id"), "content": text}
    if role == "assistant" and message.get("tool_calls"):
        return {
            "role": "assistant",
            # A string, never null: llama-cpp-python's server answers 500 to a null (its chat
            # templates concatenate it), and OpenAI, llama.cpp, Ollama and vLLM accept "".
            "content": message.get("content") or "",
            "tool_calls": [
                {
                    "id": call["tool_call_id"],
                    "type": "function",
                    "function": {
                        "name": call["tool"],
                        "arguments": call.get("invalid_args")
                        or json.dumps(call.get("args") or {}, ensure_ascii=False),
                    },
                }
                for call in message["tool_calls"]
            ],
        }
    return {"role": role, "content": message.get("content") or ""}


def _wire_tool(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _error_message(response: httpx.Response) -> str:
    try:
        raw = response.read()[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""
    try:
        return _message_of(json.loads(raw))
    except ValueError:
        return " ".join(raw.split())[:500]


def _message_of(body: Any) -> str:
    """The human part of an OpenAI-style error body: `{"error": {"message": ...}}` or similar."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or json.dumps(error)
    return " ".join(str(error).split())[:500]


def _status_of(error: Any) -> int | None:
    """The HTTP status an error event stands for: its `code` (llama.cpp, vLLM), or 400 for
    OpenAI's `invalid_request_error` type; None when it says neither."""
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code
    if isinstance(code, str) and code.isdigit() and 100 <= int(code) <= 599:
        return int(code)
    if error.get("type") == "invalid_request_error":
        return 400
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _describe(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:300]
