"""`recover --fork`: a new session from a checkpoint of another, the original untouched."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import CliResult
from tests.support.paths import FIXTURES

QUICKSTART = FIXTURES / "jobs" / "quickstart.toml"


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_fork_from_an_earlier_checkpoint_then_resume(
    cli: Callable[..., CliResult], root: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    run = cli(
        "run", str(QUICKSTART), "--session-id", "orig", "--root", str(root), "--workspace", str(workspace)
    )
    assert run.code == 0
    original = fingerprint(root / "sessions" / "orig")
    events = cli("inspect", "orig", "--events", "--root", str(root), "--json").json["events"]
    ck2 = next(
        e for e in events if e["type"] == "checkpoint.created" and e["data"]["checkpoint_id"] == "ck-2"
    )

    forked = cli(
        "recover", "orig", "--fork", "again", "--from-checkpoint", "ck-2", "--root", str(root), "--json"
    )
    assert forked.code == 0, forked.stdout
    assert forked.json["forked_from"] == {
        "session_id": "orig",
        "checkpoint_id": "ck-2",
        "covers_seq": ck2["data"]["covers_seq"],
    }
    assert forked.json["guidance"][-1].strip() == f"handshake recover again --root {root}"
    assert fingerprint(root / "sessions" / "orig") == original  # untouched

    fork_view = cli("inspect", "again", "--root", str(root), "--json").json
    orig_view = cli("inspect", "orig", "--root", str(root), "--json").json
    assert fork_view["state"] == "INTERRUPTED"
    # As the original stood at ck-2: the thread through the first tool result.
    assert fork_view["messages"] == orig_view["messages"][: len(fork_view["messages"])]
    assert [m["role"] for m in fork_view["messages"]] == ["system", "user", "assistant", "tool"]

    resumed = cli("recover", "again", "--root", str(root), "--json")
    assert resumed.code == 0 and resumed.json["state_after"] == "COMPLETED"
    final = cli("inspect", "again", "--root", str(root), "--json").json
    assert final["messages"] == orig_view["messages"]


def test_fork_out_of_a_damaged_journal(
    cli: Callable[..., CliResult], golden_root: Callable[[str], Path]
) -> None:
    root = golden_root("corrupt-middle")
    assert cli("inspect", "corrupt-middle", "--verify", "--root", str(root)).code == 5
    original = fingerprint(root / "sessions" / "corrupt-middle")
    forked = cli("recover", "corrupt-middle", "--fork", "rescued", "--root", str(root), "--json")
    assert forked.code == 0, forked.stdout
    # No checkpoint survives before the damage: the fork takes every intact record.
    assert forked.json["forked_from"] == {"session_id": "corrupt-middle", "covers_seq": 11}
    assert fingerprint(root / "sessions" / "corrupt-middle") == original
    verify = cli("inspect", "rescued", "--verify", "--root", str(root), "--json")
    assert verify.code == 0 and verify.json["verdict"] == "intact"


def test_fork_refusals(cli: Callable[..., CliResult], golden_root: Callable[[str], Path]) -> None:
    root = golden_root("clean")
    assert cli("recover", "clean", "--fork", "x", "--from-checkpoint", "ck-9", "--root", str(root)).code == 6
    assert cli("recover", "clean", "--fork", "clean", "--root", str(root)).code == 2  # exists
    assert cli("recover", "clean", "--fork", "../evil", "--root", str(root)).code == 2
    assert cli("recover", "clean", "--from-checkpoint", "ck-1", "--root", str(root)).code == 2
    assert not (root / "sessions" / "x").exists()
