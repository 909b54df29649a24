"""Tool-call boundaries on a PostgreSQL root, through the real runner and session writer,
against the bare statements the durability rules require, on the same server in the same run.

    python benchmarks/postgres_boundary.py [--size full|quick|smoke]

The session is made and written as `handshake run --root postgresql://...` does it: the
store `open_store` gives for the URL (`PostgresStore`), `open_writer` over its lease, the
runner of benchmarks/boundary.py.
- read tool: the whole boundary (the intent, the tool, its result, the checkpoint: the intent
  and the result held by the writer and sent in the checkpoint's INSERT, committed with
  synchronous_commit on, one round trip) vs one bare INSERT of a journal-sized line + COMMIT,
  synchronous_commit on, one round trip (target <= 1.5x);
- builtin write_file: the whole boundary vs its bare sequence on PostgreSQL: INSERT+COMMIT
  (the intent, durable before the tool starts), create+write+fsync the file and fsync its
  directory, INSERT+COMMIT (the result) (target <= 1.5x);
- CPU per read boundary, this process's (no target: the server's share is not in it);
- a read boundary's appends alone: the records one boundary appends (its intent and result
  riding, its checkpoint committed), replayed through a session's appender with none of the
  runner's work, vs the same INSERT+COMMIT (no target: it shows how much of the boundary is
  the store's and how much the runner's).

Each round runs every case once, the order rotating; medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boundary import Boundary, read_boundary, write_boundary
from common import (
    CONTENT,
    LINE,
    Context,
    Row,
    boundary_appends,
    interleave,
    median,
    per_round_ratio,
    postgres_server,
    print_rows,
    replay_appends,
    row,
    server_description,
    skipped,
)

SUITE = "postgres-boundary"
BARE_TABLE = "CREATE TABLE bare_boundary (n bigint PRIMARY KEY, line bytea NOT NULL)"


def open_root(url: str) -> Any:
    """The store of a PostgreSQL root, as every command opens it."""
    from handshake_cli.paths import Paths
    from handshake_cli.storage.open import open_store

    return open_store(Paths.resolve(url, {}))


class Bare:
    """The least the server and the disk allow for what a boundary makes durable: bare
    INSERT+COMMIT round trips (autocommit, synchronous_commit on) of a journal-sized line."""

    def __init__(self, url: str, tmp: Path) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET synchronous_commit TO on")
        self.conn.execute(BARE_TABLE)
        self.n = 0
        self.files = tmp / "bare-files"
        self.files.mkdir(parents=True, exist_ok=True)

    def commit(self) -> None:
        self.n += 1
        self.conn.execute("INSERT INTO bare_boundary (n, line) VALUES (%s, %b)", (self.n, LINE))

    def insert_commit(self, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            self.commit()
        return (time.perf_counter() - start) / count

    def write_file(self, count: int) -> float:
        """INSERT+COMMIT, create+write+fsync a file and fsync its directory, INSERT+COMMIT."""
        dir_fd = os.open(self.files, os.O_RDONLY | os.O_DIRECTORY)
        start = time.perf_counter()
        for _ in range(count):
            self.commit()
            out = os.open(self.files / f"f{self.n}.txt", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(out, CONTENT.encode())
            os.fsync(out)
            os.close(out)
            os.fsync(dir_fd)
            self.commit()
        elapsed = time.perf_counter() - start
        os.close(dir_fd)
        return elapsed / count

    def close(self) -> None:
        self.conn.close()


class Appends:
    """A read boundary's appends, replayed on a session of their own (one boundary of `read`
    recorded first): the store's share of the boundary, without the runner's."""

    def __init__(self, tmp: Path, store: Any, read: Boundary) -> None:
        read.calls += 1
        call = {"tool_call_id": f"call-{read.calls}-0", "tool": "read_file", "args": {"path": "f.txt"}}
        self.appends = boundary_appends(read.runner, call)
        self.session = read_boundary(tmp / "appends", store)

    def measure(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            replay_appends(self.session.runner, self.appends)
        return (time.perf_counter() - start) / n

    def close(self) -> None:
        self.session.close()


def boundary_rows(ctx: Context, calls: int | None = None, rounds: int | None = None) -> list[Row]:
    try:
        server = postgres_server(ctx)
    except Exception as exc:  # no server to be had here: say so, never fail the driver
        return [skipped(SUITE, "read tool boundary", f"no PostgreSQL server: {exc}"[:300], "<= 1.5x")]
    rounds = rounds or ctx.pick(12, 8, 3)
    per = max(1, (calls or ctx.pick(600, 320, 30)) // rounds)
    tmp = ctx.fresh_dir("postgres-boundary")
    url = server.create_database()
    store = open_root(url)
    bare = Bare(url, tmp)
    read, write = read_boundary(tmp, store), write_boundary(tmp, store)
    (tmp / "appends").mkdir()
    appends = Appends(tmp, store, read)
    try:
        read.measure(5)  # warm-up: imports, the connections' first statements
        write.measure(5)
        appends.measure(5)
        bare.insert_commit(5)
        bare.write_file(2)
        read.cpu.clear()
        times = interleave(
            {
                "bare": lambda: bare.insert_commit(per),
                "read": lambda: read.measure(per),
                "appends": lambda: appends.measure(per),
                "bare write": lambda: bare.write_file(per),
                "write": lambda: write.measure(per),
            },
            rounds,
        )
    finally:
        read.close()
        write.close()
        appends.close()
        bare.close()
        store.close()
    described = server_description(url)
    server.drop_database(url)
    us = 1e6
    return [
        row(
            SUITE,
            "read tool boundary",
            median(times["read"]) * us,
            "us",
            baseline="INSERT+COMMIT",
            baseline_value=median(times["bare"]) * us,
            ratio=median(per_round_ratio(times["read"], times["bare"])),
            at_most=1.5,
            samples=times["read"],
            note=f"{rounds} rounds of {per} boundaries, interleaved; {described}",
        ),
        row(
            SUITE,
            "write_file boundary",
            median(times["write"]) * us,
            "us",
            baseline="bare write_file sequence on PostgreSQL",
            baseline_value=median(times["bare write"]) * us,
            ratio=median(per_round_ratio(times["write"], times["bare write"])),
            at_most=1.5,
            samples=times["write"],
            note="bare: INSERT+COMMIT, the file's write+fsync and its directory's fsync, INSERT+COMMIT",
        ),
        row(
            SUITE,
            "CPU per read boundary",
            median(read.cpu) * us,
            "us",
            samples=read.cpu,
            note="time.process_time() of this process (the server's CPU is not in it)",
        ),
        row(
            SUITE,
            "a read boundary's appends alone",
            median(times["appends"]) * us,
            "us",
            baseline="INSERT+COMMIT",
            baseline_value=median(times["bare"]) * us,
            ratio=median(per_round_ratio(times["appends"], times["bare"])),
            samples=times["appends"],
            note="its records (sizes as the boundary's) through the session's appender, no runner: "
            "the store's share of a read boundary",
        ),
    ]


def rows(ctx: Context) -> list[Row]:
    return boundary_rows(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("full", "quick", "smoke"), default="quick")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print_rows(rows(Context(args.size, Path(tmp))))


if __name__ == "__main__":
    main()
