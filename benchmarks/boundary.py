"""The cost of one tool-call boundary (intent, tool, result, checkpoint) and streaming speed,
against floors measured in the same run on the same disk.

    python benchmarks/boundary.py [--calls N] [--words N] [--dir DIR]

- read tool: the whole boundary vs one write+fdatasync of a journal-sized line (target <= 3x);
- builtin write_file: the whole boundary vs the bare sequence the durability rules require:
  append+fdatasync, create+write+fsync the file and fsync its directory, append+fdatasync
  (target <= 2x);
- streamed words per second for one long scripted turn (target >= 100,000).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handshake_cli.engine.jobs import CheckpointPolicy, Job, Limits, ModelSpec, ScriptedTurn, ToolSpec
from handshake_cli.engine.loop import Runner
from handshake_cli.engine.providers.scripted import ScriptedProvider
from handshake_cli.engine.writer import open_writer
from handshake_cli.paths import Paths
from handshake_cli.session.state import ACTIVE, initial_head
from handshake_cli.storage.store import Store

LINE = (
    b'{"seq":12,"ts":"2026-11-24T04:00:00.000000Z","type":"tool.intent","data":{"x":"' + b"y" * 200 + b'"}}\n'
)


def floor_read(tmp: Path, n: int) -> float:
    fd = os.open(tmp / "floor-read", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for _ in range(n):
        os.write(fd, LINE)
        os.fdatasync(fd)
    os.close(fd)
    return (time.perf_counter() - start) / n


_floor_files = [0]


def floor_write(tmp: Path, n: int) -> float:
    files = tmp / "floor-files"
    files.mkdir(exist_ok=True)
    fd = os.open(tmp / "floor-write", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    dir_fd = os.open(files, os.O_RDONLY | os.O_DIRECTORY)
    start = time.perf_counter()
    for _ in range(n):
        _floor_files[0] += 1
        os.write(fd, LINE)
        os.fdatasync(fd)
        out = os.open(files / f"f{_floor_files[0]}.txt", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(out, b"hello from the benchmark\n")
        os.fsync(out)
        os.close(out)
        os.fsync(dir_fd)
        os.write(fd, LINE)
        os.fdatasync(fd)
    os.close(fd)
    os.close(dir_fd)
    return (time.perf_counter() - start) / n


def make_runner(
    tmp: Path, name: str, tools: tuple[ToolSpec, ...], turns: tuple[ScriptedTurn, ...], closing: ExitStack
) -> Runner:
    """A started session's runner, as `handshake run` makes it; its writer closes with `closing`."""
    job = Job(
        name=name,
        source=str(tmp / "job.toml"),
        user="benchmark",
        model=ModelSpec(provider="scripted", id="scripted", deterministic=True, script=turns),
        tools=tools,
        checkpoint=CheckpointPolicy(),
        limits=Limits(max_turns=10),
    )
    workspace = tmp / f"ws-{name}"
    workspace.mkdir()
    store = Store(Paths(tmp / "root"))
    created = {
        "job_name": name,
        "model": {"provider": "scripted", "id": "scripted"},
        "prompt": {"user": "go"},
    }
    session = store.create_session(
        {"job": job.to_config(), "workspace": str(workspace)}, created, head_for=initial_head
    )
    writer = closing.enter_context(open_writer(session, job=job, environ={}))
    runner = Runner(writer, job, workspace, ScriptedProvider(job.model))
    writer.transition(ACTIVE, "run started")
    return runner


class Boundary:
    """Tool-call boundaries through the real runner, one `run_tool_calls` at a time."""

    def __init__(self, tmp: Path, name: str, spec: ToolSpec, args_for: Any) -> None:
        self.closing = ExitStack()
        self.runner = make_runner(tmp, name, (spec,), (ScriptedTurn("done"),), self.closing)
        self.spec = spec
        self.args_for = args_for
        self.calls = 0
        if spec.builtin == "read_file":
            (self.runner.workspace / "f.txt").write_text("some content\n")

    def measure(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            self.calls += 1
            call = {
                "tool_call_id": f"call-{self.calls}-0",
                "tool": self.spec.name,
                "args": self.args_for(self.calls),
            }
            self.runner.thread.pending = [call]  # as if the model had asked for it
            self.runner.run_tool_calls()
        return (time.perf_counter() - start) / n

    def close(self) -> None:
        self.closing.close()


def interleaved(floor: Any, ours: Boundary, n: int, rounds: int) -> tuple[float, float, float]:
    """Alternate floor and ours in rounds, so both see the same disk and the same neighbours;
    report medians of each and the median of the per-round ratios."""
    floors, mine, ratios = [], [], []
    for _ in range(rounds):
        f = floor(n // rounds)
        o = ours.measure(n // rounds)
        floors.append(f)
        mine.append(o)
        ratios.append(o / f)
    ours.close()
    return statistics.median(floors), statistics.median(mine), statistics.median(ratios)


def words_per_second(tmp: Path, words: int) -> float:
    text = " ".join(f"w{i}" for i in range(words))
    with ExitStack() as closing:
        runner = make_runner(tmp, "stream", (), (ScriptedTurn(text),), closing)
        start = time.perf_counter()
        runner.drive()
        elapsed = time.perf_counter() - start
    return words / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--words", type=int, default=200_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        read_spec = ToolSpec(
            name="read_file", side_effect="read", idempotency="idempotent", builtin="read_file"
        )
        write_spec = ToolSpec(
            name="write_file", side_effect="write", idempotency="idempotent", builtin="write_file"
        )
        f_read, ours_read, r_read = interleaved(
            lambda n: floor_read(tmp, n),
            Boundary(tmp, "read", read_spec, lambda i: {"path": "f.txt"}),
            args.calls,
            args.rounds,
        )
        f_write, ours_write, r_write = interleaved(
            lambda n: floor_write(tmp, n),
            Boundary(
                tmp,
                "write",
                write_spec,
                lambda i: {"path": f"out/f{i}.txt", "content": "hello from the benchmark\n"},
            ),
            args.calls,
            args.rounds,
        )
        wps = words_per_second(tmp, args.words)
    print(
        f"read tool boundary   {ours_read * 1e6:8.0f} us   floor (write+fdatasync)        "
        f"{f_read * 1e6:8.0f} us   ratio {r_read:5.2f}  (target <= 3)"
    )
    print(
        f"write_file boundary  {ours_write * 1e6:8.0f} us   floor (2 syncs + file + dir)   "
        f"{f_write * 1e6:8.0f} us   ratio {r_write:5.2f}  (target <= 2)"
    )
    print(f"streamed words/s     {wps:10,.0f}   (target >= 100,000)")


if __name__ == "__main__":
    main()
