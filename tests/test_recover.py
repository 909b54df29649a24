"""`handshake recover`: real sessions, real crashes, what a user sees afterwards.

Every session here is made by the console script and crashed for real: a SIGKILL at a named
crash point (HANDSHAKE_CRASH_AT) or of a running process. Recovery is then run as a user
would run it, and the tests check what that user would notice: the exit code, the guidance
text (byte for byte against tests/data/golden_guidance/), the message thread `inspect` shows,
how many times a tool's effect happened (the tools in tests/data/recover_jobs/ leave a trace in
the workspace), and whether any byte of the session changed when nothing should have.

Golden guidance uses fixed session ids and passes the root through HANDSHAKE_HOME, so the
text holds no temporary path. To review or regenerate a golden file, run the command its
test runs with `--json` and copy the `guidance` list, one line per entry.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from handshake_cli.storage import lock
from handshake_cli.storage.journal.writer import JournalWriter
from tests.support.cli import Cli, CliResult, crash_run, start, wait_for
from tests.support.jobs import SEND_TURNS, WRITE, long_turn_job, send_job, send_tool, write_job
from tests.support.paths import DATA
from tests.support.sessions import effects, records_of, session_dir, snapshot

RECOVER_JOBS = DATA / "recover_jobs"
GOLDEN = DATA / "golden_guidance"


# -- tools and jobs ------------------------------------------------------------------------


STORE_TOOL = {
    "name": "store",
    "command": [sys.executable, str(RECOVER_JOBS / "keyed_store.py")],
    "side_effect": "write",
    "idempotency": "idempotent_with_key",
}


# -- reading sessions and guidance ---------------------------------------------------------


def journal_bytes(root: Path, session_id: str) -> bytes:
    segments = sorted((session_dir(root, session_id) / "journal").iterdir())
    return b"".join(segment.read_bytes() for segment in segments)


def golden(name: str) -> list[str]:
    return (GOLDEN / f"{name}.txt").read_text(encoding="utf-8").splitlines()


def as_stderr(lines: list[str]) -> str:
    """Guidance as human mode prints it on stderr."""
    return "".join(f"  {line}\n" for line in lines)


def inspect(hs: Cli, session_id: str) -> dict[str, Any]:
    result = hs("inspect", session_id, "--json")
    assert result.code == 0, result.stdout + result.stderr
    return dict(result.json)


def reference_messages(cli: Cli, tmp_path: Path, job: Path, session_id: str) -> list[dict[str, Any]]:
    """The thread of a crash-free run of the same job under the same session id."""
    root, workspace = tmp_path / "reference-root", tmp_path / "reference-ws"
    workspace.mkdir()
    env = {"HANDSHAKE_HOME": str(root)}
    run = cli("run", str(job), "--session-id", session_id, "--workspace", str(workspace), extra_env=env)
    assert run.code == 0, run.stdout + run.stderr
    result = cli("inspect", session_id, "--json", extra_env=env)
    return list(result.json["messages"])


def run_printed(cli: Cli, line: str, extra_env: dict[str, str] | None = None) -> CliResult:
    """Run a command exactly as guidance printed it."""
    words = shlex.split(line)
    assert words[0] == "handshake", line
    return cli(*words[1:], extra_env=extra_env)


# -- 1. golden guidance ------------------------------------------------------------------


def test_golden_blocked_guidance(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path), "blocked-1", workspace, "before_result")
    human = hs("recover", "blocked-1")
    assert human.code == 3, human.stdout + human.stderr
    assert human.stderr == as_stderr(golden("blocked"))
    assert "now BLOCKED: in_doubt_tool_call" in human.stdout
    doc = hs("recover", "blocked-1", "--json")
    assert doc.code == 3
    assert doc.json["guidance"] == golden("blocked")
    assert doc.json["status"] == "blocked"
    assert (doc.json["action"], doc.json["reason"]) == ("blocked", "in_doubt_tool_call")
    [call] = doc.json["in_doubt"]
    intent = next(r for r in records_of(root, "blocked-1") if r.type == "tool.intent")
    assert call["tool_call_id"] == "call-1-0" and call["tool"] == "send"
    assert call["idempotency_key"] == intent.data["idempotency_key"]
    assert call["idempotency_key"] in "\n".join(golden("blocked"))
    assert doc.json["commands"] == [line.strip() for line in golden("blocked") if "handshake " in line]
    assert len(effects(workspace)) == 1


def test_golden_blocked_guidance_repeats_a_typed_root_and_runs_as_printed(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, cli: Cli, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path), "blocked-1", workspace, "before_result")
    # No HANDSHAKE_HOME from here on: only the typed --root reaches the session.
    result = cli("recover", "blocked-1", "--root", str(root), "--json")
    assert result.code == 3, result.stdout
    guidance = result.json["guidance"]
    printed = [line for line in guidance if line.strip().startswith("handshake ")]
    assert len(printed) == 3
    for line in printed:
        assert line.endswith(f" --root {root}"), line
    assert [line.replace(f" --root {root}", "") for line in guidance] == golden("blocked")
    assert result.json["commands"] == [line.strip() for line in printed]
    done = run_printed(cli, printed[0])  # handshake recover blocked-1 --resolve call-1-0=done --root DIR
    assert done.code == 0, done.stdout + done.stderr
    assert cli("inspect", "blocked-1", "--root", str(root), "--json").json["state"] == "COMPLETED"
    assert len(effects(workspace)) == 1


def changing_model_job(tmp_path: Path) -> Path:
    """A deterministic model (command provider) that changes its first word once the
    workspace holds a file named `diverge` (tests/data/recover_jobs/changing_model.py)."""
    directory = tmp_path / "job-changing"
    directory.mkdir()
    job = {
        "name": "changing",
        "prompt": {"user": "Count."},
        "model": {
            "provider": "command",
            "command": [sys.executable, str(RECOVER_JOBS / "changing_model.py")],
            "deterministic": True,
        },
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def test_golden_diverged_guidance_then_accept_divergence(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, changing_model_job(tmp_path), "diverged-1", workspace, "mid_stream:2")
    chunks = [r for r in records_of(root, "diverged-1") if r.type == "model.chunk"]
    assert chunks and chunks[0].data["text"].startswith("word0 ")
    (workspace / "diverge").touch()

    human = hs("recover", "diverged-1")
    assert human.code == 3, human.stdout + human.stderr
    assert human.stderr == as_stderr(golden("diverged"))
    assert "now BLOCKED: model_divergence" in human.stdout
    again = hs("recover", "diverged-1", "--json")
    assert again.code == 3
    assert (again.json["action"], again.json["reason"]) == ("blocked", "model_divergence")
    assert again.json["guidance"] == golden("diverged")
    assert inspect(hs, "diverged-1")["state"] == "BLOCKED"
    blocks = [r.data["reason"] for r in records_of(root, "diverged-1") if r.type == "recovery.blocked"]
    assert blocks == ["model_divergence"]  # recovering it again wrote nothing more

    accepted = hs("recover", "diverged-1", "--accept-divergence", "--json")
    assert accepted.code == 0, accepted.stdout
    assert accepted.json["state_after"] == "COMPLETED"
    doc = inspect(hs, "diverged-1")
    assert doc["state"] == "COMPLETED"
    assert doc["messages"][-1]["content"].startswith("changed0 word1 word2 ")
    assert doc["messages"][-1]["content"].endswith("word29")


def flip_a_byte(root: Path, session_id: str, *, after_last_checkpoint: bool) -> None:
    """Flip one bit inside the data of a record in the middle of the journal: one with intact
    records after it, and (when asked) after the newest checkpoint, which is where recovery
    starts to read."""
    records = records_of(root, session_id)
    candidates = records[1:-1]
    if after_last_checkpoint:
        newest = max(r.seq for r in records if r.type == "checkpoint.created")
        candidates = [r for r in candidates if r.seq > newest]
    else:
        candidates = [r for r in candidates if r.type == "tool.result"]
    assert candidates, [r.type for r in records]
    victim = candidates[len(candidates) // 2]
    path = session_dir(root, session_id) / "journal" / victim.segment
    data = bytearray(path.read_bytes())
    at = data.index(b'"data":{', victim.offset) + 9  # inside the first key of its data
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def corrupt_session(how: str, tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli) -> None:
    if how == "finished":
        # No checkpoint at the end, so the last turn's records follow the newest checkpoint.
        job = write_job(
            tmp_path / "job-finished",
            [*SEND_TURNS[:1], {"text": "It is sent, and that is all for today."}],
            [send_tool(probe=True)],
            delay_ms=15,
            checkpoint={"on_state_change": False},
        )
        run = hs("run", str(job), "--session-id", "corrupt-1", "--workspace", str(workspace))
        assert run.code == 0, run.stderr
    elif how == "crashed":
        crash_run(home_env, long_turn_job(tmp_path, 30, 20), "corrupt-1", workspace, "mid_stream:4")
    else:  # finished, with every record but the last ones covered by a checkpoint
        run = hs("run", str(send_job(tmp_path)), "--session-id", "corrupt-1", "--workspace", str(workspace))
        assert run.code == 0, run.stderr


def without_owner(files: dict[str, bytes]) -> dict[str, bytes]:
    """A crashed writer's stale owner.json is replaced by whoever takes the lock next."""
    return {name: data for name, data in files.items() if name != "owner.json"}


