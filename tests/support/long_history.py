"""A session of many records, written through the real session writer (the lock, the journal,
checkpoints in the pack) as a runner would, but without a model or tools running: turns of a
streamed answer and one read_file call each, a checkpoint every few turns, and a last turn cut
short mid-stream by a "crash" (the writer closes without an ending record, as a SIGKILL
leaves it: the session is INTERRUPTED)."""

from __future__ import annotations

from pathlib import Path

from handshake_cli.engine.jobs import Job, Limits, ModelSpec, ScriptedTurn, ToolSpec
from handshake_cli.engine.tools.gate import idempotency_key, tool_call_id
from handshake_cli.engine.writer import open_writer
from handshake_cli.paths import Paths
from handshake_cli.session.state import ACTIVE, initial_head
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.store import SessionDir, Store

READ = ToolSpec(name="read_file", side_effect="read", idempotency="idempotent", builtin="read_file")
WORDS = ("the", "model", "streams", "its", "answer", "in", "small", "words")


def write_long_session(root: Path, session_id: str, records: int, *, chunks_per_turn: int = 12) -> SessionDir:
    """A session of exactly `records` records, its last turn in flight."""
    job = Job(
        name="long-history",
        source=str(root / "job.toml"),
        user="read the notes",
        model=ModelSpec(
            provider="scripted", id="scripted", deterministic=True, script=(ScriptedTurn("done"),)
        ),
        tools=(READ,),
        limits=Limits(max_turns=1_000_000),
    )
    store = FilesystemStore(Paths(root))
    session_id = store.create_session(
        {"job": job.to_config(), "workspace": str(root)},
        {
            "job_name": job.name,
            "model": {"provider": "scripted", "id": "scripted"},
            "prompt": {"user": job.user},
        },
        head_for=initial_head,
        session_id=session_id,
    )
    with open_writer(store, session_id, job=job, environ={}) as writer:
        writer.transition(ACTIVE, "run started")
        turn = 0

        def append(kind: str, data: dict[str, object]) -> None:
            writer.append(kind, data, sync=False)

        while True:
            left = records - writer.last_seq
            turn += 1
            append("model.request", {"turn": turn, "message_count": len(writer.thread.messages)})
            if left <= chunks_per_turn + 5:  # the last turn: chunks up to `records`, then the crash
                for index in range(records - writer.last_seq):
                    append("model.chunk", chunk(turn, index))
                break
            for index in range(chunks_per_turn):
                append("model.chunk", chunk(turn, index))
            call_id = tool_call_id(turn, 0)
            args = {"path": f"notes/{turn % 50}.md"}
            message = {
                "role": "assistant",
                "content": "".join(f"{WORDS[i % 8]} " for i in range(chunks_per_turn)),
                "tool_calls": [{"tool_call_id": call_id, "tool": READ.name, "args": args}],
            }
            append("model.completed", {"turn": turn, "message": message, "finish_reason": "tool_calls"})
            append(
                "tool.intent",
                {
                    "tool_call_id": call_id,
                    "tool": READ.name,
                    "args": args,
                    "idempotency_key": idempotency_key(session_id, call_id, READ.name, args),
                    "side_effect": READ.side_effect,
                    "idempotency": READ.idempotency,
                },
            )
            append("tool.result", {"tool_call_id": call_id, "tool": READ.name, "output": {"content": "ok\n"}})
            if turn % 40 == 0 and records - writer.last_seq > chunks_per_turn + 8:
                writer.checkpoint("tool call completed")
        writer.sync()
    return Store(Paths(root)).session(session_id)


def chunk(turn: int, index: int) -> dict[str, object]:
    return {"turn": turn, "index": index, "count": 1, "text": f"{WORDS[index % 8]} "}
