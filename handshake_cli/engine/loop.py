"""The model_run loop: stream the model, call tools through the gate, checkpoint at every
boundary, and stop cooperatively.

Everything it writes goes through its `SessionWriter` (engine/writer.py, where DESIGN
section 2's durability rules are kept). What the loop decides is when: chunks, model
requests and completions are appended unsynced; a tool's intent is synced before the tool
starts, except a `read` tool's (no effect to protect); each result is followed by a
checkpoint (or a sync), before the next model request.

The loop runs from the writer's `Thread`, not from the start of a session, so recovery can
rebuild a thread from a checkpoint plus the journal after it and continue through this
same code.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from handshake_cli import faults
from handshake_cli.engine.providers import (
    ModelRequest,
    Provider,
    ProviderError,
    Retry,
    StreamInterrupted,
    TextChunk,
    ToolCallDelta,
    ToolCallRequest,
)
from handshake_cli.engine.tools.gate import (
    ToolContext,
    ToolInDoubt,
    ToolOutcome,
    idempotency_key,
    run_tool,
    tool_call_id,
)
from handshake_cli.errors import ExitCode
from handshake_cli.session.checkpoints import CheckpointRef
from handshake_cli.session.state import ACTIVE, BLOCKED, CANCELLED, COMPLETED, FAILED, PAUSED, TERMINAL

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import Job, ToolSpec
    from handshake_cli.engine.secrets import SecretMasker, StreamMasker
    from handshake_cli.engine.tools.mcp import McpHost
    from handshake_cli.engine.writer import SessionWriter
    from handshake_cli.session.thread import Thread
    from handshake_cli.storage.contract import CheckpointRequest

EXIT_FOR_STATE: dict[str, ExitCode] = {
    COMPLETED: ExitCode.OK,
    FAILED: ExitCode.JOB_FAILED,
    CANCELLED: ExitCode.OK,
    PAUSED: ExitCode.STOPPED,
    BLOCKED: ExitCode.BLOCKED,
}
GRACEFUL_SHUTDOWN = "graceful shutdown"


class Observer(Protocol):
    """What a front end may show while a session runs. Every method may be a no-op."""

    def text(self, turn: int, text: str) -> None: ...
    def tool_started(self, call: dict[str, Any]) -> None: ...
    def tool_finished(self, call: dict[str, Any], result: dict[str, Any]) -> None: ...
    def checkpoint(self, ref: CheckpointRef, reason: str) -> None: ...
    def state(self, before: str, after: str, reason: str) -> None: ...
    def retry(self, turn: int, attempt: int, reason: str, delay: float) -> None: ...


class QuietObserver:
    def text(self, turn: int, text: str) -> None:
        pass

    def tool_started(self, call: dict[str, Any]) -> None:
        pass

    def tool_finished(self, call: dict[str, Any], result: dict[str, Any]) -> None:
        pass

    def checkpoint(self, ref: CheckpointRef, reason: str) -> None:
        pass

    def state(self, before: str, after: str, reason: str) -> None:
        pass

    def retry(self, turn: int, attempt: int, reason: str, delay: float) -> None:
        pass


class Cancellation:
    """Cooperative stop. The first SIGINT/SIGTERM asks for a stop at the next boundary; a
    second one exits at once (the write-ahead rules leave the session recoverable).
    SIGUSR1 asks for a checkpoint at the next boundary (`handshake checkpoint`)."""

    def __init__(self) -> None:
        self.stop_requested: str | None = None
        self.checkpoint_requested = False

    def install(self) -> Callable[[], None]:
        previous = {
            signum: signal.signal(signum, self._handle)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
        }

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        # A request may have come while this process held the lock but had no handler yet
        # (SessionLock ignores SIGUSR1 until then): look for one at the first boundary.
        self.checkpoint_requested = True
        return restore

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1:
            self.checkpoint_requested = True
            return
        if self.stop_requested:
            os._exit(128 + signum)
        self.stop_requested = signal.Signals(signum).name


@dataclass
class RunResult:
    session_id: str
    state: str
    reason: str
    turns: int
    tool_calls: int
    checkpoints: int
    checkpoint_artifact_id: str | None
    checkpoint_bytes: int = 0
    hint: str | None = None  # what to fix, when a model error ended the session

    @property
    def exit_code(self) -> int:
        return int(EXIT_FOR_STATE.get(self.state, ExitCode.INTERNAL))

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "state": self.state,
            "reason": self.reason,
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "checkpoint_count": self.checkpoints,
            "checkpoint_artifact_id": self.checkpoint_artifact_id,
            "exit_code": self.exit_code,
            **({"hint": self.hint} if self.hint else {}),
        }


class Stop(Exception):
    """Internal: leave the loop at a boundary."""


@dataclass
class Runner:
    """Drives a session through its writer. `observer` sees the text, the tool calls and the
    retries; the writer's own observer (give it the same one) sees checkpoints and states."""

    writer: SessionWriter
    job: Job
    workspace: Path
    provider: Provider
    observer: Observer = field(default_factory=QuietObserver)
    cancel: Cancellation = field(default_factory=Cancellation)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    tool_calls_run: int = 0
    # Recovery of a deterministic model: the text a call cut short had already streamed, by
    # turn. The new stream must repeat it, or the session blocks (model_divergence).
    replay: dict[int, str] = field(default_factory=dict)
    # The session's MCP servers (engine/tools/mcp.py), when its job declares any; `job`'s
    # tools then include theirs. The runner stops them when the session stops or ends.
    mcp: McpHost | None = None
    _messages_since: int = 0
    _tokens_since: int = 0
    _next_request_look: float = 0.0  # time.monotonic() of the next unsignalled look (`request_poll`)
    _hint: str | None = None

    @property
    def thread(self) -> Thread:
        return self.writer.thread

    @property
    def masker(self) -> SecretMasker:
        return self.writer.masker

    # -- the loop ----------------------------------------------------------------------

    def drive(self) -> RunResult:
        """Run until the session ends, fails, or stops at a boundary."""
        try:
            while self.writer.record.state == ACTIVE:
                self._boundary()
                if self.thread.pending:
                    self.run_tool_calls()
                elif self.thread.answered:  # a crash came between the answer and the end
                    self._end(COMPLETED, "the model answered")
                elif self.thread.turn >= self.job.limits.max_turns:
                    self._end(FAILED, f"max_turns ({self.job.limits.max_turns}) reached without an answer")
                else:
                    self._model_turn()
        except Stop:
            pass
        if self.writer.record.state not in TERMINAL:
            self.stop_mcp_servers()
        return self.result()

    def result(self) -> RunResult:
        record = self.writer.record
        return RunResult(
            session_id=self.writer.session_id,
            state=record.state,
            reason=self.writer.reason,
            turns=self.thread.turn,
            tool_calls=self.tool_calls_run,
            checkpoints=record.checkpoint_count,
            checkpoint_artifact_id=record.checkpoint_artifact_id,
            checkpoint_bytes=self.writer.checkpoint_bytes,
            hint=self._hint,
        )

    def _boundary(self, requests: list[CheckpointRequest] | None = None) -> None:
        """Between chunks and tool calls: serve checkpoint requests (`requests`, when the
        caller already looked), honour a stop."""
        for request in self._pending_requests() if requests is None else requests:
            self._serve_checkpoint_request(request)
        if self.cancel.stop_requested:
            self._pause()

    def _pending_requests(self) -> list[CheckpointRequest]:
        """The checkpoint requests to serve at this boundary. Looked for when signalled (and
        at the first boundary); on a store whose askers may be on another machine (a
        `request_poll`), also at most once per `request_poll` seconds, so a boundary costs
        one clock reading, not one query."""
        poll = self.writer.store.request_poll
        if self.cancel.checkpoint_requested:
            self.cancel.checkpoint_requested = False
        elif poll is None or time.monotonic() < self._next_request_look:
            return []
        if poll is not None:
            self._next_request_look = time.monotonic() + poll
        return self.writer.lease.pending_requests()

    def _pause(self) -> None:
        reason = f"{GRACEFUL_SHUTDOWN} ({self.cancel.stop_requested})"
        self.writer.transition(PAUSED, reason, checkpoint_reason=GRACEFUL_SHUTDOWN)
        raise Stop

    # -- the model ---------------------------------------------------------------------

    def _model_turn(self) -> None:
        turn = self.thread.turn + 1
        request = ModelRequest(turn, [dict(m) for m in self.thread.messages], self.job.tools)
        self._request(request)
        text = _TurnText(self, turn)
        calls: list[dict[str, Any]] = []
        try:
            with closing(self.provider.stream(request)) as events:  # closed, so a program stops
                for event in events:
                    if isinstance(event, TextChunk):
                        safe = text.masking.feed(event.text)
                        if safe:
                            text.add(safe)
                            self._check_replay(turn, text)
                        self._between_chunks(text)
                    elif isinstance(event, ToolCallDelta):
                        text.add_call_piece(event)
                        self._between_chunks(text)
                    elif isinstance(event, Retry):
                        if event.discarded:  # what this attempt streamed is void: a new request
                            self._abort(text, "retried")
                            self._request(request)
                            text, calls = _TurnText(self, turn), []
                        self._retry_later(text, event)
                    else:
                        calls.append(self._requested_call(event))
        except StreamInterrupted as error:
            self._abort(text, "interrupted")
            reason = self.masker.mask(f"the model call was interrupted: {error.message}")
            self.writer.transition(PAUSED, reason)
            raise Stop from None
        except ProviderError as error:
            self._abort(text, "provider_error")
            hint = error.hint
            if error.fork_after_fix:
                hint = (hint + "; once" if hint else "once") + self._fork_hint()
            self._hint = self.masker.mask(hint) if hint else None
            self._end(FAILED, self.masker.mask(f"the model failed: {error.message}"))
        tail = text.masking.flush()
        if tail:
            text.add(tail)
        self._check_replay(turn, text, final=True)
        text.finish_calls()
        text.flush()
        tool_calls = [{"tool_call_id": tool_call_id(turn, i), **call} for i, call in enumerate(calls)]
        message: dict[str, Any] = {"role": "assistant", "content": text.content()}
        if tool_calls:
            message["tool_calls"] = tool_calls
        finish = "tool_calls" if tool_calls else "stop"
        self.writer.append(
            "model.completed", {"turn": turn, "message": message, "finish_reason": finish}, sync=False
        )
        self._messages_since += 1
        if not tool_calls:
            self._end(COMPLETED, "the model answered")
        if self._messages_since >= self.job.checkpoint.every_messages:
            self._checkpoint(f"every {self.job.checkpoint.every_messages} messages")

    def _fork_hint(self) -> str:
        """How to go on after fixing the server: a fork from the newest checkpoint, which
        comes before this call (the next one is the FAILED transition's) and resumes it."""
        session_id = self.writer.session_id
        checkpoint = f"ck-{self.writer.record.checkpoint_count}"
        return (
            f" it is fixed, go on from the checkpoint before this call: `handshake recover {session_id} "
            f"--fork NEW_ID --from-checkpoint {checkpoint}`, then `handshake recover NEW_ID` "
            "(with the same --root)"
        )

    def _request(self, request: ModelRequest) -> None:
        self.writer.append(
            "model.request", {"turn": request.turn, "message_count": len(request.messages)}, sync=False
        )

    def _between_chunks(self, text: _TurnText) -> None:
        """A boundary inside the stream: a stop, a checkpoint request, the token policy."""
        requests = self._pending_requests()
        if self.cancel.stop_requested or requests:
            text.flush()
        if self.cancel.stop_requested:
            self._abort(text, "cancelled")
            self._pause()
        self._boundary(requests)
        if self._tokens_since >= self.job.checkpoint.every_tokens:
            text.flush()
            self._checkpoint(f"every {self.job.checkpoint.every_tokens} tokens")

    def _retry_later(self, text: _TurnText, retry: Retry) -> None:
        """The provider will ask again: journal the failed attempt, then wait, honouring a stop."""
        self.writer.append(
            "model.retry",
            {
                "turn": text.turn,
                "attempt": retry.attempt,
                "reason": self.masker.mask(retry.reason),
                "delay_ms": round(retry.delay * 1000),
            },
            sync=False,
        )
        self.observer.retry(text.turn, retry.attempt, self.masker.mask(retry.reason), retry.delay)
        deadline = time.monotonic() + retry.delay
        while True:
            self._between_chunks(text)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _requested_call(self, event: ToolCallRequest) -> dict[str, Any]:
        call: dict[str, Any] = {"tool": self.masker.mask(event.tool)}
        call["args"] = self.masker.mask_json(event.args)
        if event.invalid_args is not None:
            call["invalid_args"] = self.masker.mask(event.invalid_args)
        return call

    def _abort(self, text: _TurnText, reason: str) -> None:
        text.flush()
        data = {"turn": text.turn, "reason": reason, "chunks": text.journaled}
        self.writer.append("model.stream_aborted", data, sync=False)

    def _check_replay(self, turn: int, text: _TurnText, *, final: bool = False) -> None:
        expected = self.replay.get(turn)
        if expected is None:
            return
        content = text.content()
        agrees = (
            expected.startswith(content) if len(content) < len(expected) else content.startswith(expected)
        )
        if agrees and not (final and len(content) < len(expected)):
            if len(content) >= len(expected):
                del self.replay[turn]  # the journaled part is repeated: nothing more to compare
            return
        self._abort(text, "diverged")
        self.writer.block(
            "model_divergence",
            f"the deterministic model did not repeat the {len(expected)} characters it had streamed "
            f"for turn {turn} before the interruption",
        )
        raise Stop

    # -- tools -------------------------------------------------------------------------

    def run_tool_calls(self) -> None:
        """Run the pending calls that can go together, in the model's order, each between its
        intent and its result.

        Calls that are safe to run again — `read` tools, `idempotent` ones, and calls refused
        without running — go as one batch: their intents, one sync if any of them has an
        effect (a read's intent needs none: DESIGN section 2, rule 7), the tools, their
        results, then one checkpoint or sync for them all. A batch of N such calls costs at
        most two journal syncs, not 2N. Any other call (`non_idempotent`,
        `idempotent_with_key`) goes alone, as the first of the pending calls, so a crash can
        leave no more than that one call in doubt. A stop or checkpoint request is served at
        the end of a batch."""
        batch = [self._prepare(call) for call in self._batch()]
        for step in batch:
            faults.crash_point("before_intent")
            self.writer.append("tool.intent", step.intent(), sync=False)
        if any(step.has_effect for step in batch):
            self.writer.sync()  # every intent with an effect is on disk before any tool starts
        for step in batch:
            faults.crash_point("after_intent")
            self.observer.tool_started(step.call)
            try:
                outcome = self._outcome(step)
            except ToolInDoubt as doubt:
                self._in_doubt(step, doubt)
            faults.crash_point("before_result")
            part = self.masker.mask_json(outcome.as_result_data())
            # Output packed as artifacts is synced by the writer before this record names it.
            result = {"tool_call_id": step.call_id, "tool": step.name, **part}
            self.writer.append("tool.result", result, sync=False)
            faults.crash_point("after_result")
            self.tool_calls_run += 1
            self._messages_since += 1
            self.observer.tool_finished(step.call, part)
        if self.job.checkpoint.after_tool_call:
            count = len(batch)
            self._checkpoint("tool call completed" if count == 1 else f"{count} tool calls completed")
        else:
            self.writer.sync()

    def _batch(self) -> list[dict[str, Any]]:
        """The leading pending calls that may run as one batch (at least the first call)."""
        pending = self.thread.pending
        batch = [pending[0]]
        if not self._may_rerun(pending[0]):
            return batch
        for call in pending[1:]:
            if not self._may_rerun(call):
                break
            batch.append(call)
        return batch

    def _may_rerun(self, call: dict[str, Any]) -> bool:
        spec = self.job.tool(call["tool"])
        return (
            spec is None
            or "invalid_args" in call
            or spec.side_effect == "read"
            or spec.idempotency == "idempotent"
        )

    def _prepare(self, call: dict[str, Any]) -> _ToolStep:
        args = call.get("args") or {}
        name = call["tool"]
        key = idempotency_key(self.writer.session_id, call["tool_call_id"], name, args)
        return _ToolStep(call, self.job.tool(name), args, key)

    def _outcome(self, step: _ToolStep) -> ToolOutcome:
        if step.spec is None:
            return ToolOutcome(
                error={
                    "code": "unknown_tool",
                    "kind": "refused",
                    "retryable": False,
                    "message": f"this job declares no tool named {step.name!r}",
                }
            )
        if "invalid_args" in step.call:
            return ToolOutcome(
                error={
                    "code": "invalid_arguments",
                    "kind": "invalid_arguments",
                    "retryable": False,
                    "message": "the arguments are not a JSON object; the tool was not run",
                }
            )
        context = ToolContext(
            session_id=self.writer.session_id,
            tool_call_id=step.call_id,
            idempotency_key=step.key,
            workspace=self.workspace,
            store_large_output=self.writer.store_large_output,
            environ=self.environ,
            mcp=self.mcp,
        )
        return run_tool(step.spec, step.args, context)

    def _in_doubt(self, step: _ToolStep, doubt: ToolInDoubt) -> None:
        """A call whose outcome cannot be known (its MCP server died or hung): no result is
        recorded, the session stops, and `recover` settles the call by the usual rules."""
        reason = self.masker.mask(doubt.reason)
        failed: dict[str, Any] = {"server": step.spec.mcp_server if step.spec else None}
        failed.update(tool_call_id=step.call_id, tool=step.name, reason=reason)
        if self.mcp is not None and step.spec is not None and step.spec.mcp_server:
            self.mcp.close()  # a hung server is stopped; recovery starts it again
            said = self.mcp.stderr(step.spec.mcp_server)
            if said:
                failed["stderr_artifact_id"] = self.writer.store_large_output(said)
        self.writer.append("mcp.server_failed", failed, sync=False)
        self.writer.transition(
            PAUSED, f"{step.call_id} ({step.name}) is in doubt: {reason}; recover decides what to do with it"
        )
        self.stop_mcp_servers()
        raise Stop

    def stop_mcp_servers(self) -> None:
        """Stop the MCP servers and keep each one's stderr as an artifact (`mcp.stopped`)."""
        host, self.mcp = self.mcp, None
        if host is None:
            return
        host.close()
        for name in host.servers:
            said = host.stderr(name)
            data: dict[str, Any] = {"server": name, "stderr_bytes": len(said)}
            if said:
                data["stderr_artifact_id"] = self.writer.store_large_output(said)
            self.writer.append("mcp.stopped", data, sync=True)

    # -- checkpoints and endings ---------------------------------------------------------

    def _checkpoint(self, reason: str) -> CheckpointRef:
        ref = self.writer.checkpoint(reason)
        self._messages_since = 0
        self._tokens_since = 0
        return ref

    def _end(self, state: str, reason: str) -> None:
        self.stop_mcp_servers()
        self.writer.end(state, reason)
        raise Stop

    # -- `handshake checkpoint` while running --------------------------------------------

    def _serve_checkpoint_request(self, request: CheckpointRequest) -> None:
        reason = self.masker.mask(request.reason) if request.reason else None
        ref = self._checkpoint(f"requested: {reason}" if reason else "requested")
        self.writer.lease.answer_request(request, ref.as_json())


