"""The story of a session across the processes that wrote it: a pure fold for the post-mortem.

A session is written by a sequence of processes, never two at once (the lock): the `run`
that created it, each `recover`, a `checkpoint` taken of a stopped session, the fork that
copied it. Each opens with a record that says so: `session.created` (a run, or a fork when it
carries `forked_from`), `recovery.started`, or a `checkpoint.created` carrying `process` (only
the `checkpoint` command writes one, docs/FORMAT.md section 5). Those records also say, since
that field exists, the host and pid of the process. A process ends when the next one opens,
or with the journal.

How a process ended comes from what it wrote last: an ending record (`session.completed`,
`failed`, `cancelled`, or `recovery.blocked`), a change to `PAUSED` (a stop at a boundary),
its one checkpoint (the `checkpoint` command), a recovery with nothing left to do, the fork's
own checkpoint; otherwise it crashed (or is still running, which the caller knows from the
lock), and its last record is where it stopped. For each recovery the story keeps what it
found (`recovery.started`: the torn tail it cut, the calls in doubt and the plan's decision
for each, the checkpoints it skipped, the MCP servers it stopped) and what it decided and
did, call by call, from the records that followed: an operator's resolution, a probe's
answer (a result with `evidence.probe`; a new intent means the probe said "not happened";
an inconclusive one blocks), a call run again (its new intent and its result), a block, a
divergence, a divergence accepted.

The fold reads only these records (`STORY_TYPES`) and takes the records in seq order, any
subset that contains those. It is also resumable (`StoryFold`): the session writer folds
every record it appends and each checkpoint body keeps the fold's `state()` (FORMAT,
"Checkpoints", `story`), so a reader of a long session tells the story from its newest
checkpoint and the records after it, as it rebuilds everything else.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from handshake_cli.storage.journal.codec import Record
from handshake_cli.vocabulary import Decision

# The records the story is told from: the others are never looked at, so a scan may skip
# decoding them (`scan(..., decode=STORY_TYPES)`).
STORY_TYPES = frozenset(
    {
        "session.created",
        "session.state_change",
        "session.completed",
        "session.failed",
        "session.cancelled",
        "checkpoint.created",
        "recovery.started",
        "recovery.resumed",
        "recovery.blocked",
        "operator.resolution",
        "tool.intent",
        "tool.result",
        "model.stream_aborted",
        "mcp.tools",
        "langgraph.repaired",
    }
)

# The same records found by their bytes in a long journal (storage/journal/find.py), without a
# scan: a match is only a candidate (a tool's arguments may hold these words), `wanted` decides.
# Of the checkpoints only the `checkpoint` command's, which carry `process` (keys are sorted:
# it comes before `reason`, and no brace comes before it); of the tool records only those of
# the calls in doubt at a recovery, found afterwards (`calls_pattern`).
STORY_PATTERN = re.compile(
    rb'"type":"(?:session\.(?:created|state_change|completed|failed|cancelled)'
    rb"|recovery\.(?:started|resumed|blocked)|operator\.resolution|model\.stream_aborted|mcp\.tools"
    rb'|langgraph\.repaired)"'
    rb'|"type":"checkpoint\.created","data":\{[^{}]*"process":\{'
)
# The records before these are wanted too: the last record of the process before.
OPENING_TYPES = frozenset({"session.created", "recovery.started", "checkpoint.created", "langgraph.repaired"})


def calls_pattern(tool_call_ids: Iterable[str]) -> re.Pattern[bytes] | None:
    """The intents and results of these calls, by their bytes (every writer puts
    `tool_call_id` first in their data)."""
    ids = sorted({json.dumps(i, ensure_ascii=False)[1:-1] for i in tool_call_ids})
    if not ids:
        return None
    names = b"|".join(re.escape(i.encode("utf-8", "surrogatepass")) for i in ids)
    return re.compile(rb'"type":"tool\.(?:intent|result)","data":\{"tool_call_id":"(?:' + names + rb')"')


def in_doubt_ids(records: Iterable[Record]) -> set[str]:
    """The calls recoveries found in doubt: the tool records the story needs besides the rest."""
    ids: set[str] = set()
    for record in records:
        if record.type == "recovery.started":
            for call in record.data.get("in_doubt") or []:
                if isinstance(call, dict) and isinstance(call.get("tool_call_id"), str):
                    ids.add(call["tool_call_id"])
    return ids


# Kinds of process.
RUN = "run"
RECOVER = "recover"
CHECKPOINT = "checkpoint"
FORK = "fork"  # `recover --fork`: the process that made this session from another
LANGGRAPH = "langgraph"  # an application's HandshakeSaver (each opening after a torn tail is one)
UNKNOWN = "unknown"  # records after an ending that no opening record explains

# How a process ended.
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
PAUSED = "paused"  # stopped at a boundary (a signal, a model call cut short), resumable
BLOCKED = "blocked"  # waits for an operator (recovery.blocked is on record)
REPAIRED = "repaired"  # a recovery that cut a torn tail and had nothing else to do
CHECKPOINTED = "checkpointed"  # the `checkpoint` command took its checkpoint
FORKED = "forked"  # the fork was made (it is not resumed until `recover`)
OPEN = "open"  # a LangGraph thread between invocations: its saver closes without an ending
RUNNING = "running"  # the last process, and a live process holds the lock
DAMAGED = "damaged"  # the last process that can be read: the journal is corrupt after it
CRASHED = "crashed"  # no ending on record: it died after its last record

# Story records written at every tool call: they change the story only for a call in doubt at
# a recovery, or when they open or end a process.
_CALL_RECORDS = ("tool.intent", "tool.result")
_OFTEN = frozenset({*_CALL_RECORDS, "checkpoint.created"})
_ENDING_RECORDS = {"session.completed": COMPLETED, "session.failed": FAILED, "session.cancelled": CANCELLED}


@dataclass
class CallDecision:
    """What one recovery decided for one call in doubt, and what came of it."""

    tool_call_id: str
    tool: str | None
    decision: str  # the plan's (vocabulary.Decision)
    probe: str | None = None  # happened, not_happened, inconclusive; None: no answer on record
    resolution: str | None = None  # an operator's: done or retry
    by: str | None = None
    seq: int | None = None  # the record that settled it (result, resolution, block)
    rerun_seq: int | None = None  # the new intent when the call ran again
    result: str | None = None  # done or failed: the result of the run again, or the settled one
    result_seq: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "tool": self.tool,
            "decision": self.decision,
            "probe": self.probe,
            "resolution": self.resolution,
            "by": self.by,
            "seq": self.seq,
            "rerun_seq": self.rerun_seq,
            "result": self.result,
            "result_seq": self.result_seq,
        }


@dataclass
class Process:
    kind: str
    first_seq: int
    started_at: str | None
    host: str | None = None
    pid: int | None = None
    last_seq: int = 0
    last_type: str | None = None  # None when the caller's records skipped the last one
    ended_at: str | None = None  # the ts of its last record (None as last_type)
    ending: str = CRASHED
    reason: str | None = None  # the reason of the ending (a state change's, a block's)
    ending_seq: int | None = None  # the record that ended it
    torn_tail: dict[str, Any] | None = None  # what the next recovery cut after its last record
    found: dict[str, Any] | None = None  # a recovery's recovery.started, as written
    forked_from: dict[str, Any] | None = None  # a fork's origin {session_id, covers_seq, checkpoint_id}
    calls: list[CallDecision] = field(default_factory=list)  # a recovery's calls in doubt
    events: list[dict[str, Any]] = field(default_factory=list)  # blocks, divergences, resumes
    state: str | None = None  # the last state this process moved the session to

    def as_json(self) -> dict[str, Any]:
        found = None
        if self.found is not None:
            data = self.found
            found = {
                "action": data.get("action"),
                "reason": data.get("reason"),
                "checkpoint": data.get("checkpoint"),
                "repaired_torn_tail": data.get("repaired_torn_tail"),
                "in_doubt": data.get("in_doubt") or [],
                "skipped_checkpoints": data.get("skipped_checkpoints") or [],
                "stopped_mcp_servers": data.get("stopped_mcp_servers") or [],
                "accept_divergence": data.get("accept_divergence") is True,
            }
        return {
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "ending": self.ending,
            "reason": self.reason,
            "ending_seq": self.ending_seq,
            "last_record": {"seq": self.last_seq, "type": self.last_type, "ts": self.ended_at},
            "torn_tail": self.torn_tail,
            "forked_from": self.forked_from,
            "found": found,
            "decisions": [call.as_json() for call in self.calls],
            "events": self.events,
        }


@dataclass
class Story:
    processes: list[Process] = field(default_factory=list)
    complete: bool = True  # False: the caller could not read every record (see `partial`)
    partial: str | None = None  # why the story may lack a part, in the user's words

    @property
    def crashes(self) -> int:
        return sum(1 for p in self.processes if p.ending == CRASHED)

    def as_json(self) -> dict[str, Any]:
        return {
            "processes": [p.as_json() for p in self.processes],
            "crashes": self.crashes,
            "complete": self.complete,
            "partial": self.partial,
        }


def tell(
    records: Iterable[Record],
    *,
    last_seq: int | None = None,
    running: bool = False,
    torn_tail: dict[str, Any] | None = None,
    damaged_after: str | None = None,
) -> Story:
    """The story of the records (in seq order; any subset holding `STORY_TYPES`); see
    `StoryFold.told` for the other arguments."""
    fold = StoryFold()
    for record in records:
        fold.apply(record)
    return fold.told(last_seq=last_seq, running=running, torn_tail=torn_tail, damaged_after=damaged_after)


class StoryFold:
    """The fold itself, record by record. The session writer keeps one as it appends and
    each checkpoint carries its `state()` (the body's `story`), so a reader of a long
    session tells the story from its newest checkpoint and the records after it, as it
    rebuilds everything else."""

    def __init__(self) -> None:
        self.story = Story()
        self.current: Process | None = None
        self.ended = False  # the current process wrote an ending: what follows is another's
        self.langgraph = False
        # Counts the records that changed the story other than by moving the last process's
        # last record: the writer names an earlier checkpoint's story while it stays the same.
        self.version = 0

    def told(
        self,
        *,
        last_seq: int | None = None,
        running: bool = False,
        torn_tail: dict[str, Any] | None = None,
        damaged_after: str | None = None,
    ) -> Story:
        """The story so far, the fold left as it is. `last_seq`: the journal's last intact
        seq when the records folded stop short of it; `running`: a live process holds the
        session's lock, so the last process has not ended, it is still writing; `torn_tail`:
        the torn record a scan found after the last intact one (a crash mid-write that no
        recovery has cut yet); `damaged_after`: what the corruption after the last intact
        record is, in words: how the last process ended, and whether others followed,
        cannot be read."""
        story = copy.deepcopy(self.story)
        if not story.processes:
            return story
        final = story.processes[-1]
        if last_seq is not None and last_seq > final.last_seq:
            final.last_seq, final.last_type, final.ended_at = last_seq, None, None
        _close(final)
        if torn_tail is not None:
            final.torn_tail = torn_tail
        if running and final.ending == CRASHED:
            final.ending = RUNNING
        if damaged_after is not None:
            final.ending, final.reason, final.ending_seq = DAMAGED, damaged_after, None
            story.complete = False
            story.partial = f"the journal is damaged after seq {final.last_seq}: {damaged_after}"
        return story

    def state(self) -> dict[str, Any]:
        """What a checkpoint body keeps of the fold (`story`): its processes, each with only
        the fields that are set, and whether the last one has ended."""
        return {
            "processes": [_compact(asdict(process)) for process in self.story.processes],
            "ended": self.ended,
            "langgraph": self.langgraph,
        }

    @classmethod
    def from_state(cls, state: Any) -> StoryFold | None:
        """The fold a body's `story` holds, or None when it holds none this version reads
        (an older body: the caller tells the story another way)."""
        if not isinstance(state, dict) or not isinstance(state.get("processes"), list):
            return None
        fold = cls()
        try:
            for item in state["processes"]:
                calls = [CallDecision(**call) for call in item.get("calls", [])]
                fold.story.processes.append(Process(**{"started_at": None, **item, "calls": calls}))
        except (TypeError, AttributeError):
            return None  # a shape this version never writes
        fold.current = fold.story.processes[-1] if fold.story.processes else None
        fold.ended, fold.langgraph = state.get("ended") is True, state.get("langgraph") is True
        return fold

    def apply(self, record: Record) -> None:
        current, kind = self.current, record.type
        if (
            current is not None
            and not self.ended
            and (kind not in STORY_TYPES or (kind in _CALL_RECORDS and not current.calls))
        ):
            # Most records (a chunk, a request, a tool call outside a recovery) only move the
            # process on: the writer folds every one it appends, so this path is kept short.
            current.last_seq, current.last_type, current.ended_at = record.seq, kind, record.ts
            return
        copying = current is not None and current.kind == FORK and not self.ended
        opening = None if copying else self._opening(record)
        count, ended = len(self.story.processes), self.ended
        if opening is not None:
            self._open(opening, record)
        elif self.current is None or (self.ended and not _closing_detail(record)):
            self._open(Process(UNKNOWN, record.seq, record.ts), record)
        process = self.current
        assert process is not None
        process.last_seq, process.last_type, process.ended_at = record.seq, kind, record.ts
        if copying:  # the fork copies the original's records: its own checkpoint ends it
            self._fork_copy(process, record)
        else:
            self._fold(process, record)
        if (
            count != len(self.story.processes)
            or ended != self.ended
            or (kind in STORY_TYPES and kind not in _OFTEN)
            or (kind in _CALL_RECORDS and _call(process, record.data.get("tool_call_id")) is not None)
        ):
            self.version += 1

    def _fork_copy(self, process: Process, record: Record) -> None:
        reason = record.data.get("reason")
        if record.type == "checkpoint.created" and str(reason).startswith("forked from"):
            _end(process, FORKED, reason, record.seq)
            self.ended = True

    def _opening(self, record: Record) -> Process | None:
        data = record.data
        kind = None
        if record.type == "session.created":
            self.langgraph = data.get("kind") == "langgraph"
            kind = FORK if data.get("forked_from") else LANGGRAPH if self.langgraph else RUN
        elif record.type == "recovery.started":
            kind = RECOVER
        elif record.type == "langgraph.repaired" and self.langgraph:
            kind = LANGGRAPH
        elif record.type == "checkpoint.created" and isinstance(data.get("process"), dict):
            kind = CHECKPOINT
        elif (
            record.type == "checkpoint.created"
            and self.ended
            and str(data.get("reason", "")).startswith("requested")
        ):
            kind = CHECKPOINT  # written before processes were named: after an ending, it is the command's
        if kind is None:
            return None
        process = Process(kind, record.seq, record.ts)
        identity = data.get("process")
        if isinstance(identity, dict):
            host, pid = identity.get("host"), identity.get("pid")
            process.host = host if isinstance(host, str) else None
            process.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        return process

    def _open(self, process: Process, record: Record) -> None:
        if self.current is not None:
            previous = self.current
            if previous.last_seq < record.seq - 1:  # records of its end were skipped
                previous.last_seq, previous.last_type, previous.ended_at = record.seq - 1, None, None
            torn = record.data.get("repaired_torn_tail") if process.kind in (RECOVER, LANGGRAPH) else None
            previous.torn_tail = torn if isinstance(torn, dict) else None  # the end of the process before
            if previous.torn_tail is None:
                _close(previous)  # (a saver that left a torn record did not close its thread: it crashed)
        self.story.processes.append(process)
        self.current = process
        self.ended = False

    def _fold(self, process: Process, record: Record) -> None:
        data, kind = record.data, record.type
        if kind in _ENDING_RECORDS:
            _end(process, _ENDING_RECORDS[kind], data.get("reason"), record.seq)
            self.ended = True
        elif kind == "session.state_change":
            target = data.get("to")
            process.state = target if isinstance(target, str) else process.state
            if target == "PAUSED":
                _end(process, PAUSED, data.get("reason"), record.seq)
                self.ended = True
            elif target == "ACTIVE" and process.ending != CRASHED:
                process.ending, process.reason, process.ending_seq = CRASHED, None, None
                self.ended = False
        elif kind == "recovery.blocked":
            _end(process, BLOCKED, data.get("reason"), record.seq)
            self.ended = True
            process.events.append(
                {
                    "kind": "blocked",
                    "seq": record.seq,
                    "reason": data.get("reason"),
                    "detail": data.get("detail"),
                }
            )
            self._blocked_calls(process, data, record.seq)
        elif kind == "recovery.started" and process.kind == RECOVER and process.first_seq == record.seq:
            process.found = data
            for call in data.get("in_doubt") or []:
                if isinstance(call, dict) and isinstance(call.get("tool_call_id"), str):
                    tool = call.get("tool")
                    process.calls.append(
                        CallDecision(
                            call["tool_call_id"],
                            tool if isinstance(tool, str) else None,
                            str(call.get("decision")),
                        )
                    )
            if data.get("action") == "nothing":
                _end(process, REPAIRED, data.get("reason"), record.seq)
                self.ended = True
        elif kind == "recovery.resumed":
            process.events.append(
                {
                    "kind": "resumed",
                    "seq": record.seq,
                    "in_flight": data.get("in_flight"),
                    "replaying": data.get("replaying"),
                }
            )
        elif kind == "checkpoint.created" and process.kind == CHECKPOINT and process.first_seq == record.seq:
            _end(process, CHECKPOINTED, data.get("reason"), record.seq)
            self.ended = True
        elif kind == "session.created" and process.kind == FORK:
            process.forked_from = (
                data.get("forked_from") if isinstance(data.get("forked_from"), dict) else None
            )
        elif kind == "operator.resolution":
            call = _call(process, data.get("tool_call_id"))
            if call is not None:
                call.resolution, call.by, call.seq = data.get("resolution"), data.get("by"), record.seq
        elif kind == "tool.intent":
            call = _call(process, data.get("tool_call_id"))
            if call is not None and call.rerun_seq is None:
                call.rerun_seq = record.seq
                if call.decision == Decision.PROBE and call.probe is None:
                    call.probe = "not_happened"  # the probe said so: recovery wrote nothing, the call runs
        elif kind == "tool.result":
            call = _call(process, data.get("tool_call_id"))
            if call is not None and call.result is None:
                call.result = "failed" if data.get("error") else "done"
                call.result_seq = record.seq
                evidence = data.get("evidence")
                if isinstance(evidence, dict) and evidence.get("probe") is not None:
                    call.probe, call.seq = str(evidence["probe"]), record.seq
        elif kind == "model.stream_aborted" and data.get("reason") == "diverged":
            process.events.append(
                {
                    "kind": "divergence",
                    "seq": record.seq,
                    "reason": "model_divergence",
                    "turn": data.get("turn"),
                }
            )
        elif kind == "mcp.tools" and data.get("accepted") is True:
            process.events.append(
                {"kind": "accepted_divergence", "seq": record.seq, "server": data.get("server")}
            )
        elif kind == "langgraph.repaired" and process.first_seq == record.seq:
            repaired = data.get("repaired_torn_tail")
            process.found = {"action": None, "reason": None, "repaired_torn_tail": repaired}

    def _blocked_calls(self, process: Process, data: dict[str, Any], seq: int) -> None:
        """A block names the calls it left to an operator; a probe among them was inconclusive."""
        for entry in data.get("in_doubt") or []:
            if not isinstance(entry, dict):
                continue
            call = _call(process, entry.get("tool_call_id"))
            if call is None:
                continue
            if (
                call.decision == Decision.PROBE
                and call.probe is None
                and entry.get("decision") == Decision.BLOCK
            ):
                call.probe, call.seq = "inconclusive", seq
            elif call.decision == Decision.BLOCK and call.seq is None:
                call.seq = seq


def _compact(value: dict[str, Any]) -> dict[str, Any]:
    """A process or call without its unset fields: every checkpoint body carries the story."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "calls":
            item = [_compact(call) for call in item]
        if item is not None and item != [] and item != "":
            out[key] = item
    return out


def _call(process: Process, tool_call_id: Any) -> CallDecision | None:
    return next((c for c in process.calls if c.tool_call_id == tool_call_id), None)


def _end(process: Process, ending: str, reason: Any, seq: int) -> None:
    process.ending, process.reason, process.ending_seq = (
        ending,
        reason if isinstance(reason, str) else None,
        seq,
    )


def _close(process: Process) -> None:
    """A process whose last word is not an ending crashed, except a LangGraph saver, which
    closes a thread without one."""
    if process.ending == CRASHED and process.kind == LANGGRAPH:
        process.ending = OPEN


def _closing_detail(record: Record) -> bool:
    """Records a process writes after its ending record or its change to PAUSED: the
    checkpoint of the transition, its MCP servers stopped, the ending after a terminal change."""
    return (
        record.type in ("checkpoint.created", "mcp.stopped", "session.state_change")
        or record.type in _ENDING_RECORDS
    )
