"""HandshakeSaver against LangGraph's SqliteSaver at equal durability (synchronous=FULL: a
sync per commit), on the same machine in the same run (issue 15):

- a super-step: `put_writes` (one task's write) then `put` (the checkpoint), N times;
- `get_tuple` of the newest checkpoint of that N-checkpoint thread;
- a cold open: a new saver (a new connection) and that first `get_tuple`.

    python benchmarks/langgraph_saver.py [--checkpoints 1000] [--root DIR]

Prints one JSON object: milliseconds per operation for each saver, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver

from handshake_cli.langgraph import HandshakeSaver

THREAD = "bench"


def fill(saver: BaseCheckpointSaver[Any], count: int) -> float:
    """`count` super-steps; seconds per step."""
    config: Any = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}
    version = None
    checkpoint = empty_checkpoint()
    started = time.perf_counter()
    for step in range(count):
        checkpoint = empty_checkpoint()
        version = saver.get_next_version(version, None)
        checkpoint["channel_values"] = {"counter": step, "note": f"step {step}"}
        checkpoint["channel_versions"] = {"counter": version, "note": version}
        if step:
            saver.put_writes(config, [("counter", step)], f"task-{step}")
        config = saver.put(
            config, checkpoint, {"source": "loop", "step": step}, {"counter": version, "note": version}
        )
    return (time.perf_counter() - started) / count


def newest(saver: BaseCheckpointSaver[Any], repeat: int) -> float:
    config: Any = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}
    started = time.perf_counter()
    for _ in range(repeat):
        assert saver.get_tuple(config) is not None
    return (time.perf_counter() - started) / repeat


def sqlite_saver(path: Path) -> SqliteSaver:
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA synchronous=FULL")
    return SqliteSaver(connection)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        root = Path(tmp)
        figures: dict[str, dict[str, float]] = {}
        sqlite = sqlite_saver(root / "bench.sqlite")
        figures["sqlite"] = {"super_step_ms": fill(sqlite, args.checkpoints) * 1000}
        figures["sqlite"]["get_tuple_ms"] = newest(sqlite, 200) * 1000
        sqlite.conn.close()
        started = time.perf_counter()
        cold = sqlite_saver(root / "bench.sqlite")
        newest(cold, 1)
        figures["sqlite"]["cold_open_ms"] = (time.perf_counter() - started) * 1000
        handshake = HandshakeSaver(root / "hs")
        figures["handshake"] = {"super_step_ms": fill(handshake, args.checkpoints) * 1000}
        figures["handshake"]["get_tuple_ms"] = newest(handshake, 200) * 1000
        handshake.close()
        started = time.perf_counter()
        with HandshakeSaver(root / "hs") as cold_hs:
            newest(cold_hs, 1)
            figures["handshake"]["cold_open_ms"] = (time.perf_counter() - started) * 1000
    ratios = {k: figures["handshake"][k] / figures["sqlite"][k] for k in figures["sqlite"]}
    print(json.dumps({"checkpoints": args.checkpoints, **figures, "handshake_over_sqlite": ratios}, indent=1))


if __name__ == "__main__":
    main()
