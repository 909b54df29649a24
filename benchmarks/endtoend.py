"""A whole `handshake run`, as a user runs it (a subprocess), per tool call, start-up subtracted,
against the floor of what each call must make durable, measured in the same run.

    python benchmarks/endtoend.py [--turns 60] [--calls 5] [--rounds 11] [--dir DIR]

Each round runs, in turn: the floor in-process, `handshake run` of a scripted job of 0 tool
calls (the same job, its script a single answer: start-up, session creation, the end), and
`handshake run` of the job whose script asks for --calls calls in each of --turns turns. Per
tool call = (median of the runs - median of the 0-call runs) / (turns x calls), so it carries
its share of the model turns, their checkpoints and the journal. The spread shown is that of
the per-round differences.
- read_file calls vs one write+fdatasync of a journal-sized line (target <= 2x);
- write_file calls vs the bare write_file sequence (2 fdatasyncs, a file fsync and its
  directory's; target <= 1.3x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    READ_TOOL,
    WRITE_TOOL,
    Context,
    Floors,
    Row,
    cli_env,
    entry,
    interleave,
    median,
    print_rows,
    read_call,
    row,
    tool_turns,
    wall,
    write_call,
    write_job,
)

SUITE = "end to end"


class Runs:
    """`handshake run` of one job, each time in a new workspace under the same root."""

    def __init__(self, tmp: Path, job: Path, seed: Callable[[Path], None]) -> None:
        self.tmp, self.job, self.seed = tmp, job, seed
        self.count = 0
        self.env = cli_env(tmp / "root")

    def __call__(self) -> float:
        self.count += 1
        workspace = self.tmp / f"ws-{self.job.stem}-{self.count}"
        workspace.mkdir()
        self.seed(workspace)
        argv = [
            *entry(),
            "run",
            str(self.job),
            "--workspace",
            str(workspace),
            "--root",
            str(self.tmp / "root"),
        ]
        return wall(argv, self.env)


def _seed(workspace: Path) -> None:
    (workspace / "f.txt").write_text("some content\n")


def case(
    ctx: Context,
    kind: str,
    tool: dict[str, Any],
    call: Callable[[int, int], dict[str, Any]],
    floor: Callable[[Floors, int], float],
    turns: int,
    calls: int,
    rounds: int,
) -> tuple[list[float], list[float], float]:
    """(per-call seconds, floor seconds) per round, and the per-call figure: the difference of
    the medians of the two runs (a start-up's jitter is its own, not shared by the round)."""
    tmp = ctx.fresh_dir(f"e2e-{kind}")
    jobs = tmp / "jobs"
    full = write_job(jobs, tool_turns(turns, calls, call), [tool], f"{kind}-{turns}x{calls}")
    empty = write_job(jobs, [{"text": "Done."}], [tool], f"{kind}-none")
    floors = Floors(tmp)
    run_full, run_empty = Runs(tmp, full, _seed), Runs(tmp, empty, _seed)
    run_empty()  # warm-up: the page cache, .pyc files
    n = turns * calls
    times = interleave(
        {"floor": lambda: floor(floors, max(10, n)), "empty": run_empty, "full": run_full}, rounds
    )
    per_call = [(f - e) / n for f, e in zip(times["full"], times["empty"], strict=True)]
    return per_call, times["floor"], (median(times["full"]) - median(times["empty"])) / n


def rows(
    ctx: Context, turns: int | None = None, calls: int | None = None, rounds: int | None = None
) -> list[Row]:
    turns = turns or ctx.pick(60, 60, 4)
    calls = calls or 5
    rounds = rounds or ctx.pick(11, 5, 1)
    us = 1e6
    out = []
    for kind, tool, call, floor, base, limit in (
        ("read_file", READ_TOOL, read_call, lambda f, n: f.fdatasync(n)[0], "write+fdatasync", 2.0),
        ("write_file", WRITE_TOOL, write_call, lambda f, n: f.write_file(n), "bare write_file sequence", 1.3),
    ):
        per_call, floors, figure = case(ctx, kind, tool, call, floor, turns, calls, rounds)
        out.append(
            row(
                SUITE,
                f"{kind} call in `handshake run`",
                figure * us,
                "us",
                baseline=base,
                baseline_value=median(floors) * us,
                ratio=figure / median(floors),
                at_most=limit,
                samples=per_call,
                note=(
                    f"{turns} turns of {calls} calls; figure: (median run - median run of 0 calls) "
                    f"/ {turns * calls}; {rounds} rounds"
                ),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        print_rows(rows(Context("full", Path(tmp_name)), args.turns, args.calls, args.rounds))


if __name__ == "__main__":
    main()
