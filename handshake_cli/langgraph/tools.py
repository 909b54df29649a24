"""Exactly-once tools inside LangGraph nodes: handshake's tool gate for graphs whose
checkpointer is a `HandshakeSaver`.

LangGraph records a node's result only after the node returns, so a process killed while a
node runs its tools runs the node again when the graph resumes, and every side effect the
node had already made happens twice. `exactly_once` puts handshake's rules around one tool:

1. Each call gets a deterministic id and idempotency key, from the thread, the checkpoint
   the task runs from, the task, and the call's place among the task's calls (its tool and
   arguments, and how many identical calls came before it in this run of the task: the same
   whichever order a `ToolNode` runs parallel calls in).
2. Its `tool.intent` is journaled in the thread's session and synced before the tool runs;
   its `tool.result` is journaled and synced before the gate returns.
3. A call whose result is recorded never runs again: the gate returns the recorded result
   (or raises `ToolCallFailed` with the recorded error).
4. A call in doubt (an intent, no result: the process died in between) follows DESIGN
   section 5: `idempotent` runs again; `idempotent_with_key` runs again with the same key;
   `non_idempotent` asks its probe when it has one; otherwise the graph stops with an
   interrupt carrying the guidance. Resume with `Command(resume="done")` (it happened: the
   gate records that and returns `done_result`) or `Command(resume="retry")` (run it again,
   same key).

A tool gets its key as the `idempotency_key` keyword when it declares that parameter
(declare it `idempotency_key: str = ""`, so that callers and type checkers need not pass it;
the gate hides it from the signature LangChain builds a tool schema from), and from
`current_call()` otherwise. Under a checkpointer that is not a `HandshakeSaver` the gate
only supplies the key: nothing is journaled, and nothing is promised.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar, cast

from langgraph.config import get_config

from handshake_cli.langgraph.journal import OpenThread
from handshake_cli.langgraph.saver import HandshakeSaver
from handshake_cli.langgraph.values import decode_value
from handshake_cli.session.langgraph_thread import ToolCallEntry

Idempotency = Literal["idempotent", "idempotent_with_key", "non_idempotent"]
SideEffect = Literal["read", "write", "execute"]
KEY_PARAMETER = "idempotency_key"
DONE_BY_OPERATOR = "the call was confirmed done by an operator; its result was not recorded"
# How long a gated call waits for the checkpoint its task runs from to reach the disk (under
# durability="async" LangGraph puts it in the background while the task already runs).
CHECKPOINT_WAIT_SECONDS = 60.0

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class GatedCall:
    """The call the gate is running: what a tool may read through `current_call()`."""

    thread_id: str
    tool_call_id: str
    idempotency_key: str
    tool: str


@dataclass(frozen=True)
class Probed:
    """A probe's answer: whether the call in doubt happened, and if so its result."""

    happened: bool
    result: Any = None


class ToolCallFailed(RuntimeError):
    """A gated call whose recorded outcome is an error: raised again, never run again."""


_CURRENT: contextvars.ContextVar[GatedCall | None] = contextvars.ContextVar("handshake_call", default=None)


def current_call() -> GatedCall | None:
    """The gated call running now (its idempotency key, to pass on to a remote service)."""
    return _CURRENT.get()


def exactly_once(
    *,
    idempotency: Idempotency,
    side_effect: SideEffect = "write",
    probe: Callable[..., Probed] | None = None,
    name: str | None = None,
    done_result: Any = DONE_BY_OPERATOR,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Gate a tool (a sync or async function) for use in a node or under `ToolNode`:
    `@tool` over `@exactly_once(...)`. `probe(idempotency_key, **arguments)` answers for a
    `non_idempotent` call in doubt."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        gate = _Gate(fn, name or fn.__name__, idempotency, side_effect, probe, done_result)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await gate.call_async(args, kwargs)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any) -> Any:
                return gate.call(args, kwargs)

            wrapper = run
        wrapper.__signature__ = gate.public_signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != KEY_PARAMETER
        }
        del wrapper.__wrapped__  # type: ignore[attr-defined]  # the schema must not see the key
        return cast(Callable[P, R], wrapper)

    return decorate


