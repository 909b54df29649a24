"""The tool gate (DESIGN section 4, durability rule 7) against real files and real processes.

Call ids and idempotency keys are the same on every retry; builtin file tools stay inside
the workspace whatever links they meet and make their writes durable; command tools get
their arguments on stdin, the HANDSHAKE_* variables and nothing else from handshake's
environment, run without a shell, and survive a Ctrl-C aimed at handshake; every failure
is a result the model sees, never an exception.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.engine.jobs import ToolSpec
from handshake_cli.engine.tools.gate import (
    ToolContext,
    ToolOutcome,
    idempotency_key,
    run_probe,
    run_tool,
    tool_call_id,
)
from handshake_cli.errors import DurabilityError
from tests.support.paths import DATA

TOOLS = DATA / "tools"
FAKE_TOOL = (sys.executable, str(TOOLS / "fake_tool.py"))
PROBE = (sys.executable, str(TOOLS / "probe.py"))


WRITE = ToolSpec("write_file", "write", "idempotent", builtin="write_file")
READ = ToolSpec("read_file", "read", "idempotent", builtin="read_file")


class Artifacts:
    """Records what the gate asked to store as large output."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []

    def __call__(self, data: bytes) -> str:
        self.stored.append(data)
        return hashlib.sha256(data).hexdigest()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("TOP-SECRET-CONTENT")
    return path


@pytest.fixture
def artifacts() -> Artifacts:
    return Artifacts()


@pytest.fixture
def ctx(workspace: Path, artifacts: Artifacts) -> ToolContext:
    environ = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(workspace.parent),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "SECRET_TOKEN": "s3cret-not-for-tools",
        "PASSED_TOKEN": "given-to-the-tool",
    }
    key = idempotency_key("sess-1", "call-1-0", "tool", {})
    return ToolContext("sess-1", "call-1-0", key, workspace, artifacts, environ)


def command(name: str = "fake", **fields: Any) -> ToolSpec:
    return ToolSpec(name, "execute", "non_idempotent", command=FAKE_TOOL, **fields)


def report(outcome: ToolOutcome) -> dict[str, Any]:
    assert outcome.ok, outcome.error
    result: dict[str, Any] = json.loads(outcome.output["stdout"])
    return result


def error_of(outcome: ToolOutcome) -> dict[str, Any]:
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.as_result_data() == {"error": outcome.error}
    assert {"code", "kind", "retryable", "message"} <= outcome.error.keys()
    return outcome.error


# --- ids and keys ------------------------------------------------------------------------


