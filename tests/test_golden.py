"""Golden sessions on disk: inspect and verify them exactly as a user would, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult
from tests.support.paths import GOLDEN, REPO

NAMES = [
    "clean",
    "torn-tail",
    "corrupt-middle",
    "in-doubt",
    "no-checkpoint",
    "preallocated-tail",
    "torn-over-tail",
]
VERIFY_EXIT = {
    "clean": 0,
    "torn-tail": 0,
    "corrupt-middle": 5,
    "in-doubt": 0,
    "no-checkpoint": 0,
    "preallocated-tail": 0,
    "torn-over-tail": 0,
}


@pytest.mark.parametrize("name", NAMES)
def test_inspect_json_matches_golden(
    name: str, golden_root: Callable[[str], Path], cli: Callable[..., CliResult]
) -> None:
    root = golden_root(name)
    result = cli("inspect", name, "--json", extra_env={"HANDSHAKE_HOME": str(root)})
    assert result.code == 0, result.stderr
    expected = json.loads((GOLDEN / f"{name}.inspect.json").read_text())
    assert result.json == expected


@pytest.mark.parametrize("name", NAMES)
def test_verify_json_matches_golden(
    name: str, golden_root: Callable[[str], Path], cli: Callable[..., CliResult]
) -> None:
    root = golden_root(name)
    result = cli("inspect", name, "--verify", "--json", extra_env={"HANDSHAKE_HOME": str(root)})
    assert result.code == VERIFY_EXIT[name], result.stdout + result.stderr
    assert result.json == json.loads((GOLDEN / f"{name}.verify.json").read_text())


def test_golden_verdicts_say_what_a_user_needs() -> None:
    torn = json.loads((GOLDEN / "torn-tail.verify.json").read_text())
    assert torn["verdict"] == "repairable"
    assert torn["journal"]["damage"]["kind"] == "torn_tail"
    corrupt = json.loads((GOLDEN / "corrupt-middle.verify.json").read_text())
    assert corrupt["verdict"] == "damaged" and corrupt["status"] == "error"
    assert corrupt["journal"]["damage"]["kind"] == "corrupt"
    in_doubt = json.loads((GOLDEN / "in-doubt.inspect.json").read_text())
    assert in_doubt["state"] == "INTERRUPTED"
    assert in_doubt["in_doubt_tool_calls"] == ["call-1-0"]


def test_a_preallocated_tail_is_no_damage_and_what_was_written_over_it_is_a_torn_tail() -> None:
    """FORMAT.md section 3: the records end at the last segment's first empty line."""
    clean = json.loads((GOLDEN / "clean.verify.json").read_text())
    tail = json.loads((GOLDEN / "preallocated-tail.verify.json").read_text())
    assert tail["verdict"] == "intact" and tail["journal"] == clean["journal"]
    over = json.loads((GOLDEN / "torn-over-tail.verify.json").read_text())
    assert over["verdict"] == "repairable"
    assert over["journal"]["damage"]["kind"] == "torn_tail"
    assert over["journal"]["last_seq"] == clean["journal"]["last_seq"] - 1  # the record past the gap


def test_recover_cuts_what_was_written_over_the_tail(
    golden_root: Callable[[str], Path], cli: Callable[..., CliResult]
) -> None:
    root = golden_root("torn-over-tail")
    env = {"HANDSHAKE_HOME": str(root)}
    recovered = cli("recover", "torn-over-tail", "--json", extra_env=env)
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    [quarantined] = (root / "sessions" / "torn-over-tail" / "quarantine").iterdir()
    assert quarantined.read_bytes().startswith(b"\n" * 600 + b'{"seq":21,')
    assert not quarantined.read_bytes().endswith(b"\n\n")
    verified = cli("inspect", "torn-over-tail", "--verify", "--json", extra_env=env)
    assert verified.json["verdict"] == "intact", verified.stdout


def test_listing_of_golden_sessions(
    golden_root: Callable[[str], Path], cli: Callable[..., CliResult]
) -> None:
    for name in NAMES:
        root = golden_root(name)
    result = cli("inspect", "--root", str(root), "--json")
    assert result.code == 0
    rows = {row["session_id"]: row for row in result.json["sessions"]}
    assert {name: row["state"] for name, row in rows.items()} == {
        # The torn record was session.completed; the state change before it survived.
        "clean": "COMPLETED",
        "torn-tail": "COMPLETED",
        "corrupt-middle": "COMPLETED",
        "in-doubt": "INTERRUPTED",
        "no-checkpoint": "INTERRUPTED",
        "preallocated-tail": "COMPLETED",
        "torn-over-tail": "COMPLETED",
    }
    assert not rows["clean"]["needs_attention"]
    # head.json names seq 21, but only seq 20 survived: the crash shows.
    assert rows["torn-tail"]["needs_attention"] and not rows["torn-tail"]["head_matches"]
    assert rows["in-doubt"]["needs_attention"]


def test_golden_files_are_reproducible() -> None:
    """The encoder still writes exactly the committed bytes: the format has not drifted."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "fixtures"
        (copy / "sessions").mkdir(parents=True)
        (copy / "build_golden.py").write_bytes((REPO / "fixtures" / "build_golden.py").read_bytes())
        subprocess.run(
            [sys.executable, str(copy / "build_golden.py")],
            check=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        for path in sorted(GOLDEN.rglob("*")):
            if path.is_file():
                rebuilt = copy / "sessions" / path.relative_to(GOLDEN)
                assert rebuilt.read_bytes() == path.read_bytes(), f"{path.relative_to(REPO)} drifted"