# Identical calls within one run of a task are told apart by their order; a run of a task is
# its scratchpad, which LangGraph makes anew each time the task runs. Bounded: a process
# running many tasks forgets the counters of old ones.
_RUNS: OrderedDict[int, tuple[object, dict[str, int]]] = OrderedDict()
_RUNS_KEPT = 4096


def _occurrence(scratchpad: object, signature: str) -> int:
    found = _RUNS.get(id(scratchpad))
    if found is None or found[0] is not scratchpad:
        found = (scratchpad, {})
        _RUNS[id(scratchpad)] = found
        while len(_RUNS) > _RUNS_KEPT:
            _RUNS.popitem(last=False)
    counts = found[1]
    counts[signature] = counts.get(signature, 0) + 1
    return counts[signature] - 1


class _Gate:
    def __init__(
        self,
        fn: Callable[..., Any],
        tool: str,
        idempotency: Idempotency,
        side_effect: SideEffect,
        probe: Callable[..., Probed] | None,
        done_result: Any,
    ) -> None:
        self.fn = fn
        self.tool = tool
        self.idempotency = idempotency
        self.side_effect = side_effect
        self.probe = probe
        self.done_result = done_result
        self.signature = inspect.signature(fn)
        self.takes_key = KEY_PARAMETER in self.signature.parameters
        self.public_signature = self.signature.replace(
            parameters=[p for n, p in self.signature.parameters.items() if n != KEY_PARAMETER]
        )

    # -- the call's identity ----------------------------------------------------------------

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in kwargs.items() if k != KEY_PARAMETER}
        bound = self.public_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def _identify(self, arguments: dict[str, Any]) -> tuple[GatedCall, HandshakeSaver | None, dict[str, str]]:
        config = get_config()
        configurable = config.get("configurable") or {}
        thread_id = str(configurable.get("thread_id", ""))
        shown = _json_safe(arguments)
        signature = json.dumps([self.tool, shown], sort_keys=True, separators=(",", ":"))
        occurrence = _occurrence(configurable.get("__pregel_scratchpad"), signature)
        material = json.dumps(
            [
                thread_id,
                configurable.get("checkpoint_map") or {},
                configurable.get("checkpoint_ns", ""),
                configurable.get("__pregel_task_id", ""),
                signature,
                occurrence,
            ],
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()
        call = GatedCall(thread_id, f"{self.tool}-{digest[:16]}", f"hs-{digest[:40]}", self.tool)
        saver = configurable.get("__pregel_checkpointer")
        checkpoint_map = {str(k): str(v) for k, v in (configurable.get("checkpoint_map") or {}).items()}
        return call, saver if isinstance(saver, HandshakeSaver) else None, checkpoint_map

    # -- sync and async paths ---------------------------------------------------------------

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = self._arguments(args, kwargs)
        call, saver, checkpoint_map = self._identify(arguments)
        if saver is None:
            return self._run(call, arguments)
        decision = self._before(saver, call, arguments, checkpoint_map)
        if decision.settled:
            return decision.result
        try:
            result = self._run(call, arguments)
        except Exception as exc:
            self._after(saver, call, error=exc)
            raise
        self._after(saver, call, result=result)
        return result

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = self._arguments(args, kwargs)
        call, saver, checkpoint_map = self._identify(arguments)
        if saver is None:
            return await self._run_async(call, arguments)
        # Off the event loop: the gate may wait for a checkpoint that the loop is putting.
        decision = await asyncio.to_thread(self._before, saver, call, arguments, checkpoint_map)
        if decision.settled:
            return decision.result
        try:
            result = await self._run_async(call, arguments)
        except Exception as exc:
            await asyncio.to_thread(functools.partial(self._after, saver, call, error=exc))
            raise
        await asyncio.to_thread(functools.partial(self._after, saver, call, result=result))
        return result

    def _run(self, call: GatedCall, arguments: dict[str, Any]) -> Any:
        token = _CURRENT.set(call)
        try:
            return self.fn(**self._with_key(call, arguments))
        finally:
            _CURRENT.reset(token)

    async def _run_async(self, call: GatedCall, arguments: dict[str, Any]) -> Any:
        token = _CURRENT.set(call)
        try:
            return await cast(Callable[..., Awaitable[Any]], self.fn)(**self._with_key(call, arguments))
        finally:
            _CURRENT.reset(token)

    def _with_key(self, call: GatedCall, arguments: dict[str, Any]) -> dict[str, Any]:
        return {**arguments, KEY_PARAMETER: call.idempotency_key} if self.takes_key else arguments

    # -- the write-ahead rules ------------------------------------------------------------

    def _before(
        self,
        saver: HandshakeSaver,
        call: GatedCall,
        arguments: dict[str, Any],
        checkpoint_map: dict[str, str],
    ) -> _Decision:
        """Settle the call from the journal, or journal its intent (synced) so it may run.

        The key names the checkpoint the task runs from; a crash before that checkpoint is
        on disk would resume from an older one, whose new child (and tasks) get new ids, and
        the call a new key. So no intent is written before the checkpoint is durable."""
        if not saver.wait_for_checkpoints(call.thread_id, checkpoint_map, CHECKPOINT_WAIT_SECONDS):
            raise RuntimeError(
                f"{self.tool}: the checkpoint its task runs from was not saved within "
                f"{CHECKPOINT_WAIT_SECONDS:.0f} s; exactly_once needs the graph to save checkpoints "
                'as it goes (durability "sync" or "async", not "exit")'
            )
        with saver.gate_lock:
            opened = saver.thread(call.thread_id, create=True)
            assert opened is not None
            entry = opened.index.calls.get(call.tool_call_id)
            if entry is None:
                self._intent(opened, call, arguments)
                return _Decision(False)
            if entry.result is not None:
                return _Decision(True, self._recorded(saver, opened, entry))
        return self._in_doubt(saver, call, arguments, entry)

    def _in_doubt(
        self, saver: HandshakeSaver, call: GatedCall, arguments: dict[str, Any], entry: ToolCallEntry
    ) -> _Decision:
        resolution = entry.resolution
        if resolution is None and self.idempotency in ("idempotent", "idempotent_with_key"):
            resolution = "retry"  # runs again (with the same key)
        if resolution is None and self.probe is not None:
            probed = self.probe(call.idempotency_key, **arguments)
            if probed.happened:
                self._after(saver, call, result=probed.result, evidence={"probe": "happened"})
                return _Decision(True, probed.result)
            resolution = "retry"  # the probe says it never happened: running it is safe
        if resolution is None:
            resolution = self._ask(saver, call, arguments)
        if resolution == "done":
            self._after(saver, call, result=self.done_result, evidence={"operator": "resolved done"})
            return _Decision(True, self.done_result)
        with saver.gate_lock:
            opened = saver.thread(call.thread_id, create=True)
            assert opened is not None
            self._intent(opened, call, arguments)  # a second intent: the call runs again
        return _Decision(False)

    def _ask(self, saver: HandshakeSaver, call: GatedCall, arguments: dict[str, Any]) -> str:
        """Stop the graph with an interrupt until it is resumed with this call's answer.

        ToolNode runs a turn's calls in parallel, and LangGraph hands a resume value to
        whichever `interrupt()` comes first, so answers are addressed: `{call id: "done" |
        "retry"}`, journaled as `operator.resolution` for every call in doubt they name (the
        others find theirs in the journal when they run). A bare "done" or "retry" is taken
        only when this is the thread's one call in doubt."""
        from langgraph.types import interrupt

        thread = json.dumps(call.thread_id)
        recover = f"handshake recover {saver.session_id(call.thread_id)} --root {saver.paths.shown_root}"
        answer_shape = f'{{"{call.tool_call_id}": "done"}}'
        guidance: dict[str, Any] = {
            "handshake": "tool_call_in_doubt",
            "thread_id": call.thread_id,
            "tool_call_id": call.tool_call_id,
            "tool": call.tool,
            "idempotency_key": call.idempotency_key,
            "args": _json_safe(arguments),
            "message": (
                f"{call.tool} ({call.tool_call_id}) is non_idempotent and was in flight when the "
                "process stopped: it may or may not have happened, and it has no probe. Check (its "
                f"idempotency key is {call.idempotency_key}), then resume the graph with "
                f'Command(resume={answer_shape}) if it happened, or "retry" in place of "done" to '
                'run it again with the same key (a bare Command(resume="done") when it is the only '
                "call in doubt)."
            ),
            "guidance": [
                *(
                    f"graph.invoke(Command(resume={{{call.tool_call_id!r}: {answer!r}}}), "
                    f'{{"configurable": {{"thread_id": {thread}}}}})'
                    for answer in ("done", "retry")
                ),
                # Or from a shell, with the graph's program stopped (it holds the thread's lock):
                *(f"{recover} --resolve {call.tool_call_id}={answer}" for answer in ("done", "retry")),
            ],
        }
        while True:
            answers = self._answers(saver, call, interrupt(guidance))
            if call.tool_call_id in answers:
                return answers[call.tool_call_id]
            guidance = {**guidance, "refused": f"no answer for {call.tool_call_id} in the resume value"}

    def _answers(self, saver: HandshakeSaver, call: GatedCall, value: Any) -> dict[str, str]:
        """The answers a resume value holds, each journaled for its call when that call is in
        doubt and not yet answered."""
        with saver.gate_lock:
            opened = saver.thread(call.thread_id, create=True)
            assert opened is not None
            in_doubt = [
                call_id
                for call_id, entry in opened.index.calls.items()
                if entry.result is None and entry.resolution is None
            ]
            if isinstance(value, str):
                value = {in_doubt[0]: value} if in_doubt == [call.tool_call_id] else {}
            if not isinstance(value, dict):
                return {}
            answers = {str(k): str(v) for k, v in value.items() if v in ("done", "retry")}
            for call_id, answer in answers.items():
                if call_id in in_doubt:
                    opened.append(
                        "operator.resolution",
                        {"tool_call_id": call_id, "resolution": answer, "by": "langgraph resume"},
                    )
            return answers

    def _intent(self, opened: OpenThread, call: GatedCall, arguments: dict[str, Any]) -> None:
        opened.append(
            "tool.intent",
            {
                "tool_call_id": call.tool_call_id,
                "tool": call.tool,
                "args": _json_safe(arguments),
                "idempotency_key": call.idempotency_key,
                "side_effect": self.side_effect,
                "idempotency": self.idempotency,
            },
        )

    def _after(
        self,
        saver: HandshakeSaver,
        call: GatedCall,
        *,
        result: Any = None,
        error: BaseException | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        with saver.gate_lock:
            opened = saver.thread(call.thread_id, create=True)
            assert opened is not None
            data: dict[str, Any] = {"tool_call_id": call.tool_call_id, "tool": call.tool}
            if error is not None:
                data["error"] = {"kind": type(error).__name__, "message": str(error)[:4096]}
            else:
                data["output"] = _shown(result)
                data["value"] = saver.value_ref(opened, result)
            if evidence is not None:
                data["evidence"] = evidence
            opened.append("tool.result", data)

    def _recorded(self, saver: HandshakeSaver, opened: OpenThread, entry: ToolCallEntry) -> Any:
        result = entry.result or {}
        if result.get("error") is not None:
            error = result["error"]
            raise ToolCallFailed(
                f"{self.tool} failed when it ran ({error.get('kind')}: {error.get('message')}); "
                "a gated call is never run again"
            )
        if "value" in result:
            return saver.serde.loads_typed(decode_value(result["value"], opened.artifacts))
        return result.get("output")


@dataclass(frozen=True)
class _Decision:
    settled: bool
    result: Any = None


def _json_safe(value: Any) -> Any:
    """`value` as plain JSON (what a record may hold and `inspect` shows)."""
    try:
        return json.loads(json.dumps(value, default=repr, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return repr(value)


# What a `tool.result` shows of the result in `output`; the value itself is in `value`.
OUTPUT_SHOWN_BYTES = 4096


def _shown(value: Any) -> Any:
    safe = _json_safe(value)
    text = json.dumps(safe)
    if len(text) <= OUTPUT_SHOWN_BYTES:
        return safe
    return {"preview": text[:OUTPUT_SHOWN_BYTES], "bytes": len(text)}