@dataclass
class _ToolStep:
    """One call of a batch: what its intent records and what running it needs."""

    call: dict[str, Any]
    spec: ToolSpec | None
    args: dict[str, Any]
    key: str

    @property
    def call_id(self) -> str:
        return str(self.call["tool_call_id"])

    @property
    def name(self) -> str:
        return str(self.call["tool"])

    @property
    def has_effect(self) -> bool:
        """Whether the tool may change something, so its intent must be on disk before it runs."""
        return self.spec is not None and "invalid_args" not in self.call and self.spec.side_effect != "read"

    def intent(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.call_id,
            "tool": self.name,
            "args": self.args,
            "idempotency_key": self.key,
            "side_effect": self.spec.side_effect if self.spec else None,
            "idempotency": self.spec.idempotency if self.spec else None,
            # An MCP tool: its server, and where its declarations came from (`inspect` shows it).
            **(
                {"mcp": {"server": self.spec.mcp_server, "origin": dict(self.spec.origin or {})}}
                if self.spec is not None and self.spec.mcp_server
                else {}
            ),
        }


@dataclass
class _CallPieces:
    """One tool call of the turn being streamed: its masked pieces, journaled in batches."""

    masking: StreamMasker  # for this call's arguments
    name: str | None = None
    pending_name: str | None = None  # the name, until a record has carried it
    pending: list[str] = field(default_factory=list)
    journaled: int = 0  # pieces written so far

    def record(self, turn: int, index: int) -> dict[str, Any]:
        data: dict[str, Any] = {
            "turn": turn,
            "call": index,
            "index": self.journaled,
            "count": len(self.pending),
        }
        if self.pending_name is not None:
            data["name"] = self.pending_name
            self.pending_name = None
        data["arguments"] = "".join(self.pending)
        self.journaled += len(self.pending)
        self.pending.clear()
        return data


