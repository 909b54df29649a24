"""The peers' side of benchmarks/peer_steps.py: runs in the peers' own virtual environment
(benchmarks/peers/requirements.txt), never imports handshake.

    python steps.py DIR

Reads one JSON command a line on stdin and answers each with one JSON line on stdout, so the
driver can interleave the peers with handshake round by round in one run:
- {"op": "info"}: versions, and the SQLite settings each peer runs with;
- {"op": "langgraph", "steps": N}: N super-steps with a tool through LangGraph's SqliteSaver
  (WAL, PRAGMA synchronous=FULL): `put_writes` of the tool's result, then `put` of the next
  checkpoint, whose messages grow by the tool call and its result as a thread does; answers
  {"per_step": seconds, "cpu_per_step": seconds, "get_tuple": seconds, "checkpoints": count};
- {"op": "dbos", "steps": N}: N runs of a DBOS workflow of one step on SQLite (DBOS's own
  settings: a rollback journal, synchronous at SQLite's default, FULL); answers
  {"per_step": seconds, "cpu_per_step": seconds};
- {"op": "quit"}.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

CONTENT = "some content\n"


class LangGraph:
    def __init__(self, directory: Path) -> None:
        from langgraph.checkpoint.base import empty_checkpoint
        from langgraph.checkpoint.base.id import uuid6
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.uuid6 = uuid6  # time-ordered, as LangGraph makes checkpoint ids

        self.path = directory / "langgraph.sqlite"
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        self.saver.setup()
        self.conn.execute("PRAGMA synchronous=FULL")
        self.thread = "bench"
        self.checkpoint: dict[str, Any] = empty_checkpoint()
        self.checkpoint["channel_values"] = {"messages": [{"role": "user", "content": "go"}]}
        self.config: dict[str, Any] = {"configurable": {"thread_id": self.thread, "checkpoint_ns": ""}}
        self.config = self.saver.put(self.config, self.checkpoint, {"source": "input", "step": 0}, {})
        self.steps = 0

    def settings(self) -> dict[str, Any]:
        return {
            "journal_mode": self.conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.conn.execute("PRAGMA synchronous").fetchone()[0],
        }

    def step(self) -> None:
        self.steps += 1
        n = self.steps
        call = {"id": f"call-{n}", "name": "read_file", "args": {"path": "f.txt"}}
        result = {"role": "tool", "tool_call_id": call["id"], "content": CONTENT}
        self.saver.put_writes(self.config, [("messages", [result])], task_id=str(uuid.uuid4()))
        messages = self.checkpoint["channel_values"]["messages"]
        messages.append({"role": "assistant", "content": "Reading.", "tool_calls": [call]})
        messages.append(result)
        checkpoint = {
            **self.checkpoint,
            "id": str(self.uuid6()),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "channel_versions": {"messages": n + 1},
        }
        self.config = self.saver.put(
            self.config, checkpoint, {"source": "loop", "step": n}, {"messages": n + 1}
        )
        self.checkpoint = checkpoint

    def get_tuple(self) -> float:
        config = {"configurable": {"thread_id": self.thread, "checkpoint_ns": ""}}
        start = time.perf_counter()
        for _ in range(20):
            self.saver.get_tuple(config)
        return (time.perf_counter() - start) / 20


class Dbos:
    def __init__(self, directory: Path) -> None:
        from dbos import DBOS

        self.path = directory / "dbos.sqlite"
        config: Any = {
            "name": "handshake-bench",
            "system_database_url": f"sqlite:///{self.path}",
            "run_admin_server": False,
            "log_level": "ERROR",
        }
        DBOS(config=config)

        @DBOS.step()
        def read_file(n: int) -> dict[str, Any]:
            return {"path": "f.txt", "content": CONTENT, "n": n}

        @DBOS.workflow()
        def tool_step(n: int) -> dict[str, Any]:
            return read_file(n)

        DBOS.launch()
        self.workflow = tool_step
        self.steps = 0

    def settings(self) -> dict[str, Any]:
        conn = sqlite3.connect(str(self.path))
        try:
            return {
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
            }
        finally:
            conn.close()

    def step(self) -> None:
        self.steps += 1
        result = self.workflow(self.steps)
        assert result["n"] == self.steps, result


def timed(peer: LangGraph | Dbos, steps: int) -> dict[str, float]:
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        peer.step()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"per_step": elapsed / steps, "cpu_per_step": cpu / steps}


def main() -> None:
    directory = Path(sys.argv[1])
    directory.mkdir(parents=True, exist_ok=True)
    peers: dict[str, Any] = {}

    def peer(name: str) -> Any:
        if name not in peers:
            peers[name] = LangGraph(directory) if name == "langgraph" else Dbos(directory)
            peers[name].step()  # warm-up
        return peers[name]

    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "quit":
                break
            if op == "info":
                answer: dict[str, Any] = {
                    "python": sys.version.split()[0],
                    "sqlite": sqlite3.sqlite_version,
                    "versions": {
                        name: metadata.version(name)
                        for name in ("langgraph-checkpoint", "langgraph-checkpoint-sqlite", "dbos")
                    },
                    "langgraph": peer("langgraph").settings(),
                    "dbos": peer("dbos").settings(),
                }
            else:
                answer = timed(peer(op), int(command["steps"]))
                if op == "langgraph":
                    answer["get_tuple"] = peers[op].get_tuple()
                    answer["checkpoints"] = peers[op].steps + 1
        except Exception as exc:  # reported to the driver, which shows it as the row's reason
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
