"""HandshakeSaver against LangGraph's SqliteSaver at equal durability (synchronous=FULL: a
sync per commit), on the same machine in the same run (issue 15):

- a super-step: `put_writes` (one task's write) then `put` (the checkpoint), N times, the
  two savers taking turns a block of steps at a time (which one goes first alternating), so
  that a change in the machine's load (other processes, their syncs) falls on both alike;
  `super_step_ms` is each saver's total over its steps, and `block_ratio_median` the median
  of the blocks' handshake-over-sqlite ratios;
- a graph as LangGraph runs it: a fan-out of three nodes and a join, invoked `--invokes`
  times on one thread each (default durability, "async": LangGraph calls `put_writes` and
  `put` from its executor's threads, several at once), the savers taking turns an invoke at
  a time; `graph_invoke_ms` per invoke;
- `get_tuple` of the newest checkpoint of that N-checkpoint thread;
- a cold open: a new saver (a new connection) and that first `get_tuple`.

    python benchmarks/langgraph_saver.py [--checkpoints 1000] [--root DIR] [--postgres]

Prints one JSON object: milliseconds per operation for each saver, and the ratios.
`--postgres`: both savers on a PostgreSQL server the run starts (tests/support/postgres.py,
fsync and synchronous_commit on), each in a database of its own: HandshakeSaver on the
database's URL against LangGraph's PostgresSaver (langgraph-checkpoint-postgres, which
benchmarks/peers/requirements.txt pins; the connection its documentation asks for).
"""

from __future__ import annotations

import argparse
import json
import operator
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from handshake_cli.langgraph import HandshakeSaver

THREAD = "bench"


class Filler:
    """Super-steps on one saver's thread, a block at a time."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self.saver = saver
        self.config: Any = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}
        self.version: Any = None
        self.step = 0
        self.seconds = 0.0

    def block(self, count: int) -> float:
        """`count` more super-steps; their seconds."""
        saver = self.saver
        started = time.perf_counter()
        for _ in range(count):
            step = self.step
            checkpoint = empty_checkpoint()
            self.version = version = saver.get_next_version(self.version, None)
            checkpoint["channel_values"] = {"counter": step, "note": f"step {step}"}
            checkpoint["channel_versions"] = {"counter": version, "note": version}
            if step:
                saver.put_writes(self.config, [("counter", step)], f"task-{step}")
            self.config = saver.put(
                self.config,
                checkpoint,
                {"source": "loop", "step": step},
                {"counter": version, "note": version},
            )
            self.step += 1
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        return elapsed


class FanOut(TypedDict):
    steps: Annotated[list[str], operator.add]


def fan_out_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    graph = StateGraph(FanOut)
    graph.add_node("start", lambda state: {"steps": ["start"]})
    for name in ("a", "b", "c"):
        graph.add_node(name, lambda state, name=name: {"steps": [name]})
        graph.add_edge("start", name)
    graph.add_node("join", lambda state: {"steps": ["join"]})
    graph.add_edge(["a", "b", "c"], "join")
    graph.add_edge(START, "start")
    graph.add_edge("join", END)
    return graph.compile(checkpointer=saver)


def invokes(sqlite: BaseCheckpointSaver[Any], handshake: BaseCheckpointSaver[Any], count: int) -> list[float]:
    """`count` invokes of the fan-out graph on each saver, in turns; seconds per invoke, each."""
    graphs = [fan_out_graph(sqlite), fan_out_graph(handshake)]
    spent = [0.0, 0.0]
    config: Any = {"configurable": {"thread_id": "graph"}}
    for turn in range(count):
        for which in (0, 1) if turn % 2 == 0 else (1, 0):
            started = time.perf_counter()
            graphs[which].invoke({"steps": []}, config)
            spent[which] += time.perf_counter() - started
    return [s / count for s in spent]


def fill(sqlite: Filler, handshake: Filler, count: int, block: int) -> list[float]:
    """`count` super-steps on each, in turns of `block`; each block's handshake/sqlite ratio."""
    ratios = []
    for turn in range((count + block - 1) // block):
        size = min(block, count - turn * block)
        if turn % 2:
            spent_hs, spent_sqlite = handshake.block(size), sqlite.block(size)
        else:
            spent_sqlite, spent_hs = sqlite.block(size), handshake.block(size)
        ratios.append(spent_hs / spent_sqlite)
    return ratios


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


class Peers:
    """Where the two savers keep their threads: SQLite and a directory, or two databases."""

    def __init__(self, root: Path, postgres: bool) -> None:
        self.root = root
        self.server: Any = None
        self.name = "sqlite"
        if postgres:
            from tests.support.postgres import PostgresServer

            self.server = PostgresServer()
            self.server.start()
            self.peer_url, self.handshake_url = self.server.create_database(), self.server.create_database()
            self.name = "postgres"

    def peer(self) -> Any:
        if self.server is None:
            return sqlite_saver(self.root / "bench.sqlite")
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row

        conn = psycopg.connect(self.peer_url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        conn.execute("SET synchronous_commit TO on")
        saver = PostgresSaver(conn)
        saver.setup()
        return saver

    def handshake(self) -> HandshakeSaver:
        return HandshakeSaver(self.root / "hs" if self.server is None else self.handshake_url)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument("--block", type=int, default=50, help="super-steps per turn")
    parser.add_argument("--invokes", type=int, default=100, help="invokes of the fan-out graph")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--postgres", action="store_true", help="both savers on a PostgreSQL server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        peers = Peers(Path(tmp), args.postgres)
        try:
            figures, ratios = measure(peers, args)
        finally:
            peers.stop()
    name = peers.name
    over = {k: figures["handshake"][k] / figures[name][k] for k in figures[name]}
    over["block_ratio_median"] = statistics.median(ratios)
    print(json.dumps({"checkpoints": args.checkpoints, **figures, f"handshake_over_{name}": over}, indent=1))


def measure(peers: Peers, args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], list[float]]:
    figures: dict[str, dict[str, float]] = {}
    names = (peers.name, "handshake")
    peer = peers.peer()
    handshake = peers.handshake()
    fillers = Filler(peer), Filler(handshake)
    ratios = fill(*fillers, args.checkpoints, args.block)
    for name, filler in zip(names, fillers, strict=True):
        figures[name] = {"super_step_ms": filler.seconds / args.checkpoints * 1000}
    per_invoke = invokes(peer, handshake, args.invokes)
    for name, seconds in zip(names, per_invoke, strict=True):
        figures[name]["graph_invoke_ms"] = seconds * 1000
    figures[peers.name]["get_tuple_ms"] = newest(peer, 200) * 1000
    figures["handshake"]["get_tuple_ms"] = newest(handshake, 200) * 1000
    peer.conn.close()
    handshake.close()
    started = time.perf_counter()
    cold = peers.peer()
    newest(cold, 1)
    figures[peers.name]["cold_open_ms"] = (time.perf_counter() - started) * 1000
    cold.conn.close()
    started = time.perf_counter()
    with peers.handshake() as cold_hs:
        newest(cold_hs, 1)
        figures["handshake"]["cold_open_ms"] = (time.perf_counter() - started) * 1000
    return figures, ratios


if __name__ == "__main__":
    main()