class _TurnText:
    """The masked text of the turn being streamed, and its journaling.

    Deltas that arrive close together (a fast local model, the scripted one) are journaled
    together: one `model.chunk` record holds up to 64 deltas, or whatever arrived within
    10 ms of the last record. A slow stream still gets one record per delta. Chunks are
    group-committed either way (DESIGN section 2, rule 3); the batching only saves the cost
    of framing a record per word, which would otherwise cap streaming well below the
    speed of a local model. The observer sees every delta as it arrives.
    """

    MAX_DELTAS = 64
    MAX_DELAY = 0.010

    def __init__(self, runner: Runner, turn: int) -> None:
        self.runner = runner
        self.turn = turn
        self.masking = runner.masker.stream()
        self.parts: list[str] = []
        self.pending: list[str] = []
        self.journaled = 0  # deltas written to the journal so far
        self.last_write = time.monotonic()
        self.calls: dict[int, _CallPieces] = {}  # tool calls streaming, by the provider's index
        self.call_pieces = 0  # pieces of tool calls waiting to be journaled

    def add_call_piece(self, delta: ToolCallDelta) -> None:
        """A piece of a tool call, masked like text, journaled with the text (`model.tool_call_chunk`)."""
        call = self.calls.get(delta.call)
        if call is None:
            call = self.calls[delta.call] = _CallPieces(self.runner.masker.stream())
        if delta.name is not None and call.name is None:
            call.name = call.pending_name = self.runner.masker.mask(delta.name)
        safe = call.masking.feed(delta.arguments)
        if safe or call.pending_name is not None:
            call.pending.append(safe)
            self.call_pieces += 1
        if self._due():
            self.flush()

    def finish_calls(self) -> None:
        """The stream ended: what each call's masker held back is released."""
        for call in self.calls.values():
            tail = call.masking.flush()
            if tail:
                call.pending.append(tail)
                self.call_pieces += 1

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pending.append(text)
        self.runner._tokens_since += 1
        self.runner.observer.text(self.turn, text)
        if self._due():
            self.flush()

    def _due(self) -> bool:
        waiting = len(self.pending) + self.call_pieces
        return waiting >= self.MAX_DELTAS or time.monotonic() - self.last_write >= self.MAX_DELAY

    def flush(self) -> None:
        wrote = False
        if self.pending:
            data = {
                "turn": self.turn,
                "index": self.journaled,
                "count": len(self.pending),
                "text": "".join(self.pending),
            }
            self.runner.writer.append("model.chunk", data, sync=False)
            self.journaled += len(self.pending)
            self.pending.clear()
            wrote = True
        if self.call_pieces:
            for index, call in self.calls.items():
                if call.pending:
                    self.runner.writer.append(
                        "model.tool_call_chunk", call.record(self.turn, index), sync=False
                    )
            self.call_pieces = 0
            wrote = True
        if wrote:
            faults.crash_point("mid_stream")
            self.last_write = time.monotonic()

    def content(self) -> str:
        return "".join(self.parts)
