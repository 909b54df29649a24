"""`inspect` on long sessions, against baselines measured in the same run.

    python benchmarks/long_sessions.py [--sizes 1000000] [--dir DIR]

- `handshake inspect SESSION --json` beyond start-up: its wall time minus that of
  `handshake --version` (target <= 0.5 s at 1M records: no full scan for the summary);
- `inspect --verify` speed in records/s (target >= 200,000), and against reading the same
  bytes with `json.loads` per line.

Sessions are built with benchmarks/recovery.py's generator (real writers, real checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from recovery import build  # noqa: E402

from handshake_cli.readers.verify import verify  # noqa: E402
from handshake_cli.storage.journal.scan import list_segments  # noqa: E402


def wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    print(
        f"{'records':>10} {'inspect ms':>11} {'--version ms':>13} {'beyond ms':>10} "
        f"{'verify rec/s':>13} {'json.loads/s':>13}"
    )
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
            tmp = Path(tmp_name)
            built = build(tmp, n, tail=500, chunks_per_turn=200, checkpoint_every=50_000, mid_turn=False)
            session = built.session
            env = {**os.environ, "HANDSHAKE_HOME": str(session.path.parent.parent), "NO_COLOR": "1"}
            entry = [sys.executable, "-m", "handshake_cli"]
            inspect_s = wall([*entry, "inspect", session.session_id, "--json"], env, args.runs)
            version_s = wall([*entry, "--version"], env, args.runs)
            start = time.perf_counter()
            report = verify(session)
            verify_s = time.perf_counter() - start
            assert report.verdict in ("intact", "repairable"), report.verdict
            lines = [
                line
                for name in list_segments(session.journal)
                for line in (session.journal / name).read_bytes().splitlines()
            ]
            start = time.perf_counter()
            for line in lines:
                json.loads(line)
            loads_s = time.perf_counter() - start
            print(
                f"{n:>10,} {inspect_s * 1000:>11.0f} {version_s * 1000:>13.0f} "
                f"{(inspect_s - version_s) * 1000:>10.0f} {report.journal.count / verify_s:>13,.0f} "
                f"{len(lines) / loads_s:>13,.0f}"
            )


if __name__ == "__main__":
    main()
