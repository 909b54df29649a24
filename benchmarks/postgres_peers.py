"""Per tool step on PostgreSQL, handshake against its peers on the same server, at equal
durability (synchronous_commit on), in the same run, interleaved round by round.

    python benchmarks/postgres_peers.py [--size full|quick|smoke] [--venv DIR] [--no-install]

- handshake: one read_file tool-call boundary through the real runner on a PostgreSQL root
  (benchmarks/postgres_boundary.py's; one synchronous commit);
- LangGraph: a super-step with a tool through PostgresSaver (langgraph-checkpoint-postgres) on
  a connection of its own, autocommit, synchronous_commit on: `put_writes` of the tool's
  result, then `put` of the next checkpoint; and `put` alone, timed inside those steps;
- DBOS: a workflow of one step, its system database on the same server.
- bare INSERT+COMMIT of a journal-sized line, for scale.
Ratios: the peer's time over handshake's, per round (above 1: handshake's step is faster).
No targets: the issue asks for the figures side by side.

The peers run in their own environment (benchmarks/peers/requirements.txt, pinned), made on
first use (benchmarks/peer_steps.py's `ensure_venv`); without it their rows say why.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boundary import read_boundary
from common import (
    Context,
    Row,
    interleave,
    median,
    peers_venv,
    per_round_ratio,
    postgres_server,
    print_rows,
    row,
    server_description,
    skipped,
)
from peer_steps import Peers, ensure_venv
from postgres_boundary import Bare, open_root

SUITE = "postgres-peers"
OURS = "handshake read tool step (PostgreSQL)"
LANGGRAPH = "LangGraph PostgresSaver super-step (put_writes + put)"
PUT = "LangGraph PostgresSaver put alone"
DBOS = "DBOS workflow of one step (PostgreSQL)"


def skipped_rows(reason: str) -> list[Row]:
    return [skipped(SUITE, name, reason) for name in (OURS, LANGGRAPH, PUT, DBOS)]


def rows(ctx: Context, steps: int | None = None, rounds: int | None = None) -> list[Row]:
    if ctx.peers_venv is None:
        return skipped_rows("the peers are turned off (--no-peers)")
    python, why = ensure_venv(ctx.peers_venv, ctx.install_peers)
    if python is None:
        return skipped_rows(why or "no peers' environment")
    try:
        server = postgres_server(ctx)
    except Exception as exc:  # no server to be had here: say so, never fail the driver
        return skipped_rows(f"no PostgreSQL server: {exc}"[:300])
    steps = steps or ctx.pick(100, 40, 10)
    dbos_steps = max(5, steps // 4)
    rounds = rounds or ctx.pick(9, 6, 2)
    tmp = ctx.fresh_dir("postgres-peers")
    ours_url, langgraph_url = server.create_database(), server.create_database()
    dbos_url = server.url(f"handshake_bench_dbos_{ctx.tmp.name}".replace("-", "_").lower())
    store = open_root(ours_url)
    ours = read_boundary(tmp, store)
    bare = Bare(ours_url, tmp)
    peers = Peers(python, tmp / "peers")
    puts: list[float] = []
    lg_cpu: list[float] = []
    dbos_cpu: list[float] = []
    try:
        info = peers.ask("info-pg", url=langgraph_url, dbos_url=dbos_url)
        ours.measure(5)
        ours.cpu.clear()

        def langgraph() -> float:
            answer = peers.ask("langgraph-pg", steps=steps, url=langgraph_url)
            puts.append(answer["put"])
            lg_cpu.append(answer["cpu_per_step"])
            return float(answer["per_step"])

        def dbos() -> float:
            answer = peers.ask("dbos-pg", steps=dbos_steps, url=dbos_url)
            dbos_cpu.append(answer["cpu_per_step"])
            return float(answer["per_step"])

        times = interleave(
            {
                "handshake": lambda: ours.measure(steps),
                "langgraph": langgraph,
                "dbos": dbos,
                "bare": lambda: bare.insert_commit(steps),
            },
            rounds,
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        return skipped_rows(f"the peers failed: {exc}"[:300])
    finally:
        peers.close()
        ours.close()
        bare.close()
        store.close()
    described = server_description(ours_url)
    for url in (ours_url, langgraph_url, dbos_url):
        server.drop_database(url)
    us = 1e6
    hs = median(times["handshake"])
    versions = info.get("versions", {})
    lg, db = info.get("langgraph", {}), info.get("dbos", {})
    return [
        row(
            SUITE,
            OURS,
            hs * us,
            "us",
            baseline="INSERT+COMMIT",
            baseline_value=median(times["bare"]) * us,
            ratio=median(per_round_ratio(times["handshake"], times["bare"])),
            samples=times["handshake"],
            note=(
                f"CPU {median(ours.cpu) * us:.0f} us; {rounds} rounds of {steps} steps (DBOS: {dbos_steps}); "
                f"ratios below: the peer's time / handshake's, per round; {described}"
            ),
        ),
        row(
            SUITE,
            LANGGRAPH,
            median(times["langgraph"]) * us,
            "us",
            baseline=OURS,
            baseline_value=hs * us,
            ratio=median(per_round_ratio(times["langgraph"], times["handshake"])),
            samples=times["langgraph"],
            note=(
                f"langgraph-checkpoint-postgres {versions.get('langgraph-checkpoint-postgres')}, "
                f"psycopg {versions.get('psycopg')}; its connection: synchronous_commit="
                f"{lg.get('synchronous_commit')}, fsync={lg.get('fsync')}; CPU {median(lg_cpu) * us:.0f} us"
            ),
        ),
        row(
            SUITE,
            PUT,
            median(puts) * us,
            "us",
            baseline=OURS,
            baseline_value=hs * us,
            ratio=median(puts) / hs,
            samples=puts,
            note="timed inside the super-steps above: the checkpoint's write alone",
        ),
        row(
            SUITE,
            DBOS,
            median(times["dbos"]) * us,
            "us",
            baseline=OURS,
            baseline_value=hs * us,
            ratio=median(per_round_ratio(times["dbos"], times["handshake"])),
            samples=times["dbos"],
            note=(
                f"dbos {versions.get('dbos')}, its system database on the same server "
                f"(synchronous_commit={db.get('synchronous_commit')}); CPU {median(dbos_cpu) * us:.0f} us"
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("full", "quick", "smoke"), default="quick")
    parser.add_argument("--venv", type=Path, default=peers_venv())
    parser.add_argument("--no-install", action="store_true", help="do not make the peers' environment")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(args.size, Path(tmp), peers_venv=args.venv, install_peers=not args.no_install)
        print_rows(rows(ctx))


if __name__ == "__main__":
    main()
