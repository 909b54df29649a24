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
- {"op": "langgraph-pg", "steps": N, "url": URL} and {"op": "dbos-pg", "steps": N, "url": URL}:
  the same on PostgreSQL (benchmarks/postgres_peers.py): LangGraph's PostgresSaver on a
  connection of its own (autocommit, synchronous_commit on), which answers "put" too (seconds
  per `put` alone), and DBOS with its system database on that server;
- {"op": "info-pg", "url": URL}: versions, and the settings the PostgreSQL peers run with;
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
PG_PEERS = ("langgraph-checkpoint", "langgraph-checkpoint-postgres", "dbos", "psycopg")


class LangGraph:
    def __init__(self, directory: Path, url: str | None = None) -> None:
        from langgraph.checkpoint.base import empty_checkpoint
        from langgraph.checkpoint.base.id import uuid6

        self.uuid6 = uuid6  # time-ordered, as LangGraph makes checkpoint ids
        self.url = url
        self.saver: Any
        if url is None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            self.path = directory / "langgraph.sqlite"
            self.conn: Any = sqlite3.connect(str(self.path), check_same_thread=False)
            self.saver = SqliteSaver(self.conn)
            self.saver.setup()
            self.conn.execute("PRAGMA synchronous=FULL")
        else:  # the connection PostgresSaver's documentation asks for
            import psycopg
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import dict_row

            self.conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
            self.conn.execute("SET synchronous_commit TO on")
            self.saver = PostgresSaver(self.conn)
            self.saver.setup()
        self.put_seconds = 0.0
        self.thread = "bench"
        self.checkpoint: dict[str, Any] = empty_checkpoint()
        self.checkpoint["channel_values"] = {"messages": [{"role": "user", "content": "go"}]}
        self.config: dict[str, Any] = {"configurable": {"thread_id": self.thread, "checkpoint_ns": ""}}
        self.config = self.saver.put(self.config, self.checkpoint, {"source": "input", "step": 0}, {})
        self.steps = 0

    def settings(self) -> dict[str, Any]:
        if self.url is not None:
            return postgres_settings(self.conn)
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
        start = time.perf_counter()
        self.config = self.saver.put(
            self.config, checkpoint, {"source": "loop", "step": n}, {"messages": n + 1}
        )
        self.put_seconds += time.perf_counter() - start
        self.checkpoint = checkpoint

    def get_tuple(self) -> float:
        config = {"configurable": {"thread_id": self.thread, "checkpoint_ns": ""}}
        start = time.perf_counter()
        for _ in range(20):
            self.saver.get_tuple(config)
        return (time.perf_counter() - start) / 20


def postgres_settings(conn: Any) -> dict[str, Any]:
    """What a PostgreSQL peer's durability depends on, as its own connection sees it."""
    found = {}
    for name in ("server_version", "synchronous_commit", "fsync"):
        row = conn.execute(f"SHOW {name}").fetchone()
        found[name] = next(iter(row.values())) if isinstance(row, dict) else row[0]
    return found


class Dbos:
    def __init__(self, directory: Path, url: str | None = None) -> None:
        from dbos import DBOS

        self.path = directory / "dbos.sqlite"
        self.url = url
        config: Any = {
            "name": "handshake-bench",
            "system_database_url": url or f"sqlite:///{self.path}",
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
        if self.url is not None:
            import psycopg

            with psycopg.connect(self.url) as pg:
                return postgres_settings(pg)
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

    def peer(name: str, url: str | None = None) -> Any:
        if name not in peers:
            kind = LangGraph if name.startswith("langgraph") else Dbos
            peers[name] = kind(directory, url) if name.endswith("-pg") else kind(directory)
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
            elif op == "info-pg":
                answer = {
                    "python": sys.version.split()[0],
                    "versions": {name: metadata.version(name) for name in PG_PEERS},
                    "langgraph": peer("langgraph-pg", command["url"]).settings(),
                    "dbos": peer("dbos-pg", command["dbos_url"]).settings(),
                }
            else:
                one = peer(op, command.get("url"))
                put_before = getattr(one, "put_seconds", 0.0)
                answer = timed(one, int(command["steps"]))
                if op.startswith("langgraph"):
                    answer["put"] = (one.put_seconds - put_before) / int(command["steps"])
                    answer["get_tuple"] = one.get_tuple()
                    answer["checkpoints"] = one.steps + 1
        except Exception as exc:  # reported to the driver, which shows it as the row's reason
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
