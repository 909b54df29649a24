"""What `inspect SESSION` adds for a LangGraph thread's session: the thread id, its
checkpoints and steps per namespace, the newest checkpoint's pending writes, and a summary
of each channel's newest stored value (its serializer type and size: values are LangGraph's
bytes, which handshake does not decode, and never needs LangGraph for)."""

from __future__ import annotations

from typing import Any

from handshake_cli.session.langgraph_thread import KIND, RECORD_TYPES, ThreadIndex
from handshake_cli.storage.contract import SessionStore


def thread_summary(store: SessionStore, session_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The summary for a LangGraph thread's session; None for any other session."""
    if config.get("kind") != KIND:
        return None
    thread_id = str((config.get(KIND) or {}).get("thread_id", ""))
    index = ThreadIndex(thread_id)
    steps: dict[tuple[str, str], int | None] = {}
    for record in store.scan(session_id, decode=RECORD_TYPES).records:
        index.apply(record)
        if record.type == "langgraph.checkpoint":
            steps[(record.data["checkpoint_ns"], record.data["checkpoint_id"])] = record.data.get("step")
    namespaces = []
    for ns, entries in sorted(index.checkpoints.items()):
        newest = max(entries, default=None)
        pending = index.writes.get((ns, newest), {}) if newest else {}
        namespaces.append(
            {
                "checkpoint_ns": ns,
                "checkpoints": len(entries),
                "newest_checkpoint": newest,
                "newest_step": steps.get((ns, newest)) if newest else None,
                "pending_writes": [
                    {"task_id": task_id, "channel": channel, "type": ref.get("type"), "bytes": _size(ref)}
                    for task_id, channel, ref, _ in pending.values()
                ],
            }
        )
    channels: dict[tuple[str, str], dict[str, Any]] = {}
    for (ns, channel, version), ref in index.blobs.items():
        channels[(ns, channel)] = {
            "checkpoint_ns": ns,
            "channel": channel,
            "version": version,
            "type": ref.get("type"),
            "bytes": _size(ref),
            "artifact_id": ref.get("artifact"),
        }
    return {
        "thread_id": thread_id,
        "checkpoints": sum(len(entries) for entries in index.checkpoints.values()),
        "namespaces": namespaces,
        "channels": list(channels.values()),
        "gated_calls": len(index.calls),
    }


def _size(ref: dict[str, Any]) -> int:
    if "b64" in ref:
        text = str(ref["b64"])
        return len(text) * 3 // 4 - text.count("=")
    return int(ref.get("bytes") or 0)
