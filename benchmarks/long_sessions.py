"""Long histories: what reading a session costs as it grows, against baselines measured in the
same run, and how many bytes a session takes per turn.

    python benchmarks/long_sessions.py [--sizes 10000,100000,1000000] [--turns 1000] [--runs 7] [--dir DIR]

- `handshake inspect SESSION --json` and `handshake recover SESSION --dry-run` beyond start-up:
  the wall time of each minus that of `handshake --version`, interleaved run by run (target
  <= 50 ms, flat), on sessions of N records built with benchmarks/recovery.py's generator (real
  writers, real checkpoints; interrupted mid-stream, 500 records after the newest checkpoint)
  and on a finished session of --turns turns made by the runner (`launch.start`, as `handshake
  run` does) from a scripted job of one read_file call per turn;
- in-process, on that session: rebuilding its latest state (`recovery.view.rebuild`, target
  <= 5 ms), against a full verify of its journal; loading its newest checkpoint (target <= 1 ms,
  and the same at N records);
- the history `inspect SESSION` shows, on that session: told from the newest checkpoint
  (against rebuilding it, target <= 1.5x) and found by its records' bytes, as for checkpoints
  that predate the story (against a full verify, no target);
- session bytes per turn (every file of the session) at 100 and --turns turns, and their
  ratio: linear growth keeps it near 1 (or under: the fixed part is spread over more turns).
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    READ_TOOL,
    Context,
    Row,
    cli_env,
    entry,
    interleave,
    load_checkpoint,
    median,
    newest_checkpoint,
    plan,
    print_rows,
    read_call,
    rebuild,
    row,
    session_dir,
    store_of,
    tool_turns,
    wall,
    write_job,
)

SUITE = "history"


# -- the sessions (built once per run, shared with recovery.py's rows) ----------------------------


def records_session(ctx: Context, n: int) -> Any:
    """A session of n records (benchmarks/recovery.py's `build`), built once per run."""
    from recovery import build

    key = f"records-{n}"
    if key not in ctx.cache:
        tmp = ctx.cache.setdefault("records-dir", ctx.fresh_dir("records"))
        started = time.perf_counter()
        ctx.cache[key] = build(tmp, n, tail=500, chunks_per_turn=200, checkpoint_every=50_000, mid_turn=False)
        print(f"  built a session of {n:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return ctx.cache[key]


def turns_session(ctx: Context, turns: int) -> Any:
    """A finished session of `turns` turns of one read_file call, made by the runner; built once."""
    from handshake_cli.engine import launch
    from handshake_cli.engine.jobs import load_job
    from handshake_cli.paths import Paths
    from handshake_cli.storage.filesystem import FilesystemStore

    key = f"turns-{turns}"
    if key not in ctx.cache:
        tmp = ctx.cache.setdefault("turns-dir", ctx.fresh_dir("turns"))
        job = load_job(str(write_job(tmp / "jobs", tool_turns(turns, 1, read_call), [READ_TOOL], key)))
        workspace = tmp / f"ws-{turns}"
        workspace.mkdir()
        (workspace / "f.txt").write_text("some content\n")
        started = time.perf_counter()
        result = launch.start(job, FilesystemStore(Paths(tmp / "root")), workspace=workspace, session_id=key)
        assert result.state == "COMPLETED", result
        print(f"  ran a session of {turns:,} turns in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ctx.cache[key] = session_dir(tmp / "root", key)
    return ctx.cache[key]


def session_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- the cases --------------------------------------------------------------------------------


def beyond_version(ctx: Context, label: str, session: Any, runs: int) -> list[Row]:
    root = session.path.parent.parent
    env = cli_env(root)
    sid = session.session_id
    cmd = entry()
    cases = {
        "--version": lambda: wall([*cmd, "--version"], env),
        "inspect": lambda: wall([*cmd, "inspect", sid, "--json", "--root", str(root)], env),
        "recover": lambda: wall([*cmd, "recover", sid, "--dry-run", "--root", str(root)], env, check=False),
    }
    for case in cases.values():
        case()  # warm-up
    said = subprocess.run(
        [*cmd, "recover", sid, "--dry-run", "--root", str(root)], env=env, capture_output=True, text=True
    )
    first = (said.stdout.strip() or said.stderr.strip() or "nothing").splitlines()[0][:100]
    plan = f"recover --dry-run said (exit {said.returncode}): {first}"
    times = interleave(cases, runs)
    version = times["--version"]
    out = []
    for name, title in (("inspect", "inspect --json"), ("recover", "recover --dry-run")):
        beyond = [(t - v) * 1e3 for t, v in zip(times[name], version, strict=True)]
        out.append(
            row(
                SUITE,
                f"{title}, {label}",
                median(beyond),
                "ms",
                baseline="--version",
                baseline_value=median(version) * 1e3,
                at_most=50,
                on="value",
                samples=beyond,
                note=f"wall time beyond --version, {runs} interleaved runs" if not out else plan,
            )
        )
    return out


def timed(fn: Any, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def full_verify(session: Any) -> None:
    from handshake_cli.storage.journal.scan import scan

    scan(session.journal, session.session_id, decode=False)


def in_process(label: str, session: Any, repeat: int, *, with_rebuild: bool) -> list[Row]:
    ref = newest_checkpoint(session)
    out = []
    if with_rebuild:
        scans = timed(lambda: full_verify(session), repeat)
        planned = timed(lambda: plan(rebuild(session, lazy=True)), repeat)
        rebuilt = timed(lambda: rebuild(session).thread.messages, repeat)
        for name, samples, target, note in (
            (
                f"rebuild latest state and plan, {label}",
                planned,
                5.0,
                "as recover --dry-run does it: the newest checkpoint's own record, the tail after it; "
                "the job and the thread's history read only when used",
            ),
            (
                f"rebuild latest state with its whole thread, {label}",
                rebuilt,
                None,
                "as a resume needs it (the next model request sends the thread); no target",
            ),
        ):
            out.append(
                row(
                    SUITE,
                    name,
                    median(samples) * 1e3,
                    "ms",
                    baseline="full verify of its journal",
                    baseline_value=median(scans) * 1e3,
                    ratio=median(samples) / median(scans),
                    at_most=target,
                    on="value",
                    samples=[t * 1e3 for t in samples],
                    note=f"in-process, median of {repeat} runs; {note}",
                )
            )
    for lazy, name, target in (
        (True, "load newest checkpoint", 1.0),
        (False, "load newest checkpoint with its thread", None),
    ):
        loads = timed(lambda lazy=lazy: load_checkpoint(session, ref, lazy=lazy), repeat)
        out.append(
            row(
                SUITE,
                f"{name}, {label}",
                median(loads) * 1e3,
                "ms",
                at_most=target,
                on="value",
                samples=[t * 1e3 for t in loads],
            )
        )
    return out


def history_rows(label: str, session: Any, repeat: int) -> list[Row]:
    """The history `inspect SESSION` shows, for a long session: told from its newest
    checkpoint's `story` and the tail (against rebuilding the session, which inspect does
    anyway), and found by its records' bytes, as for checkpoints written before bodies kept
    it (against a full verify of the journal, what a scan of every record costs)."""
    from handshake_cli.recovery.view import rebuild as view_of
    from handshake_cli.session.story_found import fold_found

    store, session_id = store_of(session), session.session_id
    rebuilt = timed(lambda: view_of(store, session_id, lazy_thread=True), repeat)
    told = timed(lambda: view_of(store, session_id, lazy_thread=True).story.told(), repeat)
    view = view_of(store, session_id, lazy_thread=True)
    found = timed(lambda: fold_found(store, session_id, view.records), repeat)
    scans = timed(lambda: full_verify(session), repeat)
    return [
        row(
            SUITE,
            f"rebuild and tell the history, {label}",
            median(told) * 1e3,
            "ms",
            baseline="rebuild alone",
            baseline_value=median(rebuilt) * 1e3,
            ratio=median(told) / median(rebuilt),
            at_most=1.5,
            samples=[t * 1e3 for t in told],
            note=f"in-process, median of {repeat} runs: the newest checkpoint's story and the tail",
        ),
        row(
            SUITE,
            f"history found by its records' bytes, {label}",
            median(found) * 1e3,
            "ms",
            baseline="full verify of its journal",
            baseline_value=median(scans) * 1e3,
            ratio=median(found) / median(scans),
            samples=[t * 1e3 for t in found],
            note="sessions whose checkpoints predate the story: grows with the journal; no target",
        ),
    ]


def bytes_rows(ctx: Context, turns: int | None = None) -> list[Row]:
    small, large = ctx.pick(100, 100, 20), turns or ctx.pick(1000, 1000, 200)
    per_turn = {n: session_bytes(turns_session(ctx, n).path) / n for n in (small, large)}
    return [
        row(
            "bytes",
            f"session bytes per turn, {small:,} turns",
            per_turn[small],
            "bytes/turn",
            note="every file of the session (session.toml, head.json, journal), one read_file call a turn",
        ),
        row(
            "bytes",
            f"session bytes per turn, {large:,} turns",
            per_turn[large],
            "bytes/turn",
            baseline=f"bytes per turn at {small:,} turns",
            baseline_value=per_turn[small],
            ratio=per_turn[large] / per_turn[small],
            at_most=1.25,
            note="linear growth keeps the ratio near 1 (the issue sets no number: 1.25x here)",
        ),
    ]


def rows(
    ctx: Context, sizes: list[int] | None = None, turns: int | None = None, runs: int | None = None
) -> list[Row]:
    sizes = sizes or ctx.pick([10_000, 100_000, 1_000_000], [10_000, 100_000], [10_000])
    turns = turns or ctx.pick(1000, 1000, 200)
    runs = runs or ctx.pick(9, 5, 1)
    repeat = ctx.pick(25, 11, 3)
    out = []
    long = turns_session(ctx, turns)
    # The floor every session pays: the command's start-up beyond --version (which loads
    # neither typer nor the command tree), on a session of one turn.
    out += beyond_version(ctx, "1-turn session (the start-up floor)", turns_session(ctx, 1), runs)
    out += beyond_version(ctx, f"{turns:,}-turn session", long, runs)
    for n in sizes:
        out += beyond_version(ctx, f"{n:,} records", records_session(ctx, n).session, runs)
    if len(sizes) > 1:
        for title in ("inspect --json", "recover --dry-run"):
            low = next(r for r in out if r.name == f"{title}, {min(sizes):,} records")
            high = next(r for r in out if r.name == f"{title}, {max(sizes):,} records")
            if low.value and high.value:
                out.append(
                    row(
                        SUITE,
                        f"{title}, {max(sizes):,} over {min(sizes):,} records",
                        high.value,
                        "ms",
                        baseline=f"at {min(sizes):,} records",
                        baseline_value=low.value,
                        ratio=high.value / low.value,
                        note="flat: the time beyond --version does not grow with the history",
                    )
                )
    out += in_process(f"{turns:,}-turn session", long, repeat, with_rebuild=True)
    out += in_process(
        f"{max(sizes):,} records", records_session(ctx, max(sizes)).session, repeat, with_rebuild=False
    )
    out += history_rows(f"{max(sizes):,} records", records_session(ctx, max(sizes)).session, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        ctx = Context("full", Path(tmp_name))
        print_rows(rows(ctx, sizes, args.turns, args.runs) + bytes_rows(ctx, args.turns))


if __name__ == "__main__":
    main()