def test_call_ids_and_keys_are_the_same_on_every_retry_and_differ_between_calls() -> None:
    assert tool_call_id(3, 1) == "call-3-1" == tool_call_id(3, 1)
    assert len({tool_call_id(1, 2), tool_call_id(2, 1), tool_call_id(12, 1), tool_call_id(1, 21)}) == 4

    args = {"path": "hello.txt", "content": "hi ✓", "nested": {"b": 1, "a": [1, 2]}}
    key = idempotency_key("sess-1", "call-1-0", "write_file", args)
    reordered = {"nested": {"a": [1, 2], "b": 1}, "content": "hi ✓", "path": "hello.txt"}
    assert key == idempotency_key("sess-1", "call-1-0", "write_file", reordered)
    assert key.startswith("hk_") and len(key) == 43 and int(key[3:], 16) >= 0
    canonical = json.dumps(
        ["sess-1", "call-1-0", "write_file", args], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert key == "hk_" + hashlib.sha256(canonical.encode()).hexdigest()[:40]

    others = {
        idempotency_key("sess-2", "call-1-0", "write_file", args),
        idempotency_key("sess-1", "call-1-1", "write_file", args),
        idempotency_key("sess-1", "call-1-0", "read_file", args),
        idempotency_key("sess-1", "call-1-0", "write_file", {**args, "content": "hi"}),
    }
    assert len(others) == 4 and key not in others


# --- write_file ----------------------------------------------------------------------------


def test_write_file_creates_parents_and_reports_what_it_wrote(workspace: Path, ctx: ToolContext) -> None:
    content = "héllo\nworld ✓\n"
    outcome = run_tool(WRITE, {"path": "./docs//notes/hello.txt", "content": content}, ctx)

    data = content.encode()
    assert outcome.as_result_data() == {
        "output": {
            "path": "docs/notes/hello.txt",
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    }
    assert (workspace / "docs" / "notes" / "hello.txt").read_bytes() == data
    umask = os.umask(0)
    os.umask(umask)
    assert (workspace / "docs" / "notes" / "hello.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_file_replaces_a_longer_file_entirely(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "f.txt").write_text("a much longer previous content")
    assert run_tool(WRITE, {"path": "f.txt", "content": "short"}, ctx).ok
    assert (workspace / "f.txt").read_text() == "short"


def test_write_file_makes_the_file_and_every_directory_it_created_durable(
    workspace: Path, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "a").mkdir()
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    assert run_tool(WRITE, {"path": "a/b/c/new.txt", "content": "x"}, ctx).ok

    inode = {name: (workspace / name).stat().st_ino for name in ("a", "a/b", "a/b/c", "a/b/c/new.txt")}
    # The file, the directory now holding it, and each directory that gained a new entry.
    assert set(synced) == {inode["a/b/c/new.txt"], inode["a/b/c"], inode["a/b"], inode["a"]}

    synced.clear()
    assert run_tool(WRITE, {"path": "a/b/c/new.txt", "content": "again"}, ctx).ok
    assert synced == [inode["a/b/c/new.txt"]]  # an existing file: its own fsync is enough


def test_a_failed_fsync_of_a_write_stops_the_process(
    ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(DurabilityError):
        run_tool(WRITE, {"path": "x.txt", "content": "x"}, ctx)


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape.txt", "a/../../escape.txt", "a/../b.txt"])
def test_write_file_refuses_absolute_paths_and_dot_dot(path: str, workspace: Path, ctx: ToolContext) -> None:
    error = error_of(run_tool(WRITE, {"path": path, "content": "x"}, ctx))
    assert (error["code"], error["kind"], error["retryable"]) == ("path_outside_workspace", "refused", False)
    assert not (workspace.parent / "escape.txt").exists()


def test_write_file_refuses_a_linked_directory_that_leaves_the_workspace(
    workspace: Path, outside: Path, ctx: ToolContext
) -> None:
    (workspace / "link").symlink_to(outside)
    (workspace / "sub").mkdir()
    (workspace / "sub" / "up").symlink_to("../..")

    for path in ("link/planted.txt", "sub/up/planted.txt", "link/new/dir/planted.txt"):
        error = error_of(run_tool(WRITE, {"path": path, "content": "x"}, ctx))
        assert error["code"] == "path_outside_workspace"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (workspace.parent / "planted.txt").exists()


def test_write_file_refuses_a_linked_file_that_leaves_the_workspace(
    workspace: Path, outside: Path, ctx: ToolContext
) -> None:
    (workspace / "innocent.txt").symlink_to(outside / "secret.txt")
    (workspace / "dangling.txt").symlink_to(outside / "new.txt")

    for path in ("innocent.txt", "dangling.txt"):
        assert (
            error_of(run_tool(WRITE, {"path": path, "content": "x"}, ctx))["code"] == "path_outside_workspace"
        )
    assert (outside / "secret.txt").read_text() == "TOP-SECRET-CONTENT"
    assert not (outside / "new.txt").exists()


def test_a_link_planted_after_the_check_is_refused_not_followed(
    workspace: Path, outside: Path, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "reports").symlink_to(outside)
    (workspace / "notes.txt").symlink_to(outside / "secret.txt")
    # The check saw plain names (the links were swapped in right after it): opening them must still refuse.
    monkeypatch.setattr(os.path, "realpath", lambda path, strict=False: os.path.abspath(path))

    for path in ("reports/planted.txt", "notes.txt"):
        assert error_of(run_tool(WRITE, {"path": path, "content": "x"}, ctx))["code"] == "unsafe_path"
        assert error_of(run_tool(READ, {"path": path}, ctx))["code"] == "unsafe_path"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "TOP-SECRET-CONTENT"


def test_links_that_stay_inside_the_workspace_are_followed(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "real").mkdir()
    (workspace / "alias").symlink_to("real")
    (workspace / "real" / "target.txt").write_text("old")
    (workspace / "shortcut.txt").symlink_to("real/target.txt")

    assert run_tool(WRITE, {"path": "alias/new.txt", "content": "via a link"}, ctx).ok
    assert (workspace / "real" / "new.txt").read_text() == "via a link"
    assert run_tool(WRITE, {"path": "shortcut.txt", "content": "new"}, ctx).ok
    assert (workspace / "real" / "target.txt").read_text() == "new"
    assert (workspace / "shortcut.txt").is_symlink()
    assert run_tool(READ, {"path": "alias/target.txt"}, ctx).output["content"] == "new"


@pytest.mark.parametrize(
    "args",
    [{}, {"content": "x"}, {"path": 3, "content": "x"}, {"path": "a.txt"}, {"path": "a.txt", "content": 1},
     {"path": "", "content": "x"}, {"path": ".", "content": "x"}, {"path": "a\0b", "content": "x"}],
)  # fmt: skip
def test_write_file_with_arguments_that_do_not_fit_is_a_tool_error(
    args: dict[str, Any], workspace: Path, ctx: ToolContext
) -> None:
    error = error_of(run_tool(WRITE, args, ctx))
    assert (error["code"], error["kind"], error["retryable"]) == (
        "invalid_arguments",
        "invalid_arguments",
        False,
    )
    assert list(workspace.iterdir()) == []


def test_special_files_are_refused_without_blocking(workspace: Path, ctx: ToolContext) -> None:
    os.mkfifo(workspace / "pipe")
    (workspace / "dir").mkdir()
    (workspace / "file").write_text("x")

    assert error_of(run_tool(READ, {"path": "pipe"}, ctx))["code"] == "not_a_regular_file"
    assert error_of(run_tool(WRITE, {"path": "pipe", "content": "x"}, ctx))["code"] == "not_a_regular_file"
    assert error_of(run_tool(WRITE, {"path": "dir", "content": "x"}, ctx))["code"] == "is_a_directory"
    assert error_of(run_tool(WRITE, {"path": "file/x", "content": "x"}, ctx))["code"] == "not_a_directory"


# --- read_file -------------------------------------------------------------------------------


def test_read_file_returns_the_content(workspace: Path, ctx: ToolContext, artifacts: Artifacts) -> None:
    (workspace / "notes").mkdir()
    (workspace / "notes" / "a.txt").write_text("line one\nligne deux ✓\n")

    outcome = run_tool(READ, {"path": "notes/a.txt"}, ctx)
    assert outcome.as_result_data() == {
        "output": {"path": "notes/a.txt", "content": "line one\nligne deux ✓\n"}
    }
    assert artifacts.stored == []


def test_read_file_caps_large_content_on_a_character_boundary_and_stores_it_whole(
    workspace: Path, ctx: ToolContext, artifacts: Artifacts
) -> None:
    data = ("€" * 10).encode()  # 3 bytes each
    (workspace / "big.txt").write_bytes(data)
    spec = ToolSpec("read_file", "read", "idempotent", builtin="read_file", max_output_bytes=10)

    output = run_tool(spec, {"path": "big.txt"}, ctx).output
    assert output["content"] == "€€€"
    assert output["truncated"] is True
    assert artifacts.stored == [data]
    assert output["artifact_id"] == hashlib.sha256(data).hexdigest()


def test_read_file_says_when_content_is_not_text(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "blob.bin").write_bytes(b"ab\xff\xfecd")
    output = run_tool(READ, {"path": "blob.bin"}, ctx).output
    assert output["binary"] is True
    assert output["content"] == "ab\ufffd\ufffdcd"


def test_read_file_refusals_and_missing_files(workspace: Path, outside: Path, ctx: ToolContext) -> None:
    (workspace / "link").symlink_to(outside)
    (workspace / "leak.txt").symlink_to(outside / "secret.txt")

    for path in ("/etc/passwd", "../outside/secret.txt", "link/secret.txt", "leak.txt"):
        error = error_of(run_tool(READ, {"path": path}, ctx))
        assert error["code"] == "path_outside_workspace"
        assert "TOP-SECRET-CONTENT" not in json.dumps(error)
    error = error_of(run_tool(READ, {"path": "missing.txt"}, ctx))
    assert (error["code"], error["kind"]) == ("not_found", "tool_failed")
    assert error_of(run_tool(READ, {"path": ["a"]}, ctx))["code"] == "invalid_arguments"


# --- command tools ---------------------------------------------------------------------------


def test_a_command_tool_gets_its_arguments_the_handshake_variables_and_the_workspace(
    workspace: Path, ctx: ToolContext
) -> None:
    args = {"to": "team", "text": "héllo ✓", "n": [1, 2]}
    seen = report(run_tool(command(env=("PASSED_TOKEN", "NOT_SET")), args, ctx))

    assert seen["args"] == args
    assert Path(seen["cwd"]) == workspace.resolve()
    assert seen["env"]["HANDSHAKE_IDEMPOTENCY_KEY"] == ctx.idempotency_key
    assert seen["env"]["HANDSHAKE_SESSION_ID"] == "sess-1"
    assert seen["env"]["HANDSHAKE_TOOL_CALL_ID"] == "call-1-0"
    assert seen["env"]["PASSED_TOKEN"] == "given-to-the-tool"
    # Python may add LC_CTYPE itself when it coerces a C locale; nothing else may appear.
    assert set(seen["env"]) - {"LC_CTYPE"} == {
        "PATH", "HOME", "LANG", "TZ", "PASSED_TOKEN",
        "HANDSHAKE_IDEMPOTENCY_KEY", "HANDSHAKE_SESSION_ID", "HANDSHAKE_TOOL_CALL_ID",
    }  # fmt: skip
    assert "s3cret-not-for-tools" not in json.dumps(seen)


def test_shell_metacharacters_in_arguments_are_only_data(workspace: Path, ctx: ToolContext) -> None:
    text = "$(touch pwned1); `touch pwned2`; touch pwned3 && touch pwned4 | tee pwned5 > pwned6 '\"\n"
    spec = ToolSpec("echo", "execute", "idempotent", command=(*FAKE_TOOL, "; touch pwned7"))
    seen = report(run_tool(spec, {"text": text}, ctx))
    assert seen["args"] == {"text": text}
    assert list(workspace.iterdir()) == []


def test_a_non_zero_exit_is_a_tool_error_with_what_the_tool_said(ctx: ToolContext) -> None:
    outcome = run_tool(command("notify"), {"stderr": "no route to the team\n", "exit": 3}, ctx)
    assert outcome.error == {
        "code": "exit_status",
        "kind": "tool_failed",
        "retryable": False,
        "message": "notify exited with status 3",
        "exit_code": 3,
        "stdout": "",
        "stderr": "no route to the team\n",
    }


def test_a_tool_that_runs_too_long_is_killed_with_a_retryable_timeout(
    workspace: Path, ctx: ToolContext
) -> None:
    started = time.monotonic()
    outcome = run_tool(command("slow", timeout_seconds=0.5), {"sleep": 30, "touch": "done"}, ctx)
    error = error_of(outcome)
    assert (error["code"], error["kind"], error["retryable"]) == ("timeout", "timeout", True)
    assert time.monotonic() - started < 5
    assert not (workspace / "done").exists()


def test_a_timeout_does_not_wait_for_what_the_tool_left_running(workspace: Path, ctx: ToolContext) -> None:
    script = "sleep 3 & sleep 30; touch done"  # the background sleep keeps the pipes open after the kill
    spec = ToolSpec("slow", "execute", "idempotent", command=("/bin/sh", "-c", script), timeout_seconds=0.3)
    started = time.monotonic()
    assert error_of(run_tool(spec, {}, ctx))["code"] == "timeout"
    assert time.monotonic() - started < 2.5
    assert not (workspace / "done").exists()


def test_a_tool_that_exits_leaving_a_background_process_has_finished(ctx: ToolContext) -> None:
    # The background `sleep` keeps stdout open; the call still took effect and must not look timed out.
    spec = ToolSpec(
        "daemonize", "execute", "non_idempotent", command=("/bin/sh", "-c", "echo started; sleep 3 & exit 0")
    )
    started = time.monotonic()
    outcome = run_tool(spec, {}, ctx)
    assert outcome.as_result_data() == {"output": {"exit_code": 0, "stdout": "started\n", "stderr": ""}}
    assert time.monotonic() - started < 2.5


def test_a_program_that_cannot_start_is_a_launch_failure(workspace: Path, ctx: ToolContext) -> None:
    (workspace / "not-executable.sh").write_text("echo hi\n")
    for argv in (
        ("/nonexistent/bin/tool",),
        ("no-such-program-anywhere",),
        (str(workspace / "not-executable.sh"),),
    ):
        spec = ToolSpec("broken", "execute", "idempotent", command=argv)
        error = error_of(run_tool(spec, {}, ctx))
        assert (error["code"], error["kind"], error["retryable"]) == ("launch_failed", "launch_failed", False)
        assert argv[0] in error["message"]


def test_large_output_is_capped_and_stored_whole(ctx: ToolContext, artifacts: Artifacts) -> None:
    spec = command(max_output_bytes=1001)
    outcome = run_tool(spec, {"stdout_repeat": ["é", 5000], "stderr": "short"}, ctx)

    full = ("é" * 5000).encode()
    assert outcome.ok
    assert outcome.output["stdout"] == "é" * 500  # 1000 bytes: the 1001st would split a character
    assert outcome.output["stdout_truncated"] is True
    assert outcome.output["stdout_artifact_id"] == hashlib.sha256(full).hexdigest()
    assert outcome.output["stderr"] == "short" and "stderr_truncated" not in outcome.output
    assert artifacts.stored == [full]

    failed = run_tool(spec, {"stdout_repeat": ["x", 2000], "exit": 1}, ctx)
    assert error_of(failed)["stdout"] == "x" * 1001 and error_of(failed)["stdout_truncated"] is True
    assert artifacts.stored[-1] == b"x" * 2000


# --- signals -------------------------------------------------------------------------------


def start_driver(workspace: Path, mode: str) -> subprocess.Popen[str]:
    """A stand-in for handshake, in its own process group (as a shell gives each job)."""
    return subprocess.Popen(
        [sys.executable, str(TOOLS / "driver.py"), str(workspace), mode],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return path.exists()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_ctrl_c_on_handshake_lets_a_running_tool_finish(workspace: Path) -> None:
    driver = start_driver(workspace, "cooperative")
    try:
        assert wait_for(workspace / "started", 10)
        os.killpg(driver.pid, signal.SIGINT)
        stdout, _ = driver.communicate(timeout=10)
    finally:
        kill_group(driver.pid)
    result = json.loads(stdout)
    assert result["interrupted"] is True
    assert result["outcome"]["output"] == {"exit_code": 0, "stdout": "still working\n", "stderr": ""}
    assert (workspace / "done").read_text() == "done"


def test_a_tool_outlives_handshake_stopped_by_sigint_and_sigterm(workspace: Path) -> None:
    driver = start_driver(workspace, "default")
    try:
        assert wait_for(workspace / "started", 10)
        os.killpg(driver.pid, signal.SIGINT)
        os.killpg(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=10) != 0
        assert not (workspace / "done").exists()  # handshake is gone before the tool is done
        assert wait_for(workspace / "done", 10)
    finally:
        kill_group(driver.pid)


def test_killing_handshakes_process_group_kills_the_tool(workspace: Path) -> None:
    driver = start_driver(workspace, "default")
    try:
        assert wait_for(workspace / "started", 10)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        assert not wait_for(workspace / "done", 1.0)
    finally:
        kill_group(driver.pid)


# --- probes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "verdict"), [(0, "happened"), (1, "not_happened"), (2, "unknown")])
def test_a_probe_answers_whether_the_call_happened(status: int, verdict: str, ctx: ToolContext) -> None:
    spec = ToolSpec("notify", "execute", "non_idempotent", command=FAKE_TOOL, probe=PROBE)
    answer, detail, _output = run_probe(spec, {"status": status, "label": "call-1-0"}, ctx)
    assert answer == verdict
    assert detail == f"probe exited with status {status}: checked call call-1-0"


def test_a_probe_that_cannot_answer_means_unknown(workspace: Path, ctx: ToolContext) -> None:
    no_probe = ToolSpec("notify", "execute", "non_idempotent", command=FAKE_TOOL)
    assert run_probe(no_probe, {}, ctx)[0] == "unknown"
    missing = ToolSpec(
        "notify", "execute", "non_idempotent", command=FAKE_TOOL, probe=("/nonexistent/probe",)
    )
    assert run_probe(missing, {}, ctx)[0] == "unknown"
    slow = ToolSpec(
        "notify", "execute", "non_idempotent", command=FAKE_TOOL, probe=FAKE_TOOL, timeout_seconds=0.3
    )
    answer, detail, _output = run_probe(slow, {"sleep": 30}, ctx)
    assert answer == "unknown" and "did not finish" in detail


def test_a_probe_runs_like_its_tool(workspace: Path, ctx: ToolContext) -> None:
    spec = ToolSpec(
        "notify", "execute", "non_idempotent", command=FAKE_TOOL, probe=FAKE_TOOL, env=("PASSED_TOKEN",)
    )
    assert run_probe(spec, {"report_to": "seen.json", "label": "x"}, ctx)[0] == "happened"
    seen = json.loads((workspace / "seen.json").read_text())
    assert seen["args"] == {"report_to": "seen.json", "label": "x"}
    assert Path(seen["cwd"]) == workspace.resolve()
    assert seen["env"]["HANDSHAKE_IDEMPOTENCY_KEY"] == ctx.idempotency_key
    assert seen["env"]["PASSED_TOKEN"] == "given-to-the-tool"
    assert "SECRET_TOKEN" not in seen["env"]