@pytest.mark.parametrize("how", ["finished", "crashed"])
def test_golden_corrupt_guidance(
    how: str, tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    corrupt_session(how, tmp_path, home_env, workspace, hs)
    flip_a_byte(root, "corrupt-1", after_last_checkpoint=True)
    before = without_owner(snapshot(session_dir(root, "corrupt-1")))

    human = hs("recover", "corrupt-1")
    assert human.code == 5, human.stdout + human.stderr
    message, _, rest = human.stderr.partition("\n")
    assert message.startswith(
        "handshake recover: session corrupt-1: the journal is corrupt at 00000001.jsonl"
    )
    assert rest == as_stderr(golden("corrupt"))
    doc = hs("recover", "corrupt-1", "--json")
    assert doc.code == 5
    assert doc.json["error"]["code"] == "integrity" and doc.json["guidance"] == golden("corrupt")
    assert hs("recover", "corrupt-1", "--dry-run").code == 5
    assert without_owner(snapshot(session_dir(root, "corrupt-1"))) == before
    # The first two commands it prints run as printed and see the damage.
    verify, events = (line.strip() for line in golden("corrupt") if "handshake inspect" in line)
    assert run_printed(hs, verify).code == 5
    assert run_printed(hs, events).code == 0
    assert len(effects(workspace)) == (1 if how == "finished" else 0)


def test_damage_before_the_newest_checkpoint_is_for_verify_to_report(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    """Recovery verifies what it resumes from: the newest checkpoint and every record after it
    (docs/DECISIONS.md). It says where that began; `inspect --verify` checks everything."""
    corrupt_session("covered", tmp_path, home_env, workspace, hs)
    flip_a_byte(root, "corrupt-1", after_last_checkpoint=False)
    assert hs("inspect", "corrupt-1", "--verify").code == 5
    result = hs("recover", "corrupt-1", "--json")
    assert result.code == 0, result.stdout
    assert result.json["verified_from_seq"] > 1
    human = hs("recover", "corrupt-1")
    assert f"records {result.json['verified_from_seq']} on verified" in human.stdout
    assert "inspect SESSION --verify" in human.stdout


def test_golden_locked_guidance(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    job = long_turn_job(tmp_path, words=300, delay_ms=20)
    proc = start(home_env, "run", str(job), "--session-id", "locked-1", "--workspace", str(workspace))
    try:
        session = session_dir(root, "locked-1")
        wait_for(lambda: session.exists() and (h := lock.holder(session)) is not None and h.pid == proc.pid)
        human = hs("recover", "locked-1")
        doc = hs("recover", "locked-1", "--json")
        assert proc.poll() is None, "the run ended before recover was refused"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert human.code == 4, human.stdout + human.stderr
    message, _, rest = human.stderr.partition("\n")
    assert message.startswith(f"handshake recover: session locked-1 is locked by pid {proc.pid} on ")
    assert rest == as_stderr(golden("locked"))
    assert doc.code == 4
    assert doc.json["error"]["code"] == "locked"
    assert doc.json["error"]["details"]["lock_holder"]["pid"] == proc.pid
    assert doc.json["guidance"] == golden("locked")


def test_dry_run_on_a_running_session_does_not_claim_it_would_resume(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    job = long_turn_job(tmp_path, words=300, delay_ms=20)
    proc = start(home_env, "run", str(job), "--session-id", "running-1", "--workspace", str(workspace))
    try:
        session = session_dir(root, "running-1")
        wait_for(lambda: session.exists() and (h := lock.holder(session)) is not None and h.pid == proc.pid)
        dry = hs("recover", "running-1", "--dry-run", "--json")
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert dry.code == 4 or (dry.code == 0 and dry.json["action"] != "resume"), dry.stdout


# -- 2. recovering again changes nothing -----------------------------------------------------


def test_recovering_a_blocked_session_again_is_the_same_plan_and_writes_nothing(
    blocked: str, hs: Cli, root: Path, workspace: Path
) -> None:
    session = session_dir(root, blocked)
    before = snapshot(session)
    journal = journal_bytes(root, blocked)
    second = hs("recover", blocked, "--json")
    third = hs("recover", blocked, "--json")
    assert second.code == third.code == 3
    assert second.stdout == third.stdout  # the same plan, the same guidance, byte for byte
    assert second.json["guidance"] == golden("blocked")
    assert second.json["executed"] is False
    human = [hs("recover", blocked) for _ in range(2)]
    assert human[0].stderr == human[1].stderr == as_stderr(golden("blocked"))
    assert human[0].stdout == human[1].stdout
    dry = hs("recover", blocked, "--dry-run", "--json")
    assert dry.code == 0 and dry.json["guidance"] == golden("blocked")
    assert {k: dry.json[k] for k in ("action", "reason", "in_doubt", "commands")} == {
        k: second.json[k] for k in ("action", "reason", "in_doubt", "commands")
    }
    assert journal_bytes(root, blocked) == journal
    assert snapshot(session) == before
    assert len(effects(workspace)) == 1


def test_recovering_a_recovered_session_again_changes_nothing(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "twice-1", workspace, "before_result")
    first = hs("recover", "twice-1", "--json")
    assert first.code == 0 and first.json["state_after"] == "COMPLETED", first.stdout
    session = session_dir(root, "twice-1")
    before = snapshot(session)
    for _ in range(2):
        again = hs("recover", "twice-1", "--json")
        assert again.code == 0, again.stdout
        assert (again.json["action"], again.json["reason"]) == ("nothing", "terminal")
        assert again.json["executed"] is False
        assert snapshot(session) == before
    assert len(effects(workspace)) == 1


def test_a_crash_after_the_last_record_leaves_a_head_recover_rewrites(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, cli: Cli, root: Path
) -> None:
    """Killed after `session.completed` was synced, before head.json followed: the session is
    COMPLETED, its head says otherwise, and a `recover` with nothing to do rewrites the head
    (and only the head), so that --verify calls the session intact."""
    crash_run(home_env, send_job(tmp_path, probe=True), "ended-1", workspace, "after_ending")
    stale = hs("inspect", "ended-1", "--verify", "--json")
    assert stale.code == 0 and stale.json["verdict"] == "repairable", stale.stdout
    assert set(stale.json["head"]["differences"]) == {"last_seq"}
    assert stale.json["guidance"] == [
        "recover repairs this; see what it would do with:",
        "handshake recover ended-1 --dry-run",
    ]
    plan = run_printed(cli, stale.json["guidance"][1], extra_env={"HANDSHAKE_HOME": str(root)})
    assert plan.code == 0 and "terminal" in plan.stdout + plan.stderr, plan.stdout + plan.stderr
    session = session_dir(root, "ended-1")
    before = without_owner(snapshot(session))  # the killed run's owner.json goes with the lock
    again = hs("recover", "ended-1", "--json")
    assert again.code == 0, again.stdout
    assert again.json["executed"] is False
    assert (again.json["action"], again.json["reason"]) == ("nothing", "terminal")
    after = snapshot(session)
    assert {name for name in after if after[name] != before.get(name)} == {"head.json"}
    assert set(before) == set(after)
    verify = hs("inspect", "ended-1", "--verify", "--json")
    assert verify.json["verdict"] == "intact", verify.stdout
    assert "guidance" not in verify.json
    assert hs("recover", "ended-1").code == 0 and snapshot(session) == after  # nothing more to rewrite
    assert len(effects(workspace)) == 1


def test_a_blocked_session_has_a_current_head(blocked: str, hs: Cli) -> None:
    verify = hs("inspect", blocked, "--verify", "--json")
    assert verify.json["verdict"] == "intact", verify.stdout


# -- 3. --dry-run ------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "dry-1", workspace, "before_result")
    session = session_dir(root, "dry-1")
    before, before_ws = snapshot(session), snapshot(workspace)
    doc = hs("recover", "dry-1", "--dry-run", "--json")
    assert doc.code == 0, doc.stdout
    plan = doc.json
    assert (plan["action"], plan["reason"], plan["state"]) == ("resume", "interrupted", "ACTIVE")
    intent = next(r for r in records_of(root, "dry-1") if r.type == "tool.intent")
    [call] = plan["in_doubt"]
    assert call["tool_call_id"] == "call-1-0" and call["tool"] == "send"
    assert call["idempotency_key"] == intent.data["idempotency_key"]
    assert call["decision"] == "probe"
    assert plan["executed"] is False
    human = hs("recover", "dry-1", "--dry-run")
    assert human.code == 0
    assert "recovery would: resume (interrupted)" in human.stdout
    assert "in doubt: call-1-0 (send, non_idempotent): probe" in human.stdout
    assert snapshot(session) == before
    assert snapshot(workspace) == before_ws
    assert inspect(hs, "dry-1")["state"] == "INTERRUPTED"


def test_dry_run_of_a_plan_that_would_block_is_exit_0(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path), "blocked-1", workspace, "before_result")
    session = session_dir(root, "blocked-1")
    before = snapshot(session)
    doc = hs("recover", "blocked-1", "--dry-run", "--json")
    assert doc.code == 0, doc.stdout
    assert (doc.json["action"], doc.json["reason"]) == ("blocked", "in_doubt_tool_call")
    assert [c["tool_call_id"] for c in doc.json["in_doubt"]] == ["call-1-0"]
    assert doc.json["in_doubt"][0]["decision"] == "block"
    assert doc.json["guidance"] == golden("blocked")
    assert snapshot(session) == before
    assert inspect(hs, "blocked-1")["state"] == "INTERRUPTED"


def test_dry_run_of_a_cut_short_model_turn(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, long_turn_job(tmp_path, 30, 20), "flight-1", workspace, "mid_stream:2")
    before = snapshot(session_dir(root, "flight-1"))
    doc = hs("recover", "flight-1", "--dry-run", "--json")
    assert doc.code == 0 and doc.json["action"] == "resume"
    assert doc.json["in_flight"]["turn"] == 1 and doc.json["in_doubt"] == []
    assert snapshot(session_dir(root, "flight-1")) == before
    # Without an edit the deterministic replay repeats what was streamed, and completes.
    done = hs("recover", "flight-1", "--json")
    assert done.code == 0 and done.json["state_after"] == "COMPLETED", done.stdout
    text = inspect(hs, "flight-1")["messages"][-1]["content"]
    assert text == " ".join(f"word{i}" for i in range(30))


# -- 4. --resolve --------------------------------------------------------------------------


def test_resolved_done_never_runs_the_call(blocked: str, hs: Cli, root: Path, workspace: Path) -> None:
    # The command as guidance printed it.
    command = next(line.strip() for line in golden("blocked") if line.strip().endswith("=done"))
    result = run_printed(hs, command)
    assert result.code == 0, result.stdout + result.stderr
    assert len(effects(workspace)) == 1, "a call resolved done was run again"
    doc = inspect(hs, blocked)
    assert doc["state"] == "COMPLETED"
    [call] = doc["tool_calls"]
    assert call["tool_call_id"] == "call-1-0" and call["resolution"]["resolution"] == "done"
    assert doc["messages"][-1] == {"role": "assistant", "content": "Sent."}
    events = hs("inspect", blocked, "--events", "--json").json["events"]
    resolutions = [e for e in events if e["type"] == "operator.resolution"]
    assert [(e["data"]["tool_call_id"], e["data"]["resolution"]) for e in resolutions] == [
        ("call-1-0", "done")
    ]
    assert "operator.resolution" in hs("inspect", blocked, "--events").stdout
    intents = [e for e in events if e["type"] == "tool.intent"]
    assert len(intents) == 1


def test_resolved_done_with_a_result_file_records_its_content(
    blocked: str, hs: Cli, tmp_path: Path, workspace: Path
) -> None:
    result_file = tmp_path / "what-it-said.txt"
    result_file.write_text("sent: hello (checked by hand)\n", encoding="utf-8")
    result = hs("recover", blocked, "--resolve", "call-1-0=done", "--result-file", str(result_file))
    assert result.code == 0, result.stdout + result.stderr
    assert len(effects(workspace)) == 1
    messages = inspect(hs, blocked)["messages"]
    tool = next(m for m in messages if m["role"] == "tool")
    assert tool["tool_call_id"] == "call-1-0"
    assert tool["content"] == "sent: hello (checked by hand)\n"


def test_resolved_retry_runs_the_call_exactly_once(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path), "retry-1", workspace, "after_intent")
    assert effects(workspace) == []
    blocked = hs("recover", "retry-1", "--json")
    assert blocked.code == 3 and blocked.json["reason"] == "in_doubt_tool_call"
    command = next(line for line in blocked.json["commands"] if line.endswith("=retry"))
    result = run_printed(hs, command)
    assert result.code == 0, result.stdout + result.stderr
    intent = next(r for r in records_of(root, "retry-1") if r.type == "tool.intent")
    assert effects(workspace) == [f"{intent.data['idempotency_key']}\thello"]
    doc = inspect(hs, "retry-1")
    assert doc["state"] == "COMPLETED"
    [call] = doc["tool_calls"]
    assert call["resolution"]["resolution"] == "retry" and call["state"] == "done"
    events = hs("inspect", "retry-1", "--events", "--json").json["events"]
    assert [e["data"]["resolution"] for e in events if e["type"] == "operator.resolution"] == ["retry"]
    assert doc["messages"] == reference_messages(hs, tmp_path, send_job(tmp_path), "retry-1")
    assert hs("recover", "retry-1").code == 0
    assert len(effects(workspace)) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--resolve", "call-1-0"],
        ["--resolve", "call-1-0=maybe"],
        ["--resolve", "call-1-0=DONE"],
        ["--resolve", "=done"],
        ["--resolve", "call-9-9=done"],
        ["--resolve", "call-1-0=done", "--resolve", "call-1-0=retry"],
        ["--resolve", "call-1-0=retry", "--result-file", "x.txt"],
        ["--resolve", "call-1-0=done", "--cancel"],
    ],
    ids=[
        "no-equals",
        "unknown-verdict",
        "uppercase",
        "no-call",
        "not-in-doubt",
        "twice",
        "file-retry",
        "cancel",
    ],
)
def test_a_bad_resolve_is_exit_2_and_changes_nothing(
    args: list[str], blocked: str, hs: Cli, root: Path, workspace: Path
) -> None:
    before = snapshot(session_dir(root, blocked))
    result = hs("recover", blocked, *args, "--json")
    assert result.code == 2, result.stdout
    assert result.json["status"] == "error" and result.json["error"]["code"] == "usage"
    assert snapshot(session_dir(root, blocked)) == before
    assert len(effects(workspace)) == 1
    assert hs("recover", blocked).stderr == as_stderr(golden("blocked"))


