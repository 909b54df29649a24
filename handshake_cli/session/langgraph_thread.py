"""A LangGraph thread as a handshake session: the id it lives under, and the fold of its
`langgraph.*` and `tool.*` records into the index `HandshakeSaver` answers from and
`recover` and `inspect` read (without LangGraph: values stay references).

Thread ids are any string; session ids are `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`. A thread
lives in session `lg-<readable part>-<16 hex of sha256(thread id)>`: deterministic (no
lookup table to keep), unique in practice, and recognisable in `inspect`'s listing. The
real thread id is kept in session.toml (`[langgraph] thread_id`) and in record 1.

A thread has no run that starts and ends: LangGraph adds checkpoints whenever its program
invokes the graph, and a saver holds the lock only while it has the thread open. So the
state readers show for a thread (`thread_state`) is ACTIVE until the saver finishes it
(`finish_thread`: COMPLETED), whoever holds the lock; never INTERRUPTED, since there is no
run to resume (docs/DECISIONS.md, "The state of a LangGraph thread").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from handshake_cli.session.state import ACTIVE, TERMINAL
from handshake_cli.storage.journal.codec import Record
from handshake_cli.vocabulary import SessionState

SESSION_PREFIX = "lg-"
SNAPSHOT_FORMAT = 1
KIND = "langgraph"
RECORD_TYPES = frozenset(
    {
        "langgraph.checkpoint",
        "langgraph.writes",
        "langgraph.removed",
        "langgraph.repaired",
        "langgraph.index",
        "tool.intent",
        "tool.result",
        "operator.resolution",
    }
)
# LangGraph's special writes (error, scheduled, interrupt, resume) have negative indices
# and replace an earlier one; a regular write already stored for (task, index) is kept.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_thread(config: dict[str, Any]) -> bool:
    """Whether a session.toml is a LangGraph thread's."""
    return config.get("kind") == KIND


def thread_id_of(config: dict[str, Any]) -> str | None:
    """The real thread id a thread's session.toml keeps; None for any other session."""
    if not is_thread(config):
        return None
    section = config.get(KIND)
    return str(section.get("thread_id", "")) if isinstance(section, dict) else ""


def thread_state(stored: str) -> SessionState:
    """What a thread's stored state means to a reader: finished (terminal) or going on."""
    return SessionState(stored) if stored in TERMINAL else ACTIVE


