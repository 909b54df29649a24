"""Journal speed, as ratios against baselines measured in the same run on the same disk.

    python benchmarks/journal.py [--records N] [--dir DIR]

- synced append vs the floor: one os.write + fdatasync of a line of the same size;
- group-committed append vs a bare os.write of the same bytes;
- verify (checksum + chain, no JSON decode) and full scan (decoded) in records/s, against
  json.loads of the same lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from handshake_cli.storage.journal.codec import encode, utc_now
from handshake_cli.storage.journal.scan import list_segments, scan
from handshake_cli.storage.journal.writer import JournalWriter

DATA = {"turn": 3, "index": 17, "text": "streamed words "}


def bench_synced(tmp: Path, n: int) -> tuple[float, float]:
    line, _ = encode(1, utc_now(), "model.chunk", DATA, "0" * 32)
    fd = os.open(tmp / "floor", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for _ in range(n):
        os.write(fd, line)
        os.fdatasync(fd)
    floor = (time.perf_counter() - start) / n
    os.close(fd)
    (tmp / "j1").mkdir()
    writer = JournalWriter.create(tmp / "j1", "bench")
    start = time.perf_counter()
    for _ in range(n):
        writer.append("model.chunk", DATA, sync=True)
    ours = (time.perf_counter() - start) / n
    writer.close()
    return floor, ours


def bench_unsynced(tmp: Path, n: int) -> tuple[float, float, Path]:
    line, _ = encode(1, utc_now(), "model.chunk", DATA, "0" * 32)
    fd = os.open(tmp / "floor2", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for _ in range(n):
        os.write(fd, line)
    floor = (time.perf_counter() - start) / n
    os.close(fd)
    path = tmp / "j2"
    path.mkdir()
    writer = JournalWriter.create(path, "bench")
    start = time.perf_counter()
    for _ in range(n):
        writer.append("model.chunk", DATA, sync=False)
    writer.sync()
    ours = (time.perf_counter() - start) / n
    writer.close()
    return floor, ours, path


def bench_scan(path: Path) -> tuple[float, float, float, int]:
    lines = b"".join((path / name).read_bytes() for name in list_segments(path)).splitlines()
    start = time.perf_counter()
    for line in lines:
        json.loads(line)
    loads = len(lines) / (time.perf_counter() - start)
    start = time.perf_counter()
    result = scan(path, "bench", decode=False)
    verify = result.count / (time.perf_counter() - start)
    start = time.perf_counter()
    result = scan(path, "bench", decode=True)
    full = result.count / (time.perf_counter() - start)
    return loads, verify, full, result.count


def rows(ctx: Any, records: int | None = None, synced: int | None = None) -> list[Any]:
    """For the driver (benchmarks/run.py)."""
    from common import row

    records = records or ctx.pick(200_000, 50_000, 5_000)
    synced = synced or ctx.pick(500, 200, 30)
    tmp = ctx.fresh_dir("journal")
    rounds = ctx.pick(10, 5, 2)
    pairs = []  # the floor and the journal, round by round
    for i in range(rounds):
        (tmp / f"round{i}").mkdir()
        pairs.append(bench_synced(tmp / f"round{i}", max(1, synced // rounds)))
    floor = statistics.median(f for f, _ in pairs)
    ours = statistics.median(o for _, o in pairs)
    floor2, ours2, path = bench_unsynced(tmp, records)
    loads, verify, full, count = bench_scan(path)
    return [
        row(
            "journal",
            "synced append",
            ours * 1e6,
            "us",
            baseline="write+fdatasync",
            baseline_value=floor * 1e6,
            ratio=statistics.median(o / f for f, o in pairs),
            samples=[o * 1e6 for _, o in pairs],
            note=f"{rounds} rounds of {max(1, synced // rounds)} appends, each after its floor",
        ),
        row(
            "journal",
            "unsynced append",
            ours2 * 1e6,
            "us",
            baseline="os.write",
            baseline_value=floor2 * 1e6,
            ratio=ours2 / floor2,
            note=f"{records:,} appends",
        ),
        row(
            "journal",
            "verify (checksum + chain)",
            verify,
            "records/s",
            baseline="json.loads per line",
            baseline_value=loads,
            ratio=verify / loads,
            note=f"{count:,} records",
        ),
        row(
            "journal",
            "scan (decoded)",
            full,
            "records/s",
            baseline="json.loads per line",
            baseline_value=loads,
            ratio=full / loads,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--synced", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        floor, ours = bench_synced(tmp, args.synced)
        print(
            f"synced append      {ours * 1e6:9.1f} us  floor write+fdatasync {floor * 1e6:9.1f} us"
            f"  ratio {ours / floor:5.2f}"
        )
        floor, ours, path = bench_unsynced(tmp, args.records)
        print(
            f"unsynced append    {ours * 1e6:9.2f} us  floor os.write        {floor * 1e6:9.2f} us"
            f"  ratio {ours / floor:5.2f}"
        )
        loads, verify, full, count = bench_scan(path)
        print(
            f"verify (no decode) {verify:12,.0f} records/s   json.loads alone {loads:12,.0f} lines/s"
            f"  ratio {verify / loads:5.2f}   ({count:,} records)"
        )
        print(
            f"scan (decoded)     {full:12,.0f} records/s                                 "
            f"  ratio {full / loads:5.2f}"
        )


if __name__ == "__main__":
    main()