def test_an_unreadable_result_file_is_exit_2_and_changes_nothing(
    blocked: str, hs: Cli, root: Path, tmp_path: Path
) -> None:
    before = journal_bytes(root, blocked)
    result = hs("recover", blocked, "--resolve", "call-1-0=done", "--result-file", str(tmp_path / "missing"))
    assert result.code == 2, result.stdout + result.stderr
    assert journal_bytes(root, blocked) == before
    assert inspect(hs, blocked)["in_doubt_tool_calls"] == ["call-1-0"]


# -- 5. in doubt, by idempotency ------------------------------------------------------------


def test_an_idempotent_builtin_is_run_again(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    turns = [
        {
            "text": "Writing it.",
            "tool_calls": [
                {"tool": "write_file", "args": {"path": "out/hello.txt", "content": "hi there\n"}}
            ],
        },
        {"text": "Written."},
    ]
    job = write_job(tmp_path / "job-write", turns, [WRITE])
    crash_run(home_env, job, "write-1", workspace, "before_result")
    (workspace / "out" / "hello.txt").write_text("half", encoding="utf-8")  # a stale effect
    plan = hs("recover", "write-1", "--dry-run", "--json").json
    assert [c["decision"] for c in plan["in_doubt"]] == ["rerun"]
    result = hs("recover", "write-1", "--json")
    assert result.code == 0 and result.json["state_after"] == "COMPLETED", result.stdout
    assert (workspace / "out" / "hello.txt").read_text(encoding="utf-8") == "hi there\n"
    assert inspect(hs, "write-1")["messages"] == reference_messages(hs, tmp_path, job, "write-1")


def test_an_idempotent_with_key_tool_is_run_again_with_the_same_key(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    turns = [
        {"text": "Storing it.", "tool_calls": [{"tool": "store", "args": {"fact": "the sky is blue"}}]},
        {"text": "Stored."},
    ]
    job = write_job(tmp_path / "job-store", turns, [STORE_TOOL])
    crash_run(home_env, job, "keyed-1", workspace, "before_result")
    intent = next(r for r in records_of(root, "keyed-1") if r.type == "tool.intent")
    key = intent.data["idempotency_key"]
    assert (workspace / "invocations.log").read_text().splitlines() == [key]
    plan = hs("recover", "keyed-1", "--dry-run", "--json").json
    assert [(c["decision"], c["idempotency_key"]) for c in plan["in_doubt"]] == [("rerun_with_key", key)]
    result = hs("recover", "keyed-1", "--json")
    assert result.code == 0 and result.json["state_after"] == "COMPLETED", result.stdout
    assert (workspace / "invocations.log").read_text().splitlines() == [key, key]
    store = json.loads((workspace / "store.json").read_text())
    assert store == [[key, {"fact": "the sky is blue"}]]
    assert inspect(hs, "keyed-1")["messages"] == reference_messages(hs, tmp_path, job, "keyed-1")


@pytest.mark.parametrize(
    ("point", "verdict", "effects_before"),
    [("before_result", "happened", 1), ("after_intent", "not_happened", 0)],
)
def test_a_probe_decides_a_non_idempotent_call(
    point: str,
    verdict: str,
    effects_before: int,
    tmp_path: Path,
    home_env: dict[str, str],
    workspace: Path,
    hs: Cli,
    root: Path,
) -> None:
    job = send_job(tmp_path, probe=True)
    crash_run(home_env, job, "probe-1", workspace, point)
    assert len(effects(workspace)) == effects_before
    result = hs("recover", "probe-1", "--json")
    assert result.code == 0 and result.json["state_after"] == "COMPLETED", result.stdout
    assert len(effects(workspace)) == 1, "the effect did not happen exactly once"
    results = [r for r in records_of(root, "probe-1") if r.type == "tool.result"]
    assert len(results) == 1
    if verdict == "happened":
        assert results[0].data["evidence"]["probe"] == "happened"
    else:
        assert "evidence" not in results[0].data  # the call itself ran
    assert inspect(hs, "probe-1")["messages"] == reference_messages(hs, tmp_path, job, "probe-1")


# -- 6. --cancel ---------------------------------------------------------------------------


def test_cancel_is_sticky(blocked: str, hs: Cli, root: Path, workspace: Path) -> None:
    command = next(line.strip() for line in golden("blocked") if line.strip().endswith("--cancel"))
    result = run_printed(hs, command)
    assert result.code == 0, result.stdout + result.stderr
    assert inspect(hs, blocked)["state"] == "CANCELLED"
    types = [r.type for r in records_of(root, blocked)]
    assert types[-1] == "session.cancelled"
    before = snapshot(session_dir(root, blocked))
    later = hs("recover", blocked, "--json")
    assert later.code == 0 and (later.json["action"], later.json["reason"]) == ("nothing", "terminal")
    assert later.json["state_after"] == "CANCELLED"
    resolve = hs("recover", blocked, "--resolve", "call-1-0=done", "--json")
    assert resolve.code == 2, resolve.stdout
    assert "CANCELLED" in resolve.json["error"]["message"]
    assert snapshot(session_dir(root, blocked)) == before
    assert inspect(hs, blocked)["state"] == "CANCELLED"
    assert len(effects(workspace)) == 1


def test_cancel_of_an_interrupted_session(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    crash_run(home_env, long_turn_job(tmp_path, 30, 20), "cancel-1", workspace, "mid_stream:2")
    before = snapshot(session_dir(root, "cancel-1"))
    dry = hs("recover", "cancel-1", "--cancel", "--dry-run", "--json")
    assert dry.code == 0 and dry.json["action"] == "cancel"
    assert snapshot(session_dir(root, "cancel-1")) == before
    result = hs("recover", "cancel-1", "--cancel", "--json")
    assert result.code == 0 and result.json["state_after"] == "CANCELLED", result.stdout
    doc = inspect(hs, "cancel-1")
    assert doc["state"] == "CANCELLED"
    assert not any(m["role"] == "assistant" for m in doc["messages"]), "the model was asked again"


# -- 7. two recovers racing ---------------------------------------------------------------


def test_two_recovers_racing_one_works_the_other_is_exit_4(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    words = 150  # about three seconds of streaming left for the first recover
    crash_run(home_env, long_turn_job(tmp_path, words, 20), "race-1", workspace, "mid_stream:2")
    session = session_dir(root, "race-1")
    first = start(home_env, "recover", "race-1", "--json")
    try:
        wait_for(lambda: (h := lock.holder(session)) is not None and h.pid == first.pid)
        second = hs("recover", "race-1", "--json")
        assert first.poll() is None, "the first recover finished before the second one started"
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, out + err
    assert json.loads(out)["state_after"] == "COMPLETED"
    assert second.code == 4, second.stdout
    assert second.json["error"]["details"]["lock_holder"]["pid"] == first.pid
    assert f"pid {first.pid} " in second.json["error"]["message"]
    assert "handshake recover race-1" in second.json["error"]["message"]
    assert second.json["guidance"] == [line.replace("locked-1", "race-1") for line in golden("locked")]
    records = records_of(root, "race-1")
    assert [r.type for r in records].count("recovery.started") == 1
    assert inspect(hs, "race-1")["messages"][-1]["content"] == " ".join(f"word{i}" for i in range(words))


# -- 8. a bad checkpoint is never loaded -------------------------------------------------------


def two_tool_job(tmp_path: Path) -> Path:
    turns = [
        {
            "text": "Writing it.",
            "tool_calls": [{"tool": "write_file", "args": {"path": "hello.txt", "content": "hi\n"}}],
        },
        {"text": "Sending it.", "tool_calls": [{"tool": "send", "args": {"message": "hello"}}]},
        {"text": "All done."},
    ]
    return write_job(tmp_path / "job-two", turns, [WRITE, send_tool(probe=True)])


def forge(data: dict[str, Any], how: str) -> dict[str, Any]:
    """A `checkpoint.created` record's data that must not load, made from a good one's."""
    from handshake_cli.session.thread import digest

    forged = copy.deepcopy(data)
    forged["checkpoint_id"] = forged["body"]["checkpoint_id"] = "ck-99"
    if how == "body_mismatch":  # the artifact id no longer names this body
        forged["body"]["turn"] = 7
    else:  # a self-consistent body whose thread lost its last message
        forged["body"]["messages"]["items"] = forged["body"]["messages"]["items"][:-1]
        forged["artifact_id"] = digest(forged["body"])
    return forged


def with_a_bad_checkpoint(
    how: str, tmp_path: Path, home_env: dict[str, str], workspace: Path, root: Path
) -> int:
    """Session badck-1, crashed as its second tool call was next (ck-1 and ck-2 exist), with a
    forged ck-99 appended after ck-2. Returns the forged record's seq."""
    crash_run(home_env, two_tool_job(tmp_path), "badck-1", workspace, "before_intent:2")
    good = [r for r in records_of(root, "badck-1") if r.type == "checkpoint.created"][-1]
    assert good.data["checkpoint_id"] == "ck-2"
    journal = JournalWriter.open(session_dir(root, "badck-1") / "journal", "badck-1")
    try:  # nobody runs the session: no lock is needed to play the part of a bad disk
        return journal.append("checkpoint.created", forge(good.data, how), sync=True).seq
    finally:
        journal.close()


@pytest.mark.parametrize("how", ["body_mismatch", "thread_mismatch"])
def test_a_bad_checkpoint_is_skipped_and_recovery_uses_the_one_before(
    how: str, tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    bad_seq = with_a_bad_checkpoint(how, tmp_path, home_env, workspace, root)
    job = two_tool_job(tmp_path)
    dry = hs("recover", "badck-1", "--dry-run", "--json")
    assert dry.code == 0, dry.stdout
    assert dry.json["checkpoint"] == "ck-2"
    assert {(s["checkpoint_id"], s["seq"]) for s in dry.json["skipped_checkpoints"]} == {("ck-99", bad_seq)}
    result = hs("recover", "badck-1", "--json")
    assert result.code == 0 and result.json["state_after"] == "COMPLETED", result.stdout + result.stderr
    assert result.json["checkpoint"] == "ck-2"
    assert inspect(hs, "badck-1")["messages"] == reference_messages(hs, tmp_path, job, "badck-1")
    assert len(effects(workspace)) == 1
    before = snapshot(session_dir(root, "badck-1"))
    for _ in range(2):  # no crash loop: the bad checkpoint stays where it is, unloaded
        again = hs("recover", "badck-1", "--json")
        assert again.code == 0 and again.json["action"] == "nothing", again.stdout
    assert snapshot(session_dir(root, "badck-1")) == before
    verify = hs("inspect", "badck-1", "--verify")
    assert verify.code in (0, 5), verify.stdout  # reported either way; never a crash
    assert "Traceback" not in verify.stdout + verify.stderr


def test_a_bad_checkpoint_is_reported_once(
    tmp_path: Path, home_env: dict[str, str], workspace: Path, hs: Cli, root: Path
) -> None:
    """Once in the plan and once in the journaled recovery.started, though recovery meets
    its record twice (searching for candidates, then reading on from the accepted one)."""
    bad_seq = with_a_bad_checkpoint("body_mismatch", tmp_path, home_env, workspace, root)
    dry = hs("recover", "badck-1", "--dry-run", "--json")
    assert [(s["checkpoint_id"], s["seq"]) for s in dry.json["skipped_checkpoints"]] == [("ck-99", bad_seq)]
    assert hs("recover", "badck-1").code == 0
    started = next(r for r in records_of(root, "badck-1") if r.type == "recovery.started")
    assert [s["checkpoint_id"] for s in started.data["skipped_checkpoints"]] == ["ck-99"]


# -- 9. --all ----------------------------------------------------------------------------


def test_recover_all_reports_each_session_and_the_worst_outcome(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, root: Path
) -> None:
    spaces = {name: tmp_path / f"ws-{name}" for name in ("done", "resumes", "blocks")}
    for path in spaces.values():
        path.mkdir()
    job_probe, job_block = send_job(tmp_path / "p", probe=True), send_job(tmp_path / "b")
    ran = hs("run", str(job_probe), "--session-id", "a-done", "--workspace", str(spaces["done"]))
    assert ran.code == 0
    crash_run(home_env, job_probe, "b-resumes", spaces["resumes"], "after_intent")
    crash_run(home_env, job_block, "c-blocks", spaces["blocks"], "before_result")
    completed = snapshot(session_dir(root, "a-done"))

    result = hs("recover", "--all", "--json")
    assert result.code == 3, result.stdout
    rows = {row["session_id"]: row for row in result.json["sessions"]}
    assert set(rows) == {"b-resumes", "c-blocks"}  # the completed one is not recovered
    assert (rows["b-resumes"]["action"], rows["b-resumes"]["state"], rows["b-resumes"]["exit_code"]) == (
        "resume",
        "COMPLETED",
        0,
    )
    assert (rows["c-blocks"]["action"], rows["c-blocks"]["state"], rows["c-blocks"]["exit_code"]) == (
        "blocked",
        "BLOCKED",
        3,
    )
    assert rows["c-blocks"]["guidance"][0].startswith("session c-blocks is BLOCKED")
    assert result.json["exit_code"] == 3
    assert inspect(hs, "b-resumes")["state"] == "COMPLETED"
    assert inspect(hs, "c-blocks")["state"] == "BLOCKED"
    assert snapshot(session_dir(root, "a-done")) == completed
    assert [len(effects(spaces[n])) for n in ("done", "resumes", "blocks")] == [1, 1, 1]

    human = hs("recover", "--all")
    assert human.code == 3  # c-blocks still needs an operator
    assert "c-blocks" in human.stdout and "b-resumes" not in human.stdout


def test_recover_all_with_only_completed_sessions_does_nothing(
    tmp_path: Path, hs: Cli, root: Path, workspace: Path
) -> None:
    job = send_job(tmp_path, probe=True)
    for session_id in ("done-1", "done-2"):
        assert hs("run", str(job), "--session-id", session_id, "--workspace", str(workspace)).code == 0
    before = snapshot(root / "sessions")
    result = hs("recover", "--all", "--json")
    assert result.code == 0, result.stdout
    assert result.json["sessions"] == [] and result.json["status"] == "ok"
    human = hs("recover", "--all")
    assert human.code == 0 and "no interrupted sessions" in human.stdout
    assert snapshot(root / "sessions") == before


# -- 10. usage --------------------------------------------------------------------------


def test_usage_errors(hs: Cli, root: Path) -> None:
    bare = hs("recover", "--json")
    assert bare.code == 2 and bare.json["error"]["code"] == "usage"
    both = hs("recover", "some-session", "--all", "--json")
    assert both.code == 2 and both.json["error"]["code"] == "usage"
    ghost = hs("recover", "ghost", "--json")
    assert ghost.code == 6, ghost.stdout
    assert ghost.json["status"] == "error" and "ghost" in ghost.json["error"]["message"]
    human = hs("recover", "ghost")
    assert human.code == 6 and "Traceback" not in human.stderr
    assert hs("recover", "ghost", "--dry-run").code == 6
    assert hs("recover", "../escape").code == 2
    assert not (root / "sessions" / "ghost").exists()
