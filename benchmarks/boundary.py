"""The cost of one tool-call boundary (intent, tool, result, checkpoint), the syncs of a turn
of read calls, and streaming speed, against floors measured in the same run on the same disk.

    python benchmarks/boundary.py [--calls N] [--rounds N] [--words N] [--dir DIR]

Floors and handshake are interleaved round by round; medians and spreads over the rounds.
- read tool: the whole boundary, through the real runner, vs one write+fdatasync of a
  journal-sized line (target <= 1.5x), and its CPU (target <= 250 us per boundary);
- builtin write_file: the whole boundary vs the bare sequence the durability rules require:
  append+fdatasync, create+write+fsync the file and fsync its directory, append+fdatasync
  (target <= 1.2x);
- syncs: the fsync/fdatasync calls the runner makes for one model turn that asks for 5
  read_file calls, from the end of the model's stream to the next model request (counted by
  wrapping os.fsync and os.fdatasync in-process; target <= 2);
- streaming: words per second of one long scripted turn through the runner (masker, turn-text
  batching, journal) (target >= 300,000).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    READ_TOOL,
    WRITE_TOOL,
    Context,
    Floors,
    Row,
    counting_syncs,
    interleave,
    make_runner,
    median,
    per_round_ratio,
    print_rows,
    row,
    run_pending_calls,
    scripted_turn,
    stream_masker,
    tool_spec,
)

SUITE = "boundary"


class Boundary:
    """Tool-call boundaries through the real runner, one call at a time."""

    def __init__(
        self, tmp: Path, name: str, tool: dict[str, Any], args_for: Callable[[int], Any], store: Any = None
    ) -> None:
        self.closing = ExitStack()
        self.tool = tool
        self.runner = make_runner(
            tmp, name, (tool_spec(tool),), (scripted_turn("done"),), self.closing, store=store
        )
        self.args_for = args_for
        self.calls = 0
        if tool["builtin"] == "read_file":
            (self.runner.workspace / "f.txt").write_text("some content\n")
        self.cpu: list[float] = []

    def measure(self, n: int) -> float:
        """Wall seconds per boundary over n boundaries (their CPU goes to self.cpu)."""
        cpu, start = time.process_time(), time.perf_counter()
        for _ in range(n):
            self.calls += 1
            call = {
                "tool_call_id": f"call-{self.calls}-0",
                "tool": self.tool["name"],
                "args": self.args_for(self.calls),
            }
            run_pending_calls(self.runner, [call])
        elapsed = time.perf_counter() - start
        self.cpu.append((time.process_time() - cpu) / n)
        return elapsed / n

    def close(self) -> None:
        self.closing.close()


def read_boundary(tmp: Path, store: Any = None) -> Boundary:
    return Boundary(tmp, "read", READ_TOOL, lambda i: {"path": "f.txt"}, store)


def write_boundary(tmp: Path, store: Any = None) -> Boundary:
    return Boundary(
        tmp,
        "write",
        WRITE_TOOL,
        lambda i: {"path": f"out/f{i}.txt", "content": "hello from the benchmark\n"},
        store,
    )


def boundary_rows(ctx: Context, calls: int | None = None, rounds: int | None = None) -> list[Row]:
    rounds = rounds or ctx.pick(12, 8, 3)
    per = max(1, (calls or ctx.pick(600, 320, 30)) // rounds)
    tmp = ctx.fresh_dir("boundary")
    floors = Floors(tmp)
    read, write = read_boundary(tmp), write_boundary(tmp)
    floor_cpu: list[float] = []

    def floor_read() -> float:
        wall, cpu = floors.fdatasync(per)
        floor_cpu.append(cpu)
        return wall

    read.measure(2)  # warm-up: imports on the first call
    write.measure(2)
    read.cpu.clear()
    write.cpu.clear()
    times = interleave(
        {
            "floor_read": floor_read,
            "read": lambda: read.measure(per),
            "floor_write": lambda: floors.write_file(per),
            "write": lambda: write.measure(per),
        },
        rounds,
    )
    read.close()
    write.close()
    read_ratios = per_round_ratio(times["read"], times["floor_read"])
    write_ratios = per_round_ratio(times["write"], times["floor_write"])
    us = 1e6
    return [
        row(
            SUITE,
            "read tool boundary",
            median(times["read"]) * us,
            "us",
            baseline="write+fdatasync",
            baseline_value=median(times["floor_read"]) * us,
            ratio=median(read_ratios),
            at_most=1.5,
            samples=times["read"],
            note=f"{rounds} rounds of {per} boundaries; ratio: median of the per-round ratios",
        ),
        row(
            SUITE,
            "write_file boundary",
            median(times["write"]) * us,
            "us",
            baseline="bare write_file sequence",
            baseline_value=median(times["floor_write"]) * us,
            ratio=median(write_ratios),
            at_most=1.2,
            samples=times["write"],
        ),
        row(
            SUITE,
            "CPU per read boundary",
            median(read.cpu) * us,
            "us",
            baseline="CPU of write+fdatasync",
            baseline_value=median(floor_cpu) * us,
            ratio=median(read.cpu) / median(floor_cpu) if median(floor_cpu) else None,
            at_most=250,
            on="value",
            samples=read.cpu,
            note="time.process_time() of this process over the rounds' boundaries",
        ),
    ]


class _TurnWindow:
    """Wraps the scripted provider: counts the syncs from the end of one model stream to the
    start of the next, i.e. those of the turn's tool calls."""

    def __init__(self, inner: Any, syncs: list[str]) -> None:
        self.inner = inner
        self.syncs = syncs
        self.mark: int | None = None
        self.windows: list[list[str]] = []

    def stream(self, request: Any) -> Iterator[Any]:
        if self.mark is not None:
            self.windows.append(self.syncs[self.mark :])
            self.mark = None
        yield from self.inner.stream(request)
        self.mark = len(self.syncs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def syncs_per_turn(tmp: Path, n: int) -> list[str]:
    """The sync calls (by name) the runner makes for a turn of n read_file calls."""
    calls = [{"tool": "read_file", "args": {"path": "f.txt"}} for _ in range(n)]
    turns = (scripted_turn("Reading.", calls), scripted_turn("done"))
    window: list[_TurnWindow] = []

    def wrap(inner: Any) -> _TurnWindow:
        window.append(_TurnWindow(inner, syncs))
        return window[0]

    with counting_syncs() as syncs, ExitStack() as closing:
        runner = make_runner(tmp, f"syncs-{n}", (tool_spec(READ_TOOL),), turns, closing, provider=wrap)
        (runner.workspace / "f.txt").write_text("some content\n")
        result = runner.drive()
    assert result.state == "COMPLETED", result
    assert result.tool_calls == n, result
    assert len(window[0].windows) == 1, window[0].windows
    return window[0].windows[0]


def syncs_rows(ctx: Context, n: int = 5) -> list[Row]:
    tmp = ctx.fresh_dir("syncs")
    syncs = syncs_per_turn(tmp, n)
    one = syncs_per_turn(tmp, 1)
    detail = ", ".join(f"{syncs.count(k)} {k}" for k in ("fdatasync", "fsync") if syncs.count(k))
    return [
        row(
            SUITE,
            f"syncs for a turn of {n} read calls",
            len(syncs),
            "syncs",
            baseline="syncs for a turn of 1 read call",
            baseline_value=len(one),
            ratio=len(syncs) / len(one) if one else None,
            at_most=2,
            on="value",
            note=f"{detail or 'none'}; from the end of the model's stream to the next request",
        )
    ]


def words_per_second(tmp: Path, words: int) -> float:
    text = " ".join(f"w{i}" for i in range(words))
    with ExitStack() as closing:
        runner = make_runner(tmp, f"stream-{time.perf_counter_ns()}", (), (scripted_turn(text),), closing)
        start = time.perf_counter()
        runner.drive()
        elapsed = time.perf_counter() - start
    return words / elapsed


def masker_words_per_second(words: int) -> float:
    chunks = [f"w{i} " for i in range(words)]
    masking = stream_masker({"BENCH_API_KEY": "sk-bench-0123456789abcdef"})
    start = time.perf_counter()
    for chunk in chunks:
        masking.feed(chunk)
    masking.flush()
    return words / (time.perf_counter() - start)


def streaming_rows(ctx: Context, words: int | None = None, repeat: int | None = None) -> list[Row]:
    words = words or ctx.pick(200_000, 50_000, 5_000)
    repeat = repeat or ctx.pick(5, 3, 1)
    tmp = ctx.fresh_dir("streaming")
    samples = [words_per_second(tmp, words) for _ in range(repeat)]
    masker = [masker_words_per_second(words) for _ in range(repeat)]
    return [
        row(
            SUITE,
            "streamed words/s (masker, batching, journal)",
            median(samples),
            "words/s",
            at_least=300_000,
            on="value",
            samples=samples,
            note=f"one scripted turn of {words:,} words through the runner, {repeat} runs",
        ),
        row(
            SUITE,
            "the stream masker alone",
            median(masker),
            "words/s",
            samples=masker,
            note="SecretMasker.stream().feed() a word at a time, one secret to look for",
        ),
    ]


def rows(ctx: Context) -> list[Row]:
    return boundary_rows(ctx) + syncs_rows(ctx) + streaming_rows(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--words", type=int, default=200_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        ctx = Context("full", Path(tmp_name))
        result = (
            boundary_rows(ctx, args.calls, args.rounds) + syncs_rows(ctx) + streaming_rows(ctx, args.words)
        )
    print_rows(result)


if __name__ == "__main__":
    main()
