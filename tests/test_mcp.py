"""MCP tool servers (docs/JOBS.md, [[mcp]]): real servers from PyPI (mcp-server-git,
mcp-server-time) and a small one of our own (tests/data/mcp/toy_server.py), driven by a
scripted model, killed at chosen points: never two commits for one call."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.engine.jobs import JobError, McpServerSpec, load_job
from handshake_cli.engine.jobs.job import McpOverride
from handshake_cli.engine.tools import mcp_tools
from tests.support.cli import Cli, crash_run, handshake, start, wait_for
from tests.support.crashkit import describe, kill_after

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mcp") is None, reason="the MCP SDK is not installed (pip install -e '.[test]')"
)
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not on this machine")
needs_git_server = pytest.mark.skipif(
    importlib.util.find_spec("mcp_server_git") is None,
    reason="mcp-server-git is not installed (the test extra)",
)
TOY = Path(__file__).parent / "data" / "mcp" / "toy_server.py"


def write_job(tmp: Path, mcp: str, turns: list[dict[str, Any]], name: str = "job") -> Path:
    script = tmp / f"{name}.script.toml"
    lines = []
    for turn in turns:
        lines.append("[[turns]]")
        lines.append(f"text = {json.dumps(turn.get('text', ''))}")
        calls = ", ".join(
            f"{{ tool = {json.dumps(c['tool'])}, args = {_toml_table(c.get('args', {}))} }}"
            for c in turn.get("tool_calls", [])
        )
        lines.append(f"tool_calls = [{calls}]")
    script.write_text("\n".join(lines) + "\n")
    job = tmp / f"{name}.toml"
    job.write_text(f'[prompt]\nuser = "go"\n[model]\nscript = "{script.name}"\n{mcp}')
    return job


def _toml_table(args: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }"


def argv(*words: str) -> str:
    return json.dumps([sys.executable, *words])


def records(root: Path, session: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for segment in sorted((root / "sessions" / session / "journal").iterdir()):
        for line in segment.read_text().splitlines():
            record = json.loads(line)
            if record["type"] == kind:
                out.append(record["data"])
    return out


# --- the job format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[mcp]]\nname = "g"\n', "mcp[0] has neither command nor url"),
        (
            '[[mcp]]\nname = "g"\ncommand = ["x"]\nurl = "http://h/mcp"\n',
            "mcp[0].url cannot be given with command",
        ),
        ('[[mcp]]\nname = "g"\nurl = "ftp://h"\n', "mcp[0].url 'ftp://h' is not an http:// or https:// URL"),
        ('[[mcp]]\nname = "g"\ncommand = ["x"]\ncolour = 1\n', "mcp[0].colour is not a key of an MCP server"),
        ('[[mcp]]\nname = "g"\ncommand = ["x"]\ntools = ["a", "a"]\n', "mcp[0].tools[1] repeats 'a'"),
        (
            '[[mcp]]\nname = "g"\ncommand = ["x"]\ntools = ["a"]\n[mcp.override.b]\nside_effect = "read"\n',
            "mcp[0].override.b is not among this server's tools (a)",
        ),
        (
            '[[mcp]]\nname = "g"\ncommand = ["x"]\n[mcp.override.a]\nprobe = ["p"]\nprobe_tool = "b"\n',
            "mcp[0].override.a.probe_tool cannot be given with probe",
        ),
        (
            '[[mcp]]\nname = "g"\ncommand = ["x"]\n[mcp.override.a]\nidempotency = "maybe"\n',
            "mcp[0].override.a.idempotency is 'maybe', which is not one of",
        ),
        (
            '[[tools]]\nname = "a"\nbuiltin = "read_file"\nside_effect = "read"\nidempotency = "idempotent"\n'
            '[[mcp]]\nname = "g"\ncommand = ["x"]\ntools = ["a"]\n',
            "mcp[0].tools names 'a', which [[tools]] already has",
        ),
    ],
)
def test_a_bad_mcp_declaration_is_refused_naming_the_key(tmp_path: Path, body: str, message: str) -> None:
    job = write_job(tmp_path, body, [{"text": "done"}])
    with pytest.raises(JobError) as caught:
        load_job(job)
    assert caught.value.exit_code == 2
    assert message in caught.value.message


@pytest.mark.parametrize("where", ['command = ["./srv", "--x"]\nenv = ["GIT_DIR"]', 'url = "http://h:1/mcp"'])
def test_a_declared_server_round_trips_through_the_stored_job(tmp_path: Path, where: str) -> None:
    body = (
        f'[[mcp]]\nname = "git"\n{where}\ntools = ["git_commit"]\n'
        '[mcp.override.git_commit]\nprobe_tool = "git_log"\nprobe_match = "message"\ntimeout_seconds = 5\n'
    )
    job = load_job(write_job(tmp_path, body, [{"tool_calls": [{"tool": "git_commit"}]}, {"text": "done"}]))
    if job.mcp[0].command is not None:
        assert job.mcp[0].command == (str(tmp_path / "srv"), "--x")
    assert type(job).from_config(job.to_config()) == job


def test_the_gate_comes_from_the_annotations_and_the_job_wins() -> None:
    server = McpServerSpec(
        "s", command=("x",), override={"commit": McpOverride(idempotency="idempotent_with_key", probe=("p",))}
    )
    listing: list[dict[str, Any]] = [
        {"name": "status", "annotations": {"readOnlyHint": True}},
        {"name": "add", "annotations": {"readOnlyHint": False, "idempotentHint": True}},
        {"name": "commit", "annotations": {"readOnlyHint": False, "idempotentHint": False}},
        {"name": "bare", "annotations": None},
    ]
    specs = {spec.name: spec for spec in mcp_tools.tool_specs(server, listing)}
    assert (specs["status"].side_effect, specs["status"].idempotency) == ("read", "idempotent")
    assert (specs["add"].side_effect, specs["add"].idempotency) == ("write", "idempotent")
    assert (specs["bare"].side_effect, specs["bare"].idempotency) == ("write", "non_idempotent")
    assert specs["bare"].origin == {"side_effect": "default", "idempotency": "default", "probe": "none"}
    assert specs["commit"].idempotency == "idempotent_with_key"
    assert specs["commit"].origin == {"side_effect": "annotation", "idempotency": "job", "probe": "job"}


def test_a_probe_tools_answer_maps_to_a_verdict() -> None:
    text = {"content": [{"type": "text", "text": "commit hk_1 first"}]}
    assert mcp_tools.probe_verdict(text, {}, "hk_1", "idempotency_key")[0] == "happened"
    assert mcp_tools.probe_verdict(text, {}, "hk_2", "idempotency_key")[0] == "not_happened"
    assert mcp_tools.probe_verdict(text, {"message": "first"}, "hk_2", "message")[0] == "happened"
    assert (
        mcp_tools.probe_verdict({"structuredContent": {"happened": False}}, {}, "k", "x")[0] == "not_happened"
    )
    assert mcp_tools.probe_verdict({"isError": True, "content": []}, {}, "k", "x")[0] == "unknown"


# --- mcp-server-git ------------------------------------------------------------------------


def git_repo(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "base.txt").write_text("base\n")
    subprocess.run(["git", "add", "base.txt"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True)
    (path / "a.txt").write_text("hi\n")
    return path


def commits(repo: Path) -> list[str]:
    out = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=False)
    return out.stdout.split()


def git_job(tmp: Path, probe: str = "") -> Path:
    body = (
        f'[[mcp]]\nname = "git"\ncommand = {argv("-m", "mcp_server_git")}\n'
        'tools = ["git_status", "git_add", "git_commit", "git_log"]\n' + probe
    )
    turns: list[dict[str, Any]] = [
        {
            "tool_calls": [
                {"tool": "git_status", "args": {"repo_path": "."}},
                {"tool": "git_add", "args": {"repo_path": ".", "files": ["a.txt"]}},
            ]
        },
        {"tool_calls": [{"tool": "git_commit", "args": {"repo_path": ".", "message": "first"}}]},
        {"tool_calls": [{"tool": "git_log", "args": {"repo_path": "."}}]},
        {"text": "done"},
    ]
    return write_job(tmp, body, turns)


@needs_git
@needs_git_server
def test_git_server_runs_and_inspect_says_where_each_declaration_came_from(
    tmp_path: Path, hs: Cli, root: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    done = hs("run", str(git_job(tmp_path)), "--workspace", str(repo), "--session-id", "g1", "--json")
    assert done.code == 0, done.stdout + done.stderr
    assert commits(repo) == ["first", "init"]
    listing = records(root, "g1", "mcp.tools")
    assert sorted(t["name"] for t in listing[0]["tools"]) == [
        "git_add",
        "git_commit",
        "git_log",
        "git_status",
    ]
    calls = {c["tool"]: c for c in hs("inspect", "g1", "--json").json["tool_calls"]}
    assert calls["git_commit"]["idempotency"] == "non_idempotent"
    assert calls["git_commit"]["mcp"] == {
        "server": "git",
        "origin": {"side_effect": "annotation", "idempotency": "annotation", "probe": "none"},
    }
    assert calls["git_status"]["side_effect"] == "read"


@needs_git
@needs_git_server
def test_a_commit_in_doubt_without_a_probe_blocks_and_is_never_made_twice(
    tmp_path: Path, hs: Cli, home_env: dict[str, str]
) -> None:
    repo = git_repo(tmp_path / "repo")
    crash_run(home_env, git_job(tmp_path), "g2", repo, "before_result:3")  # inside git_commit's call
    assert commits(repo) == ["first", "init"]
    first = hs("recover", "g2")
    assert first.code == 3, first.stdout + first.stderr
    assert "call-2-0 (git_commit)" in first.stderr and "--resolve call-2-0=done" in first.stderr
    again = hs("recover", "g2")
    assert (again.code, again.stderr) == (3, first.stderr)
    done = hs("recover", "g2", "--resolve", "call-2-0=done")
    assert done.code == 0, done.stdout + done.stderr
    assert commits(repo) == ["first", "init"]


@needs_git
@needs_git_server
@pytest.mark.parametrize(("point", "made"), [("before_result:3", True), ("after_intent:3", False)])
def test_a_probe_settles_a_commit_in_doubt(
    tmp_path: Path, hs: Cli, home_env: dict[str, str], root: Path, point: str, made: bool
) -> None:
    repo = git_repo(tmp_path / "repo")
    probe = '[mcp.override.git_commit]\nprobe_tool = "git_log"\nprobe_match = "message"\n'
    crash_run(home_env, git_job(tmp_path, probe), "g3", repo, point)
    assert commits(repo) == (["first", "init"] if made else ["init"])
    done = hs("recover", "g3")
    assert done.code == 0, done.stdout + done.stderr
    assert commits(repo) == ["first", "init"]
    settled = [r for r in records(root, "g3", "tool.result") if r["tool"] == "git_commit"]
    assert len(settled) == 1
    assert ("evidence" in settled[0]) is made


class HookGate:
    """A git hook (pre-commit or post-commit) in a test repository that holds the commit at
    that point: the first time it runs it writes its parent's pid (the git server's) to
    `entered`, then waits for the exit code the test writes into the `release` FIFO, and
    writes `left` as it exits with it. Later commits pass straight through."""

    def __init__(self, repo: Path, hook: str, where: Path) -> None:
        where.mkdir()
        self.entered, self.release, self.left = where / "entered", where / "release", where / "left"
        os.mkfifo(self.release)
        script = repo / ".git" / "hooks" / hook
        script.write_text(
            "#!/bin/sh\n"
            f"[ -e '{self.left}' ] && exit 0\n"
            f"echo $PPID > '{where}/entered.tmp' && mv '{where}/entered.tmp' '{self.entered}'\n"
            f"read code < '{self.release}'\n"
            f"touch '{self.left}'\n"
            'exit "$code"\n'
        )
        script.chmod(0o755)

    def open(self, code: int) -> None:
        with self.release.open("w") as fifo:  # blocks until the hook reads: it has entered
            fifo.write(f"{code}\n")
        wait_for(self.left.exists)

    def server_pid(self) -> int:
        return int(self.entered.read_text())


def kill_inside_git_commit(
    home_env: dict[str, str], job: Path, session: str, repo: Path, gate: HookGate, code: int
) -> None:
    """Run the job, SIGKILL `handshake run` while the git server's git_commit is held in the
    hook, then let the hook exit with `code` (for pre-commit, 1 refuses the commit) and stop
    the orphaned server."""
    run = start(home_env, "run", str(job), "--session-id", session, "--workspace", str(repo))
    try:
        wait_for(lambda: gate.entered.exists() or run.poll() is not None, timeout=60)
        assert run.poll() is None, run.communicate()
        os.kill(run.pid, signal.SIGKILL)
        run.communicate()
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    gate.open(code)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(gate.server_pid(), signal.SIGKILL)  # the SDK starts it in a session of its own


GIT_PROBE = '[mcp.override.git_commit]\nprobe_tool = "git_log"\nprobe_match = "message"\n'


@needs_git
@needs_git_server
@pytest.mark.parametrize(
    ("hook", "probe", "made"),
    [("post-commit", False, True), ("post-commit", True, True), ("pre-commit", True, False)],
)
def test_a_kill_of_handshake_while_git_commit_runs_never_makes_two_commits(
    tmp_path: Path, hs: Cli, home_env: dict[str, str], root: Path, hook: str, probe: bool, made: bool
) -> None:
    repo = git_repo(tmp_path / "repo")
    gate = HookGate(repo, hook, tmp_path / "gate")
    kill_inside_git_commit(
        home_env, git_job(tmp_path, GIT_PROBE if probe else ""), "r1", repo, gate, int(not made)
    )
    assert commits(repo) == (["first", "init"] if made else ["init"])
    [intent] = [r for r in records(root, "r1", "tool.intent") if r["tool"] == "git_commit"]
    assert not [r for r in records(root, "r1", "tool.result") if r["tool"] == "git_commit"]
    first = hs("recover", "r1")
    if probe:
        assert first.code == 0, first.stdout + first.stderr
        [settled] = [r for r in records(root, "r1", "tool.result") if r["tool"] == "git_commit"]
        assert ("evidence" in settled) is made
    else:
        assert first.code == 3, first.stdout + first.stderr
        call = intent["tool_call_id"]
        assert f"{call} (git_commit)" in first.stderr and f"--resolve {call}=done" in first.stderr
        assert intent["idempotency_key"] in first.stderr
        done = hs("recover", "r1", "--resolve", f"{call}=done")
        assert done.code == 0, done.stdout + done.stderr
    assert commits(repo) == ["first", "init"]


# --- mcp-server-time -----------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("mcp_server_time") is None, reason="mcp-server-time is not installed"
)
def test_a_read_only_server(tmp_path: Path, hs: Cli, workspace: Path, root: Path) -> None:
    body = f'[[mcp]]\nname = "time"\ncommand = {argv("-m", "mcp_server_time", "--local-timezone", "UTC")}\n'
    body += 'tools = ["get_current_time"]\n'
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "get_current_time", "args": {"timezone": "UTC"}}]},
        {"text": "done"},
    ]
    done = hs(
        "run", str(write_job(tmp_path, body, turns)), "--workspace", str(workspace), "--session-id", "t1"
    )
    assert done.code == 0, done.stdout + done.stderr
    [intent] = records(root, "t1", "tool.intent")
    assert (intent["side_effect"], intent["idempotency"]) == ("read", "idempotent")
    [result] = records(root, "t1", "tool.result")
    assert "UTC" in json.dumps(result["output"])


# --- a server of our own -------------------------------------------------------------------


def toy_job(tmp: Path, turns: list[dict[str, Any]], extra: str = "", name: str = "toy") -> Path:
    body = f'[[mcp]]\nname = "toy"\ncommand = {argv(str(TOY))}\n'
    body += 'env = ["TOY_VARIANT", "TOY_CRASH_AFTER_APPEND"]\n'
    body += 'tools = ["append", "lookup", "hang", "fail", "refuse", "append_when_released"]\n'
    return write_job(tmp, body + extra, turns, name)


def test_the_key_travels_in_meta_and_errors_are_tool_results(
    tmp_path: Path, hs: Cli, workspace: Path, root: Path
) -> None:
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "append", "args": {"line": "one"}}, {"tool": "fail"}, {"tool": "refuse"}]},
        {"text": "done"},
    ]
    done = hs("run", str(toy_job(tmp_path, turns)), "--workspace", str(workspace), "--session-id", "k1")
    assert done.code == 0, done.stdout + done.stderr
    intent = records(root, "k1", "tool.intent")[0]
    assert (workspace / "ledger.txt").read_text() == f"one {intent['idempotency_key']}\n"
    results = {r["tool"]: r for r in records(root, "k1", "tool.result")}
    assert results["append"]["output"]["text"] == "appended one"
    assert results["fail"]["error"]["code"] == "tool_error"
    assert results["refuse"]["error"]["code"] == "mcp_error"
    assert "Traceback" not in done.stderr


def test_a_server_that_dies_mid_call_leaves_the_call_in_doubt_and_a_probe_settles_it(
    tmp_path: Path, hs: Cli, workspace: Path, root: Path
) -> None:
    probe = '[mcp.override.append]\nprobe_tool = "lookup"\n'
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "append", "args": {"line": "one"}}]},
        {"text": "done"},
    ]
    crash = {"TOY_CRASH_AFTER_APPEND": "1"}
    job = toy_job(tmp_path, turns, probe)
    stopped = hs("run", str(job), "--workspace", str(workspace), "--session-id", "d1", extra_env=crash)
    assert stopped.code == 75, stopped.stdout + stopped.stderr
    [failed] = records(root, "d1", "mcp.server_failed")
    assert failed["tool_call_id"] == "call-1-0"
    done = hs("recover", "d1", extra_env=crash)
    assert done.code == 0, done.stdout + done.stderr
    assert len((workspace / "ledger.txt").read_text().splitlines()) == 1
    assert records(root, "d1", "tool.result")[0]["evidence"]["probe"] == "happened"


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"  # a zombie has exited: gone


def held_pids(workspace: Path) -> list[int]:
    return sorted(int(path.suffix[1:]) for path in workspace.glob("held.*"))


def test_a_server_left_running_by_a_killed_run_is_stopped_before_the_probe(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, root: Path
) -> None:
    """The SDK starts a stdio server in a session of its own: a SIGKILL of `handshake run`
    leaves it running, and it finishes the call in progress once it can. A `recover` run at
    once must stop it (its pid gone) before its probe asks, or the probe says "not happened",
    the call runs again, and the ledger gets two lines for one call."""
    probe = '[mcp.override.append_when_released]\nprobe_tool = "lookup"\n'
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "append_when_released", "args": {"line": "one"}}]},
        {"text": "done"},
    ]
    job = toy_job(tmp_path, turns, probe)
    run = start(home_env, "run", str(job), "--session-id", "o1", "--workspace", str(workspace))
    orphan = 0
    try:
        wait_for(lambda: bool(held_pids(workspace)) or run.poll() is not None, timeout=60)
        assert run.poll() is None, run.communicate()
        [orphan] = held_pids(workspace)  # the call is in progress in the server
        os.kill(run.pid, signal.SIGKILL)
        run.communicate()
        assert running(orphan)
        [process] = records(root, "o1", "mcp.process")
        assert (process["server"], process["pid"], process["pgid"]) == ("toy", orphan, orphan)
        dry = subprocess.run(
            handshake("recover", "o1", "--dry-run", "--json"), env=home_env, capture_output=True, text=True
        )
        assert json.loads(dry.stdout)["stopped_mcp_servers"] == [] and running(orphan)  # touches nothing
        recover = start(home_env, "recover", "o1")
        try:
            # The probe said "not happened" and the call runs again, in a new server.
            wait_for(lambda: len(held_pids(workspace)) == 2 or recover.poll() is not None, timeout=60)
            (workspace / "release").touch()
            out, err = recover.communicate(timeout=60)
        finally:
            if recover.poll() is None:
                recover.kill()
                recover.communicate()
        assert recover.returncode == 0, out + err
        wait_for(lambda: not running(orphan), timeout=60)  # without the fix: once it has appended
        [key] = {r["idempotency_key"] for r in records(root, "o1", "tool.intent")}  # the rerun's too
        assert (workspace / "ledger.txt").read_text() == f"one {key}\n"
        assert (workspace / "lookups.txt").read_text() == "running: []\n"  # the probe came after
        [started] = records(root, "o1", "recovery.started")
        assert started["stopped_mcp_servers"] == [{"server": "toy", "pid": orphan, "killed": [orphan]}]
        assert f"stopped MCP server toy (pid {orphan})" in out
        assert describe(root, "o1")["state"] == "COMPLETED"
    finally:
        if orphan and running(orphan):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan, signal.SIGKILL)


def test_a_server_that_hangs_leaves_the_call_in_doubt_by_the_usual_rules(
    tmp_path: Path, hs: Cli, workspace: Path
) -> None:
    extra = "[mcp.override.hang]\ntimeout_seconds = 1\n"
    turns: list[dict[str, Any]] = [{"tool_calls": [{"tool": "hang"}]}, {"text": "done"}]
    job = toy_job(tmp_path, turns, extra)
    stopped = hs("run", str(job), "--workspace", str(workspace), "--session-id", "h1")
    assert stopped.code == 75, stopped.stdout + stopped.stderr
    assert "is in doubt" in stopped.stdout + stopped.stderr
    blocked = hs("recover", "h1")  # hang has no annotations: write, non_idempotent, no probe
    assert blocked.code == 3, blocked.stdout + blocked.stderr


def test_a_changed_tool_list_blocks_until_accepted(
    tmp_path: Path, hs: Cli, workspace: Path, home_env: dict[str, str]
) -> None:
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "lookup"}]},
        {"tool_calls": [{"tool": "lookup"}]},
        {"text": "done"},
    ]
    job = toy_job(tmp_path, turns)
    crash_run(home_env, job, "c1", workspace, "after_result:1")
    changed = {"TOY_VARIANT": "changed"}
    blocked = hs("recover", "c1", extra_env=changed)
    assert blocked.code == 3, blocked.stdout + blocked.stderr
    assert "--accept-divergence" in blocked.stderr
    plan = hs("recover", "c1", "--dry-run", "--json").json
    assert (plan["action"], plan["reason"]) == ("blocked", "mcp_tools_changed")
    same = hs("recover", "c1", extra_env=changed)
    assert same.code == 3
    accepted = hs("recover", "c1", "--accept-divergence", extra_env=changed)
    assert accepted.code == 0, accepted.stdout + accepted.stderr


# --- the streamable HTTP transport ---------------------------------------------------------


@pytest.fixture
def http_toy(workspace: Path, tmp_path: Path) -> Iterator[str]:
    """The toy server over streamable HTTP on loopback, in the workspace: its URL. It prints
    its port once it listens, so nothing here waits on time."""
    with (tmp_path / "http-toy.stderr").open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, str(TOY), "--http"],
            cwd=workspace,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"the toy server did not start: {(tmp_path / 'http-toy.stderr').read_text()}"
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("probe", [False, True])
def test_a_server_over_streamable_http_is_called_and_recovered(
    tmp_path: Path, hs: Cli, workspace: Path, root: Path, home_env: dict[str, str], http_toy: str, probe: bool
) -> None:
    body = f'[[mcp]]\nname = "toy"\nurl = "{http_toy}"\ntools = ["append", "lookup"]\n'
    if probe:
        body += '[mcp.override.append]\nprobe_tool = "lookup"\n'
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "lookup"}]},
        {"tool_calls": [{"tool": "append", "args": {"line": "one"}}]},
        {"text": "done"},
    ]
    job = write_job(tmp_path, body, turns)
    crash_run(home_env, job, "w1", workspace, "after_intent:2")  # append's intent is durable, no more
    [listing] = records(root, "w1", "mcp.tools")
    assert (listing["transport"], listing["url"]) == ("http", http_toy)
    assert records(root, "w1", "tool.result")[0]["output"]["text"] == ""  # lookup ran: an empty ledger
    assert not (workspace / "ledger.txt").exists()
    if probe:
        done = hs("recover", "w1")  # lookup does not find the key: append runs, once
    else:
        blocked = hs("recover", "w1")
        assert blocked.code == 3, blocked.stdout + blocked.stderr
        assert "call-2-0 (append)" in blocked.stderr and "non_idempotent and has no probe" in blocked.stderr
        assert not (workspace / "ledger.txt").exists()
        done = hs("recover", "w1", "--resolve", "call-2-0=retry")
    assert done.code == 0, done.stdout + done.stderr
    intent = records(root, "w1", "tool.intent")[1]
    assert intent["tool"] == "append"
    assert (
        workspace / "ledger.txt"
    ).read_text() == f"one {intent['idempotency_key']}\n"  # the key, from _meta
    settled = [r for r in records(root, "w1", "tool.result") if r["tool"] == "append"]
    assert [r["output"]["text"] for r in settled] == ["appended one"]
    evidence = records(root, "w1", "recovery.started")[0]["in_doubt"][0]
    assert evidence["decision"] == ("probe" if probe else "block")


def test_a_server_that_cannot_start_creates_no_session(
    tmp_path: Path, hs: Cli, workspace: Path, root: Path
) -> None:
    body = '[[mcp]]\nname = "nope"\ncommand = ["/nonexistent/mcp-server"]\n'
    refused = hs(
        "run", str(write_job(tmp_path, body, [{"text": "done"}])), "--workspace", str(workspace), "--json"
    )
    assert refused.code == 74, refused.stdout + refused.stderr
    assert refused.json["error"]["code"] == "mcp_unavailable"
    assert not (root / "sessions").exists() or not any((root / "sessions").iterdir())


def test_a_tool_the_server_does_not_offer_is_refused_before_the_session_exists(
    tmp_path: Path, hs: Cli, workspace: Path
) -> None:
    body = f'[[mcp]]\nname = "toy"\ncommand = {argv(str(TOY))}\ntools = ["append", "nosuch"]\n'
    refused = hs("run", str(write_job(tmp_path, body, [{"text": "done"}])), "--workspace", str(workspace))
    assert refused.code == 2, refused.stdout + refused.stderr
    assert "mcp[0].tools names 'nosuch', which the server 'toy' does not offer" in refused.stderr


def test_an_inconclusive_probe_blocks_saying_the_probe_could_not_tell(
    tmp_path: Path, hs: Cli, workspace: Path, home_env: dict[str, str]
) -> None:
    probe = '[mcp.override.append]\nprobe_tool = "fail"\n'  # its answer is always an error
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "append", "args": {"line": "one"}}]},
        {"text": "done"},
    ]
    crash_run(home_env, toy_job(tmp_path, turns, probe), "p1", workspace, "after_intent:1")
    blocked = hs("recover", "p1")
    assert blocked.code == 3, blocked.stdout + blocked.stderr
    assert "non_idempotent and its probe could not tell whether it took effect" in blocked.stderr
    assert "has no probe" not in blocked.stderr
    assert "--resolve call-1-0=done" in blocked.stderr


def test_accept_divergences_help_names_both_reasons() -> None:
    from handshake_cli.cli.reference import help_text

    shown = " ".join(help_text("recover").split())
    assert "model_divergence" in shown and "mcp_tools_changed" in shown


def test_a_fork_keeps_the_listing_and_the_servers_stderr_and_its_recovery_compares(
    tmp_path: Path, hs: Cli, workspace: Path, root: Path
) -> None:
    from handshake_cli.paths import Paths
    from handshake_cli.storage.store import Store

    probe = '[mcp.override.append]\nprobe_tool = "lookup"\n'
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "lookup"}]},
        {"tool_calls": [{"tool": "append", "args": {"line": "one"}}]},
        {"text": "done"},
    ]
    job = toy_job(tmp_path, turns, probe)
    crash = {"TOY_CRASH_AFTER_APPEND": "1"}
    stopped = hs("run", str(job), "--workspace", str(workspace), "--session-id", "o1", extra_env=crash)
    assert stopped.code == 75, stopped.stdout + stopped.stderr
    forked = hs("recover", "o1", "--fork", "o2")
    assert forked.code == 0, forked.stdout + forked.stderr
    [listing] = records(root, "o2", "mcp.tools")
    assert listing == records(root, "o1", "mcp.tools")[0]
    [failed] = records(root, "o2", "mcp.server_failed")
    stderr = Store(Paths(root)).session("o2").artifact_store().get(failed["stderr_artifact_id"])
    assert b"toy: crashing after the append" in stderr
    changed = hs("recover", "o2", extra_env={"TOY_VARIANT": "changed"})
    assert changed.code == 3, changed.stdout + changed.stderr
    [blocked] = records(root, "o2", "recovery.blocked")
    assert blocked["reason"] == "mcp_tools_changed" and "toy: lookup is gone" in blocked["detail"]
    assert hs("recover", "o1", "--fork", "o3").code == 0
    done = hs("recover", "o3")  # the same tools: its probe settles the append, nothing new is journaled
    assert done.code == 0, done.stdout + done.stderr
    assert records(root, "o3", "mcp.tools") == [listing]
    assert len((workspace / "ledger.txt").read_text().splitlines()) == 1


# --- a random-kill sweep (slow) ------------------------------------------------------------

SWEEP_KILLS = int(os.environ.get("HANDSHAKE_MCP_SWEEP_KILLS", "100"))
SWEEP_MESSAGES = ("alpha", "bravo")  # no hex digits: a commit hash never holds one


def sweep_job(tmp: Path, name: str, probe: bool) -> Path:
    body = (
        f'[[mcp]]\nname = "git"\ncommand = {argv("-m", "mcp_server_git")}\n'
        'tools = ["git_add", "git_commit", "git_log"]\n' + (GIT_PROBE if probe else "")
    )
    here = {"repo_path": "."}
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"tool": "git_add", "args": {**here, "files": ["a.txt"]}}]},
        {"tool_calls": [{"tool": "git_commit", "args": {**here, "message": "alpha"}}]},
        {
            "tool_calls": [
                {"tool": "git_add", "args": {**here, "files": ["b.txt"]}},
                {"tool": "git_log", "args": here},
            ]
        },
        {"tool_calls": [{"tool": "git_commit", "args": {**here, "message": "bravo"}}]},
        {"tool_calls": [{"tool": "git_log", "args": here}]},
        {"text": "done"},
    ]
    return write_job(tmp, body, turns, name)


def start_bytes(home_env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        handshake(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=home_env,
        start_new_session=True,
    )


def commit_calls_in_doubt(root: Path, session: str) -> int:
    if not (root / "sessions" / session).is_dir():
        return 0
    settled = {r["tool_call_id"] for r in records(root, session, "tool.result")}
    intents = records(root, session, "tool.intent")
    return sum(1 for r in intents if r["tool"] == "git_commit" and r["tool_call_id"] not in settled)


@needs_git
@needs_git_server
@pytest.mark.slow
def test_random_sigkills_of_run_and_recover_never_make_two_commits(
    tmp_path: Path, home_env: dict[str, str], root: Path
) -> None:
    """SIGKILLs at random instants of `run` and `recover` (recover killed again and again) of
    sessions that add, commit, add, commit and log through mcp-server-git, half of them with
    git_log as git_commit's probe. After each session's last recovery: each commit message is
    in the repository at most once, and the session is COMPLETED (each commit once), or
    BLOCKED with guidance naming a git_commit in doubt (only without a probe).
    HANDSHAKE_MCP_SWEEP_KILLS sets how many kills (default 100), HANDSHAKE_MCP_SWEEP_SEED the seed."""
    rng = random.Random(int(os.environ.get("HANDSHAKE_MCP_SWEEP_SEED", "20261203")))
    tally: Counter[str] = Counter()
    started = time.monotonic()

    def journal_records(session: str) -> int:
        journal = root / "sessions" / session / "journal"
        if not journal.is_dir():
            return 0
        return sum(path.read_bytes().count(b"\n") for path in journal.iterdir())

    def finish(
        what: str, session: str, proc: subprocess.Popen[bytes], more: int | None
    ) -> tuple[int | None, str]:
        """Wait for the command, or SIGKILL it a random instant (0-100 ms) after its session's
        journal has grown by `more` records: kills land all along the session, not mostly in
        the interpreter's start-up."""
        if more is not None:
            target = journal_records(session) + more
            while proc.poll() is None and journal_records(session) < target:
                time.sleep(0.002)
            if kill_after(proc, rng.uniform(0, 0.1)):
                tally[f"{what}_killed"] += 1
                return None, ""
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err.decode()

    number = 0
    while tally["run_killed"] + tally["recover_killed"] < SWEEP_KILLS:
        number += 1
        session, probe = f"s{number}", number % 2 == 0
        repo = git_repo(tmp_path / session)
        (repo / "b.txt").write_text("b\n")
        job = sweep_job(tmp_path, session, probe)
        run = ["run", str(job), "--session-id", session, "--workspace", str(repo)]
        code, err = finish("run", session, start_bytes(home_env, *run), rng.randint(0, 38))
        history = [f"run {code}"]
        for attempt in range(40):
            if code in (0, 3) and (root / "sessions" / session).is_dir():
                break
            if code is None and commit_calls_in_doubt(root, session):
                tally[f"kills_leaving_a_commit_in_doubt_{'with' if probe else 'without'}_probe"] += 1
                history.append("(a commit in doubt)")
            exists = (root / "sessions" / session).is_dir()
            argv_ = ["recover", session] if exists else run
            what = "recover" if exists else "run"
            more = rng.randint(0, 20) if attempt < 5 and rng.random() < 0.6 else None
            code, err = finish(what, session, start_bytes(home_env, *argv_), more)
            history.append(f"{what} {code}")
            assert code in (None, 0, 3, 75), (session, history, err)
        found = commits(repo)
        context = (session, probe, history, found, err)
        assert all(found.count(message) <= 1 for message in SWEEP_MESSAGES), context
        state = describe(root, session)["state"]
        print(f"  {session} probe={probe}: {' '.join(history)} -> {state}, commits {found}", flush=True)
        tally["sessions"] += 1
        tally["commit_calls_checked"] += len(SWEEP_MESSAGES)
        if state == "COMPLETED":
            tally["completed"] += 1
            assert sorted(m for m in found if m in SWEEP_MESSAGES) == list(SWEEP_MESSAGES), context
        else:
            assert (state, code, probe) == ("BLOCKED", 3, False), context
            tally["blocked"] += 1
            [doubt] = [r for r in records(root, session, "tool.intent") if r["tool"] == "git_commit"][-1:]
            call = doubt["tool_call_id"]
            assert f"{call} (git_commit)" in err and f"--resolve {call}=done" in err, context
    figures = {**tally, "seconds": round(time.monotonic() - started, 1)}
    print(f"MCP kill sweep figures: {json.dumps(figures)}")
    assert tally["run_killed"] and tally["recover_killed"]