def session_id_for(thread_id: str) -> str:
    readable = _UNSAFE.sub("_", thread_id)[:40].strip("._-") or "thread"
    digest = hashlib.sha256(thread_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{SESSION_PREFIX}{readable}-{digest}"


@dataclass
class StoredCheckpoint:
    """One checkpoint as its record holds it (values still as references)."""

    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    run_id: str | None
    seq: int


@dataclass
class ToolCallEntry:
    """A gated tool call (tools.py): its newest intent, its result, an operator's answer."""

    intent: dict[str, Any]
    result: dict[str, Any] | None = None
    resolution: str | None = None


WriteKey = tuple[str, int]  # (task_id, index)
StoredWrite = tuple[str, str, dict[str, Any], str]  # (task_id, channel, value ref, task_path)


@dataclass
class ThreadIndex:
    """Every live checkpoint, channel value and pending write of one thread."""

    thread_id: str
    checkpoints: dict[str, dict[str, StoredCheckpoint]] = field(default_factory=dict)
    blobs: dict[tuple[str, str, Any], dict[str, Any]] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[WriteKey, StoredWrite]] = field(default_factory=dict)
    calls: dict[str, ToolCallEntry] = field(default_factory=dict)
    records: int = 0

    def apply(self, record: Record) -> None:
        data = record.data
        if record.type == "langgraph.checkpoint":
            ns = str(data["checkpoint_ns"])
            for blob in data.get("blobs") or []:
                self.blobs[(ns, str(blob["channel"]), _version(blob["version"]))] = blob["value"]
            self.checkpoints.setdefault(ns, {})[str(data["checkpoint_id"])] = StoredCheckpoint(
                ns,
                str(data["checkpoint_id"]),
                data.get("parent_checkpoint_id"),
                data["checkpoint"],
                data["metadata"],
                data.get("run_id"),
                record.seq,
            )
        elif record.type == "langgraph.writes":
            self.add_writes(
                str(data["checkpoint_ns"]),
                str(data["checkpoint_id"]),
                str(data["task_id"]),
                str(data.get("task_path") or ""),
                [(int(w["idx"]), str(w["channel"]), w["value"]) for w in data["writes"]],
            )
        elif record.type == "tool.intent":
            call_id = str(data["tool_call_id"])
            found = self.calls.get(call_id)
            if found is None or found.result is None:
                # A second intent (the call runs again) clears the answer that allowed it.
                self.calls[call_id] = ToolCallEntry(data)
        elif record.type == "tool.result":
            found = self.calls.get(str(data["tool_call_id"]))
            if found is not None:
                found.result = data
        elif record.type == "operator.resolution":
            found = self.calls.get(str(data["tool_call_id"]))
            if found is not None and found.result is None:
                found.resolution = str(data["resolution"])
        elif record.type == "langgraph.removed":
            for ns, checkpoint_id in data["checkpoints"]:
                self.checkpoints.get(ns, {}).pop(checkpoint_id, None)
                self.writes.pop((ns, checkpoint_id), None)
        self.records += 1

    def add_writes(
        self,
        ns: str,
        checkpoint_id: str,
        task_id: str,
        task_path: str,
        writes: list[tuple[int, str, dict[str, Any]]],
    ) -> None:
        stored = self.writes.setdefault((ns, checkpoint_id), {})
        for idx, channel, ref in writes:
            key = (task_id, idx)
            if idx >= 0 and key in stored:
                continue
            stored[key] = (task_id, channel, ref, task_path)

    # -- the index as an artifact, so a long thread opens without folding its whole journal --

    def snapshot(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "thread_id": self.thread_id,
            "checkpoints": [
                [
                    c.checkpoint_ns,
                    c.checkpoint_id,
                    c.parent_checkpoint_id,
                    c.checkpoint,
                    c.metadata,
                    c.run_id,
                    c.seq,
                ]
                for entries in self.checkpoints.values()
                for c in entries.values()
            ],
            "blobs": [[ns, channel, version, ref] for (ns, channel, version), ref in self.blobs.items()],
            "writes": [
                [ns, checkpoint_id, task_id, idx, channel, ref, task_path]
                for (ns, checkpoint_id), pending in self.writes.items()
                for (task_id, idx), (_, channel, ref, task_path) in pending.items()
            ],
            "calls": [[call_id, c.intent, c.result, c.resolution] for call_id, c in self.calls.items()],
            "records": self.records,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> ThreadIndex:
        """The index a snapshot holds; ValueError (or KeyError, TypeError) for one that is
        not a snapshot this version writes: the caller folds the journal instead."""
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r}")
        index = cls(str(data["thread_id"]), records=int(data["records"]))
        for ns, checkpoint_id, parent, checkpoint, metadata, run_id, seq in data["checkpoints"]:
            index.checkpoints.setdefault(ns, {})[checkpoint_id] = StoredCheckpoint(
                ns, checkpoint_id, parent, checkpoint, metadata, run_id, int(seq)
            )
        for ns, channel, version, ref in data["blobs"]:
            index.blobs[(ns, channel, _version(version))] = ref
        for ns, checkpoint_id, task_id, idx, channel, ref, task_path in data["writes"]:
            index.writes.setdefault((ns, checkpoint_id), {})[(task_id, int(idx))] = (
                task_id,
                channel,
                ref,
                task_path,
            )
        for call_id, intent, result, resolution in data["calls"]:
            index.calls[call_id] = ToolCallEntry(intent, result, resolution)
        return index

    def artifacts(self) -> set[str]:
        found = {ref["artifact"] for ref in self.blobs.values() if "artifact" in ref}
        for entries in self.checkpoints.values():
            for stored in entries.values():
                found.update(r["artifact"] for r in (stored.checkpoint, stored.metadata) if "artifact" in r)
        for pending in self.writes.values():
            found.update(w[2]["artifact"] for w in pending.values() if "artifact" in w[2])
        return found


def _version(value: Any) -> Any:
    return value if isinstance(value, str | int | float) else str(value)
