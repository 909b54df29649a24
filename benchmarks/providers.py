"""Streaming a real model's answer through the openai provider, against the least any client
must do to read the same stream.

    python benchmarks/providers.py [--words 20000] [--repeat 5]

A loopback HTTP server (tests/support/openai_server.py, in its own process so that it does not share
the GIL with the client) streams an answer of N words, one server-sent event per word, as
OpenAI does. Measured in the same run, interleaved:
- floor: httpx streams the response, splits lines, and decodes each event's JSON;
- handshake: `launch.start` of a one-turn openai job, in-process: the same reading plus
  masking, journaling (batched chunk records), the checkpoints and the session's end.
Reported: words per second of each and their ratio (median over --repeat rounds). The root is
on the default temp directory's disk; fsyncs are real.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx

from handshake_cli.engine import launch
from handshake_cli.engine.jobs import load_job
from handshake_cli.paths import Paths
from handshake_cli.storage.filesystem import FilesystemStore
from tests.support.openai_server import FakeOpenAI, sse, text_events


def serve(words: int, answers: int, port: multiprocessing.Queue[int]) -> None:
    """The server process: `answers` streams of `words` words, then it stops."""
    with FakeOpenAI() as server:
        server.reply(sse(text_events([f"w{i} " for i in range(100)])))  # the warm-up
        server.reply(*[sse(text_events([f"w{i} " for i in range(words)])) for _ in range(answers)])
        port.put(int(server.server.server_address[1]))
        while len(server.requests) < answers + 1:
            time.sleep(0.05)
        time.sleep(0.5)  # let the last stream finish


class Remote:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1"


def floor(server: Remote, words: int) -> float:
    start = time.perf_counter()
    seen = 0
    with (
        httpx.Client() as client,
        client.stream("POST", server.url + "/chat/completions", json={"stream": True}) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                seen += bool(json.loads(line[6:])["choices"][0]["delta"].get("content"))
    elapsed = time.perf_counter() - start
    assert seen == words, seen
    return elapsed


def through_handshake(server: Remote, words: int, tmp: Path, round_: int) -> float:
    job_file = tmp / f"job{round_}.toml"
    job_file.write_text(
        'name = "bench"\n[prompt]\nuser = "go"\n[model]\nprovider = "openai"\n'
        f'base_url = "{server.url}"\nmodel = "m"\n'
    )
    job = load_job(str(job_file))
    store = FilesystemStore(Paths.resolve(str(tmp / f"root{round_}")))
    start = time.perf_counter()
    result = launch.start(job, store, workspace=tmp)
    elapsed = time.perf_counter() - start
    assert result.state == "COMPLETED", result
    return elapsed


def measure(words: int, repeat: int, tmp_dir: str | None = None) -> tuple[list[float], list[float]]:
    """(floor seconds, handshake seconds) per round, interleaved."""
    floors, runs = [], []
    port: multiprocessing.Queue[int] = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve, args=(words, 2 * repeat, port))
    process.start()
    server = Remote(port.get(timeout=30))
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        floor(server, 100)  # warm up: imports, the first connection
        for round_ in range(repeat):
            floors.append(floor(server, words))
            runs.append(through_handshake(server, words, Path(tmp), round_))
    process.join(timeout=30)
    return floors, runs


def rows(ctx: Any, words: int | None = None, repeat: int | None = None) -> list[Any]:
    """For the driver (benchmarks/run.py)."""
    from common import row

    words = words or ctx.pick(20_000, 5_000, 1_000)
    repeat = repeat or ctx.pick(5, 3, 1)
    floors, runs = measure(words, repeat, str(ctx.fresh_dir("providers")))
    rates = [words / r for r in runs]
    return [
        row(
            "providers",
            "openai stream through `run`",
            statistics.median(rates),
            "words/s",
            baseline="httpx + JSON per event",
            baseline_value=words / statistics.median(floors),
            ratio=statistics.median([f / r for r, f in zip(runs, floors, strict=True)]),
            samples=rates,
            note=f"loopback server, an event a word, {words:,} words; ratio: our speed / the floor's",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    floors, runs = measure(args.words, args.repeat)
    ratios = [r / f for r, f in zip(runs, floors, strict=True)]
    print(f"words per answer      {args.words}")
    print(f"floor (httpx + JSON)  {args.words / statistics.median(floors):,.0f} words/s")
    print(f"handshake run         {args.words / statistics.median(runs):,.0f} words/s")
    print(f"ratio                 {statistics.median(ratios):.2f} (median of {args.repeat} rounds)")


if __name__ == "__main__":
    main()
