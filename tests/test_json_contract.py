"""The `--json` envelope of every command, pinned: its top-level keys and the keys of its main
nested objects, in order, for each way a command can end (including an error of each).

Scripts read these documents; a key that appears, disappears or moves must be a deliberate
change made here first. Values are left to the command's own tests (and the golden sessions
pin `inspect` byte for byte); this file pins only the shape.

A shape is a dict of the keys an object must have, exactly and in order. A key's shape is
None (any value), another dict (an object), or a list of dicts (a non-empty list whose every
item has one of those shapes).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Cli
from tests.support.paths import FIXTURES, GOLDEN

Shape = dict[str, Any]

QUICKSTART = FIXTURES / "jobs" / "quickstart.toml"


def keys(*names: str, **nested: Any) -> Shape:
    """A shape: the keys `names`, in that order; those also given in `nested` have a shape
    of their own, the others hold any value."""
    shape: Shape = dict.fromkeys(names)
    for name, sub in nested.items():
        assert name in shape, f"{name} is not among {names}"
        shape[name] = sub
    return shape


def assert_shape(value: Any, shape: Any, where: str = "$") -> None:
    if shape is None:
        return
    if isinstance(shape, list):
        assert isinstance(value, list) and value, f"{where}: a non-empty list expected, got {value!r}"
        for index, item in enumerate(value):
            assert isinstance(item, dict), f"{where}[{index}]: an object expected, got {item!r}"
            candidates = [s for s in shape if list(s) == list(item)]
            expected = [list(s) for s in shape]
            assert candidates, f"{where}[{index}] has keys {list(item)}, expected one of {expected}"
            assert_shape(item, candidates[0], f"{where}[{index}]")
        return
    assert isinstance(value, dict), f"{where}: an object expected, got {value!r}"
    assert list(value) == list(shape), f"{where} has keys {list(value)}, expected {list(shape)}"
    for name, sub in shape.items():
        assert_shape(value[name], sub, f"{where}.{name}")


# -- the envelope and errors -------------------------------------------------------------------

ENVELOPE = ("schema", "command", "status")
ERROR = keys("code", "exit_code", "message")
ERROR_WITH_DETAILS = keys("code", "exit_code", "message", "details")
# An error: no command fields, only what went wrong and what to do next.
FAILED = keys(*ENVELOPE, "error", "guidance", error=ERROR)

# -- shared objects ------------------------------------------------------------------------------

DAMAGE = keys("kind", "segment", "offset", "length", "detail", "repairable")
JOURNAL = keys("records", "last_seq", "damage")
ARTIFACTS = keys("checked", "problems", "missing")
HEAD = keys("matches", "differences")
INTEGRITY_PARTS = {"journal": JOURNAL, "artifacts": ARTIFACTS, "head": HEAD}
INTEGRITY = keys("scope", "verdict", "journal", "artifacts", "head", "job", **INTEGRITY_PARTS)
IN_DOUBT = keys("tool_call_id", "tool", "idempotency_key", "idempotency", "probe", "decision")

# -- run ------------------------------------------------------------------------------------------

RUN = keys(
    *ENVELOPE,
    "job",
    "session_id",
    "state",
    "reason",
    "turns",
    "tool_calls",
    "checkpoint_count",
    "checkpoint_artifact_id",
    "exit_code",
)
RUN_FAILED = {**RUN, "guidance": None}

# -- inspect --------------------------------------------------------------------------------------

LISTED = keys(
    "session_id",
    "kind",
    "job_name",
    "thread_id",
    "state",
    "created_at",
    "updated_at",
    "last_checkpoint_at",
    "checkpoint_count",
    "size_bytes",
    "lock_holder",
    "head_matches",
    "needs_attention",
)
UNREADABLE = keys("session_id", "state", "error", "needs_attention", error=ERROR)
LISTING = keys(*ENVELOPE, "root", "sessions", sessions=[LISTED])
LISTING_WITH_DAMAGE = keys(*ENVELOPE, "root", "sessions", sessions=[LISTED, UNREADABLE])

TOOL_CALL_ARGS = keys("tool_call_id", "tool", "args")
MESSAGES = [
    keys("role", "content"),
    keys("role", "content", "tool_calls", tool_calls=[TOOL_CALL_ARGS]),
    keys("role", "tool_call_id", "content"),
]
TOOL_CALL_FIELDS = ("tool_call_id", "tool", "args", "state", "idempotency_key", "side_effect", "idempotency")
TOOL_CALLS = [
    keys(*TOOL_CALL_FIELDS, "intent_seq", "result_seq"),
    keys(*TOOL_CALL_FIELDS, "intent_seq"),  # no result on record: in doubt
    keys(*TOOL_CALL_FIELDS, "mcp", "intent_seq", "result_seq"),  # a tool of an MCP server
    keys(*TOOL_CALL_FIELDS, "mcp", "intent_seq"),
]
RECOVERY_PLAN = keys("action", "reason", "in_doubt", "in_flight", "checkpoint", "commands")
PROCESS = keys(
    "kind",
    "host",
    "pid",
    "first_seq",
    "last_seq",
    "started_at",
    "ended_at",
    "ending",
    "reason",
    "ending_seq",
    "last_record",
    "torn_tail",
    "forked_from",
    "found",
    "decisions",
    "events",
    last_record=keys("seq", "type", "ts"),
)
HISTORY = keys("processes", "crashes", "complete", "partial", processes=[PROCESS])
DESCRIPTION = keys(
    *ENVELOPE,
    "session_id",
    "job_name",
    "state",
    "stored_state",
    "model",
    "workspace",
    "created_at",
    "updated_at",
    "checkpoint_count",
    "checkpoint_artifact_id",
    "last_checkpoint_at",
    "last_seq",
    "turns",
    "messages",
    "abandoned_streams",
    "tool_calls",
    "pending_tool_calls",
    "in_doubt_tool_calls",
    "lock_holder",
    "integrity",
    "recovery_plan",
    "anomalies",
    "history",
    model=keys("id", "backend"),
    messages=MESSAGES,
    tool_calls=TOOL_CALLS,
    integrity=INTEGRITY,
    recovery_plan=RECOVERY_PLAN,
    history=HISTORY,
)
IN_DOUBT_DESCRIPTION = {
    **DESCRIPTION,
    "recovery_plan": keys(*RECOVERY_PLAN, in_doubt=[IN_DOUBT]),
}

VERIFY_FIELDS = ("session_id", "verdict", "journal", "artifacts", "head", "job")
VERIFIED = keys(*ENVELOPE, *VERIFY_FIELDS, **INTEGRITY_PARTS)
# Only what recovery repairs: the damage is named and `recover --dry-run` is offered.
VERIFIED_REPAIRABLE = keys(
    *ENVELOPE, *VERIFY_FIELDS, "guidance", **{**INTEGRITY_PARTS, "journal": keys(*JOURNAL, damage=DAMAGE)}
)
VERIFIED_DAMAGED = keys(
    *ENVELOPE,
    *VERIFY_FIELDS,
    "error",
    "guidance",
    **{**INTEGRITY_PARTS, "journal": keys(*JOURNAL, damage=DAMAGE)},
    error=ERROR,
)

# A thread rebuilt from a checkpoint body, whose canonical JSON sorts keys.
AT_MESSAGES = [
    keys("content", "role"),
    keys("content", "role", "tool_calls", tool_calls=[keys("args", "tool", "tool_call_id")]),
    keys("content", "role", "tool_call_id"),
]
EVENTS = keys(*ENVELOPE, "session_id", "events", events=[keys("seq", "ts", "type", "data", "elapsed")])
AT = keys(
    *ENVELOPE,
    "session_id",
    "at_seq",
    "state",
    "model_id",
    "backend",
    "created_at",
    "updated_at",
    "checkpoint_artifact_id",
    "last_checkpoint_at",
    "checkpoint_count",
    "last_seq",
    "from_checkpoint",
    "messages",
    "pending_tool_calls",
    "tool_calls",
    messages=AT_MESSAGES,
)

# -- recover ----------------------------------------------------------------------------------

PLAN_FIELDS = (
    "session_id",
    "state",
    "action",
    "reason",
    "in_doubt",
    "in_flight",
    "torn_tail",
    "checkpoint",
    "skipped_checkpoints",
    "resolutions",
    "verified_from_seq",
    "commands",
    "state_after",
    "exit_code",
    "executed",
    "detail",
    "stopped_mcp_servers",
)
RECOVERED_TORN_TAIL = keys(*ENVELOPE, *PLAN_FIELDS, torn_tail=DAMAGE)
BLOCKED = keys(*ENVELOPE, *PLAN_FIELDS, "guidance", in_doubt=[IN_DOUBT])
RECOVER_ALL_ROW = keys("session_id", "state_before", "action", "reason", "state", "exit_code", "guidance")
RECOVER_ALL_UNREADABLE = keys(
    "session_id", "action", "reason", "state", "exit_code", "message", "error", "guidance", error=ERROR
)
RECOVER_ALL = keys(*ENVELOPE, "sessions", "exit_code", sessions=[RECOVER_ALL_ROW, RECOVER_ALL_UNREADABLE])

# -- checkpoint, gc, export, import -------------------------------------------------------------

CHECKPOINT = keys(
    *ENVELOPE,
    "session_id",
    "running",
    "checkpoint_id",
    "artifact_id",
    "seq",
    "segment",
    "offset",
    "covers_seq",
)

GC_POLICY = keys(
    "older_than_seconds",
    "keep_checkpoints",
    "quarantine_older_than_seconds",
    "include_unfinished",
    "grace_seconds",
    "config_file",
)
GC_FIELDS = ("dry_run", "removed", "skipped", "swept", "reclaimed_bytes", "kept", "errors", "policy", "notes")
GC_REMOVED = keys("session_id", "state", "last_record_at", "age_seconds", "bytes")
GC_SKIPPED = keys("session_id", "state", "reason", "detail", "last_record_at")
GC_SKIPPED_UNREADABLE = keys(*GC_SKIPPED, "error", error=ERROR)
GC_SWEPT = keys("kind", "path", "bytes")
GC = keys(
    *ENVELOPE,
    *GC_FIELDS,
    removed=[GC_REMOVED],
    skipped=[GC_SKIPPED, GC_SKIPPED_UNREADABLE],
    swept=[GC_SWEPT],
    policy=GC_POLICY,
)

EXPORT = keys(
    *ENVELOPE,
    "session_id",
    "output",
    "bytes",
    "file_count",
    "session_bytes",
    "bundle_format",
    "format_version",
    "live_writer",
    "skipped",
)
IMPORT = keys(
    *ENVELOPE,
    "session_id",
    "path",
    "file_count",
    "session_bytes",
    "state",
    "verdict",
    "integrity",
    "workspace",
    "workspace_exists",
    "workspace_note",
    "kind",
    "thread_id",
    "exported_at",
    "exported_by",
    integrity=keys("verdict", "journal", "artifacts", "head", "job", **INTEGRITY_PARTS),
)


# -- running the commands ---------------------------------------------------------------------------


def check(result: Any, command: str, exit_code: int, shape: Shape) -> dict[str, Any]:
    """One JSON document on stdout, for `command`, with the exit code and the shape."""
    assert result.code == exit_code, result.stdout + result.stderr
    doc: dict[str, Any] = result.json
    assert doc["schema"] == 1 and doc["command"] == command
    assert_shape(doc, shape)
    if "error" in doc:
        assert doc["status"] == "error" and doc["error"]["exit_code"] == exit_code
    return doc


@pytest.fixture
def sessions(root: Path) -> Callable[..., Path]:
    """Copy golden sessions into the root."""

    def install(*names: str) -> Path:
        for name in names:
            shutil.copytree(GOLDEN / name, root / "sessions" / name)
        return root

    (root / "sessions").mkdir(mode=0o700, exist_ok=True)
    return install


@pytest.fixture
def unreadable(root: Path, sessions: Callable[..., Path]) -> Path:
    """A root holding a session whose session.toml is not TOML beside a healthy one."""
    sessions("clean")
    (root / "sessions" / "bad").mkdir(mode=0o700)
    (root / "sessions" / "bad" / "session.toml").write_text("not toml [\n")
    return root


@pytest.fixture
def completed(hs: Cli, workspace: Path) -> str:
    result = hs("run", str(QUICKSTART), "--session-id", "done-1", "--workspace", str(workspace), "--json")
    assert result.code == 0, result.stdout + result.stderr
    return "done-1"


# -- run ---------------------------------------------------------------------------------------------


def test_run(hs: Cli, workspace: Path) -> None:
    result = hs("run", str(QUICKSTART), "--workspace", str(workspace), "--json")
    assert check(result, "run", 0, RUN)["status"] == "ok"


def test_run_that_fails(hs: Cli, workspace: Path, tmp_path: Path) -> None:
    from tests.support.jobs import READ, write_job

    turn = {"text": "Again.", "tool_calls": [{"tool": "read_file", "args": {"path": "x"}}]}
    job = write_job(tmp_path / "job", [turn, turn, turn, {"text": "Done."}], [READ], limits={"max_turns": 2})
    result = hs("run", str(job), "--workspace", str(workspace), "--json")
    assert check(result, "run", 7, RUN_FAILED)["status"] == "failed"


def test_run_error(hs: Cli, tmp_path: Path) -> None:
    doc = check(
        hs("run", str(tmp_path / "missing.toml"), "--json"),
        "run",
        2,
        keys(*FAILED, error=ERROR_WITH_DETAILS),
    )
    assert list(doc["error"]["details"]) == ["file", "key"]


def test_usage_error(hs: Cli) -> None:
    """A mistake click finds before any command runs still gets the envelope."""
    check(hs("run", "--json"), "run", 2, FAILED)


# -- inspect -----------------------------------------------------------------------------------------


def test_inspect_listing(hs: Cli, sessions: Callable[..., Path]) -> None:
    sessions("clean", "in-doubt")
    check(hs("inspect", "--json"), "inspect", 0, LISTING)


def test_inspect_listing_with_an_unreadable_session(hs: Cli, unreadable: Path) -> None:
    assert check(hs("inspect", "--json"), "inspect", 5, LISTING_WITH_DAMAGE)["status"] == "error"


def test_inspect_session(hs: Cli, completed: str, sessions: Callable[..., Path]) -> None:
    check(hs("inspect", completed, "--json"), "inspect", 0, DESCRIPTION)
    sessions("in-doubt")
    check(hs("inspect", "in-doubt", "--json"), "inspect", 0, IN_DOUBT_DESCRIPTION)


def test_inspect_verify(hs: Cli, sessions: Callable[..., Path]) -> None:
    sessions("clean", "torn-tail", "corrupt-middle")
    check(hs("inspect", "clean", "--verify", "--json"), "inspect", 0, VERIFIED)
    check(hs("inspect", "torn-tail", "--verify", "--json"), "inspect", 0, VERIFIED_REPAIRABLE)
    check(hs("inspect", "corrupt-middle", "--verify", "--json"), "inspect", 5, VERIFIED_DAMAGED)


def test_inspect_events_and_at(hs: Cli, completed: str) -> None:
    check(hs("inspect", completed, "--events", "--json"), "inspect", 0, EVENTS)
    check(hs("inspect", completed, "--at", "8", "--json"), "inspect", 0, AT)


@pytest.mark.parametrize("extra", [[], ["--verify"], ["--events"], ["--at", "3"]])
def test_inspect_error(hs: Cli, sessions: Callable[..., Path], extra: list[str]) -> None:
    sessions("clean")
    check(hs("inspect", "nope", *extra, "--json"), "inspect", 6, FAILED)


# -- recover -----------------------------------------------------------------------------------------


def test_recover(hs: Cli, sessions: Callable[..., Path]) -> None:
    sessions("torn-tail", "in-doubt")
    dry = check(hs("recover", "in-doubt", "--dry-run", "--json"), "recover", 0, BLOCKED)
    assert dry["executed"] is False
    check(hs("recover", "in-doubt", "--json"), "recover", 3, BLOCKED)
    check(hs("recover", "torn-tail", "--json"), "recover", 0, RECOVERED_TORN_TAIL)


def test_recover_all(hs: Cli, unreadable: Path, sessions: Callable[..., Path]) -> None:
    sessions("in-doubt")
    check(hs("recover", "--all", "--dry-run", "--json"), "recover", 5, RECOVER_ALL)
    check(hs("recover", "--all", "--json"), "recover", 5, RECOVER_ALL)


def test_recover_error(hs: Cli, sessions: Callable[..., Path]) -> None:
    sessions("clean")
    check(hs("recover", "nope", "--json"), "recover", 6, FAILED)


# -- checkpoint --------------------------------------------------------------------------------------


def test_checkpoint(hs: Cli, completed: str) -> None:
    doc = check(hs("checkpoint", completed, "--json"), "checkpoint", 0, CHECKPOINT)
    assert doc["running"] is False


def test_checkpoint_error(hs: Cli, sessions: Callable[..., Path]) -> None:
    sessions("clean")
    check(hs("checkpoint", "nope", "--json"), "checkpoint", 6, FAILED)


# -- gc ----------------------------------------------------------------------------------------------


def test_gc(hs: Cli, unreadable: Path, sessions: Callable[..., Path]) -> None:
    sessions("in-doubt")
    leftover = unreadable / "staging" / "leftover"
    leftover.mkdir(parents=True)
    old = 1_000_000_000  # 2001: older than any grace period
    for path in (leftover, leftover.parent):
        os.utime(path, (old, old))
    check(hs("gc", "--older-than", "0s", "--dry-run", "--json"), "gc", 5, GC)
    check(hs("gc", "--older-than", "0s", "--json"), "gc", 5, GC)


def test_gc_error(hs: Cli) -> None:
    check(hs("gc", "--older-than", "soon", "--json"), "gc", 2, FAILED)


# -- export and import -------------------------------------------------------------------------------


def test_export_and_import(hs: Cli, cli: Cli, sessions: Callable[..., Path], tmp_path: Path) -> None:
    sessions("clean")
    bundle = tmp_path / "clean.tar.gz"
    check(hs("export", "clean", "-o", str(bundle), "--json"), "export", 0, EXPORT)
    other = tmp_path / "other-root"
    check(cli("import", str(bundle), "--root", str(other), "--json"), "import", 0, IMPORT)


def test_export_error(hs: Cli, sessions: Callable[..., Path], tmp_path: Path) -> None:
    sessions("clean")
    check(hs("export", "nope", "-o", str(tmp_path / "x.tar.gz"), "--json"), "export", 6, FAILED)


def test_import_error(hs: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a bundle\n")
    check(hs("import", str(junk), "--json"), "import", 2, FAILED)


def test_a_key_added_moved_or_missing_breaks_the_contract() -> None:
    shape = keys("a", "b", b=keys("c"))
    assert_shape({"a": 1, "b": {"c": 2}}, shape)
    for wrong in ({"a": 1, "b": {"c": 2}, "new": 3}, {"b": {"c": 2}, "a": 1}, {"a": 1, "b": {}}):
        with pytest.raises(AssertionError):
            assert_shape(wrong, shape)
    with pytest.raises(AssertionError):
        assert_shape([], [shape])  # an example of each item is needed to pin it


# -- coverage ----------------------------------------------------------------------------------------


def test_every_command_has_a_contract() -> None:
    """A new command needs its envelope pinned here."""
    import typer

    from handshake_cli.cli.app import app

    commands = set(getattr(typer.main.get_command(app), "commands", {}))
    assert commands
    tested = {name.removeprefix("test_").split("_")[0] for name in globals() if name.startswith("test_")}
    assert commands <= tested, f"no contract test for {sorted(commands - tested)}"
