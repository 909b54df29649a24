"""`recover` on a PostgreSQL root as a session's history grows: flat, not proportional to it.

    python benchmarks/postgres_recover.py [--size full|quick|smoke]

The sessions are the history suite's (benchmarks/recovery.py's `build` through the real
writer: turns with a read_file call, a checkpoint about every 50,000 records, then a model
turn cut mid-stream 500 records after the newest checkpoint), built on the filesystem once
per run and landed on the PostgreSQL server by the store's own `import_session` (what
`handshake import` does: every line's bytes kept, COPY). Each is interrupted: ACTIVE, no lease.
At 1k, 10k, 100k and 1M records (full; quick stops at 100k):
- `handshake recover SESSION --dry-run --root postgresql://...`: its wall time beyond that of
  `handshake --version`, every size interleaved run by run with --version; and the largest
  size over the smallest (target <= 1.5x: flat in history);
- in-process, what that command does once connected: `rebuild` (lazy, as the dry run plans)
  + `make_plan` through `PostgresStore`, checked to start from the newest checkpoint and to
  plan a resume of the cut turn, against the same on the filesystem store's copy of the
  session; the largest over the smallest (target <= 1.5x; the note gives the filesystem's);
- in-process, a session's size (`session_bytes`: the SIZE `inspect` lists, what gc reports
  reclaimed), the largest over the smallest (no target; it was a sum over every row).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Context,
    Row,
    cli_env,
    entry,
    interleave,
    median,
    per_round_ratio,
    postgres_server,
    print_rows,
    row,
    server_description,
    skipped,
    wall,
)

SUITE = "postgres-recover"


def land(store: Any, built: Any) -> str:
    """The built filesystem session imported into `store`; its id."""
    session = built.session
    if session.session_id not in store.session_ids():
        store.import_session(session.session_id, session.path.parent.parent)
    return str(session.session_id)


def plan_once(store: Any, session_id: str, built: Any) -> float:
    """Seconds to rebuild the session lazily and plan its recovery, as `recover --dry-run` does."""
    from handshake_cli.recovery.plan import make_plan
    from handshake_cli.recovery.view import rebuild

    start = time.perf_counter()
    view = rebuild(store, session_id, read_job=False, lazy_thread=True)
    plan = make_plan(view, [])
    elapsed = time.perf_counter() - start
    assert view.base is not None and view.base.seq == built.newest.seq, (view.base, built.newest)
    assert plan.action == "resume" and plan.reason == "interrupted", plan.as_json()
    assert view.last_seq == built.records and view.damage is None
    return elapsed


def timed(call: Any, *args: Any) -> float:
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def rows(ctx: Context, sizes: list[int] | None = None, runs: int | None = None) -> list[Row]:
    from long_sessions import records_session
    from recovery import store_of

    from handshake_cli.paths import Paths
    from handshake_cli.storage.open import open_store

    try:
        server = postgres_server(ctx)
    except Exception as exc:  # no server to be had here: say so, never fail the driver
        return [skipped(SUITE, "recover --dry-run", f"no PostgreSQL server: {exc}"[:300], "<= 1.5x")]
    sizes = sizes or ctx.pick([1_000, 10_000, 100_000, 1_000_000], [1_000, 10_000, 100_000], [1_000, 3_000])
    runs = runs or ctx.pick(9, 5, 2)
    url = server.create_database()
    store = open_store(Paths.resolve(url, {}))
    try:
        built = {n: records_session(ctx, n) for n in sizes}
        sessions = {}
        for n in sizes:
            started = time.perf_counter()
            sessions[n] = land(store, built[n])
            print(f"  imported {n:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        cmd, env = entry(), cli_env(ctx.tmp / "unused-root")
        cases = {"--version": lambda: wall([*cmd, "--version"], env)}
        for n in sizes:
            argv = [*cmd, "recover", sessions[n], "--dry-run", "--root", url]
            cases[f"cli {n}"] = lambda argv=argv: wall(argv, env)
            cases[f"plan {n}"] = lambda n=n: plan_once(store, sessions[n], built[n])
            cases[f"files {n}"] = lambda n=n: plan_once(store_of(built[n].session), sessions[n], built[n])
            cases[f"size {n}"] = lambda n=n: timed(store.session_bytes, sessions[n])
        for case in cases.values():
            case()  # warm-up: bytecode, the server's caches
        times = interleave(cases, runs)
        described = server_description(url)
    finally:
        store.close()
        server.drop_database(url)
    version = times["--version"]
    out: list[Row] = []
    cli: dict[int, float] = {}
    planned: dict[int, float] = {}
    for n in sizes:
        beyond = [(t - v) * 1e3 for t, v in zip(times[f"cli {n}"], version, strict=True)]
        cli[n] = median(beyond)
        out.append(
            row(
                SUITE,
                f"recover --dry-run, {n:,} records",
                cli[n],
                "ms",
                baseline="--version",
                baseline_value=median(version) * 1e3,
                samples=beyond,
                note=(
                    f"wall time beyond --version, {runs} interleaved runs; interrupted mid-stream, "
                    f"500 records after the newest checkpoint; {described}"
                    if n == sizes[0]
                    else ""
                ),
            )
        )
    files: dict[int, float] = {}
    for n in sizes:
        samples = [t * 1e3 for t in times[f"plan {n}"]]
        planned[n], files[n] = median(samples), median(times[f"files {n}"]) * 1e3
        out.append(
            row(
                SUITE,
                f"rebuild+plan in-process, {n:,} records",
                planned[n],
                "ms",
                baseline="the same on the filesystem store",
                baseline_value=files[n],
                ratio=median(per_round_ratio(times[f"plan {n}"], times[f"files {n}"])),
                samples=samples,
                note="through PostgresStore: the newest checkpoint's record and the tail after it"
                if n == sizes[0]
                else "",
            )
        )
    first, last = sizes[0], sizes[-1]
    growth = files[last] / files[first] if files[first] else 0.0
    sized = {n: median(times[f"size {n}"]) * 1e3 for n in sizes}
    out.append(
        row(
            SUITE,
            f"a session's size, {last:,} over {first:,} records",
            sized[last],
            "ms",
            baseline=f"the same at {first:,} records",
            baseline_value=sized[first],
            ratio=sized[last] / sized[first] if sized[first] else None,
            note="PostgresStore.session_bytes in-process: each journal segment's extent through the "
            "primary key, not every row's length",
        )
    )
    for name, figures in (("recover --dry-run", cli), ("rebuild+plan in-process", planned)):
        out.append(
            row(
                SUITE,
                f"{name}, {last:,} over {first:,} records",
                figures[last],
                "ms",
                baseline=f"the same at {first:,} records",
                baseline_value=figures[first],
                ratio=figures[last] / figures[first] if figures[first] else None,
                at_most=1.5,
                note=(
                    "flat in history: the cost follows the tail after the newest checkpoint"
                    if name == "recover --dry-run"
                    else f"the filesystem store's grows {growth:.2f}x on the same sessions: the newest "
                    f"checkpoint's thread grows with the turns before it ({built[first].messages:,} "
                    f"messages at {first:,} records, {built[last].messages:,} at {last:,}), the tail does not"
                ),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("full", "quick", "smoke"), default="quick")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print_rows(rows(Context(args.size, Path(tmp))))


if __name__ == "__main__":
    main()
