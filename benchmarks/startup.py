"""Start-up cost of the console script, against bare Python measured in the same run.

    python benchmarks/startup.py [--runs N]

CI scripts and every TAB press pay this on each call. Reports medians in ms and the ratio
over `python -c pass`; the machine is shared and noisy, so only ratios are comparable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_ms(argv: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    script = shutil.which("handshake", path=str(Path(sys.executable).parent)) or shutil.which("handshake")
    entry = [script] if script else [sys.executable, "-m", "handshake_cli"]
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "NO_COLOR": "1", "HANDSHAKE_HOME": root}
        cases = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "python -c 'import typer' (typer's own floor)": [sys.executable, "-c", "import typer"],
            "handshake --version": [*entry, "--version"],
            "handshake inspect --json (empty root)": [*entry, "inspect", "--json"],
            "handshake run --help": [*entry, "run", "--help"],
        }
        baseline = None
        print(f"{'case':42} {'median ms':>10} {'over bare':>10} {'ratio':>7}")
        for name, argv in cases.items():
            ms = median_ms(argv, args.runs, env)
            baseline = baseline or ms
            print(f"{name:42} {ms:10.1f} {ms - baseline:10.1f} {ms / baseline:7.2f}")


if __name__ == "__main__":
    main()
