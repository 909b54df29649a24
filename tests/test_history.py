"""The history in `inspect SESSION`: the processes that wrote a session, told from its files.

Every session here is made by the console script and crashed for real (a SIGKILL at a named
crash point, HANDSHAKE_CRASH_AT), recovered as a user would, and then read back with
`inspect SESSION` and `--json`: which processes wrote it, with their host and pid, how each
ended, where a crashed one stopped, what each recovery found and what it decided. The
human lines checked are the ones a person doing the post-mortem reads. Three such sessions
are also committed with what `inspect` told of them (fixtures/history/build.py), so a change
of the fold or of its words shows up against fixed bytes.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from handshake_cli.cli.history import history_lines
from handshake_cli.paths import Paths
from handshake_cli.readers import describe
from handshake_cli.recovery.view import rebuild
from handshake_cli.session.checkpoints import kept_story
from handshake_cli.session.story import StoryFold, tell
from handshake_cli.session.story_found import fold_found
from handshake_cli.storage import lock
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.codec import Record
from tests.support.cli import Cli, CliResult, crash_run, start, wait_for
from tests.support.jobs import WRITE, long_turn_job, send_job, write_job
from tests.support.paths import DATA, FIXTURES
from tests.support.sessions import effects, records_of, session_dir

HOST = socket.gethostname()


def history(hs: Cli, session_id: str) -> dict[str, Any]:
    result = hs("inspect", session_id, "--json")
    assert result.code == 0, result.stdout + result.stderr
    told: dict[str, Any] = result.json["history"]
    return told


def shown(hs: Cli, session_id: str) -> list[str]:
    """The history section of `inspect SESSION`, as a person reads it."""
    result = hs("inspect", session_id)
    assert result.code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("history"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def seq_of(root: Path, session_id: str, type_: str, nth: int = 0) -> int:
    return [r.seq for r in records_of(root, session_id) if r.type == type_][nth]


def assert_identified(process: dict[str, Any]) -> None:
    assert process["host"] == HOST
    assert isinstance(process["pid"], int) and process["pid"] > 0


# -- no crash ------------------------------------------------------------------------------------


def test_a_session_that_never_crashed_says_so_in_one_line(
    tmp_path: Path, hs: Cli, workspace: Path, root: Path
) -> None:
    run = hs("run", str(send_job(tmp_path)), "--session-id", "calm-1", "--workspace", str(workspace))
    assert run.code == 0, run.stdout + run.stderr
    told = history(hs, "calm-1")
    assert told["crashes"] == 0 and told["complete"] is True
    [process] = told["processes"]
    assert (process["kind"], process["ending"], process["reason"]) == (
        "run",
        "completed",
        "the model answered",
    )
    assert_identified(process)
    last = seq_of(root, "calm-1", "session.completed")
    assert (process["first_seq"], process["last_seq"], process["ending_seq"]) == (1, last, last)
    assert shown(hs, "calm-1") == [
        f"history     one process (run, pid {process['pid']} on {HOST}), never crashed: "
        "completed (the model answered)"
    ]


# -- one crash, and what the recovery's probe said -----------------------------------------------


@pytest.mark.parametrize(
    ("point", "answer"), [("before_result", "happened"), ("after_intent", "not_happened")]
)
def test_a_run_killed_mid_tool_and_the_probe_that_settled_it(
    point: str, answer: str, tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "probed-1", workspace, point)
    intent = seq_of(root, "probed-1", "tool.intent")
    recovered = hs("recover", "probed-1")
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    assert len(effects(workspace)) == 1

    told = history(hs, "probed-1")
    assert told["crashes"] == 1
    run, recover = told["processes"]
    assert (run["kind"], run["ending"]) == ("run", "crashed")
    assert run["last_record"]["seq"] == run["last_seq"] == intent  # it died with the call in doubt
    assert run["last_record"]["type"] == "tool.intent"
    assert (recover["kind"], recover["ending"], recover["first_seq"]) == ("recover", "completed", intent + 1)
    assert_identified(run)
    assert_identified(recover)
    assert recover["pid"] != run["pid"]
    assert recover["found"]["action"] == "resume"
    assert [c["decision"] for c in recover["found"]["in_doubt"]] == ["probe"]
    [decision] = recover["decisions"]
    assert (decision["tool_call_id"], decision["decision"], decision["probe"]) == (
        "call-1-0",
        "probe",
        answer,
    )
    assert decision["result"] == "done"
    results = [r.seq for r in records_of(root, "probed-1") if r.type == "tool.result"]
    assert decision["result_seq"] == results[0]
    if answer == "happened":
        assert decision["rerun_seq"] is None and decision["seq"] == results[0]
    else:
        assert decision["rerun_seq"] == seq_of(root, "probed-1", "tool.intent", 1)

    lines = shown(hs, "probed-1")
    assert lines[0] == "history (2 processes, 1 crashed)"
    assert re.fullmatch(rf"  1\. run, pid {run['pid']} on {re.escape(HOST)}, .* \(seq 1-{intent}\)", lines[1])
    assert lines[2] == f"     CRASHED after seq {intent} (tool.intent): no ending on record"
    assert lines[3].startswith(f"  2. recover, pid {recover['pid']} on {HOST}, ")
    assert lines[4] == "     completed (the model answered)"
    said = {
        "happened": f"call-1-0 send: its probe said it happened (result at seq {results[0]})",
        "not_happened": f"call-1-0 send: its probe said it did not happen; ran again at seq "
        f"{decision['rerun_seq']}: done (seq {results[0]})",
    }[answer]
    assert f"     {said}" in lines


# -- several crashes: run killed, recover blocked, recover killed, recover resolved ---------------


def test_run_killed_recover_blocked_recover_killed_then_resolved(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path), "many-1", workspace, "before_result")
    assert hs("recover", "many-1").code == 3  # a call that must not run twice, and no probe
    killed = hs(
        "recover",
        "many-1",
        "--resolve",
        "call-1-0=done",
        extra_env={"HANDSHAKE_CRASH_AT": "recovery_started"},
    )
    assert killed.code == -signal.SIGKILL, killed.stdout + killed.stderr
    resolved = hs("recover", "many-1", "--resolve", "call-1-0=done")
    assert resolved.code == 0, resolved.stdout + resolved.stderr
    assert len(effects(workspace)) == 1

    told = history(hs, "many-1")
    assert told["crashes"] == 2
    run, blocked, crashed, done = told["processes"]
    assert [p["kind"] for p in told["processes"]] == ["run", "recover", "recover", "recover"]
    assert [p["ending"] for p in told["processes"]] == ["crashed", "blocked", "crashed", "completed"]
    assert len({p["pid"] for p in told["processes"]}) == 4
    for process in told["processes"]:
        assert_identified(process)
    for before, after in zip(told["processes"], told["processes"][1:], strict=False):
        assert after["first_seq"] == before["last_seq"] + 1

    assert run["last_record"]["type"] == "tool.intent"
    assert blocked["reason"] == "in_doubt_tool_call"
    assert blocked["ending_seq"] == blocked["last_seq"] == seq_of(root, "many-1", "recovery.blocked")
    [block] = blocked["decisions"]
    assert (block["decision"], block["seq"]) == ("block", blocked["ending_seq"])
    # the killed recovery wrote recovery.started and nothing else: the resolution never landed
    assert crashed["first_seq"] == crashed["last_seq"]
    assert crashed["last_record"]["type"] == "recovery.started"
    [unsettled] = crashed["decisions"]
    assert (unsettled["decision"], unsettled["resolution"]) == ("resolved_done", None)
    [settled] = done["decisions"]
    assert (settled["decision"], settled["resolution"], settled["by"]) == (
        "resolved_done",
        "done",
        getpass.getuser(),
    )
    assert settled["seq"] == seq_of(root, "many-1", "operator.resolution")
    assert (settled["result"], settled["rerun_seq"]) == ("done", None)  # never run again

    lines = shown(hs, "many-1")
    assert lines[0] == "history (4 processes, 2 crashed)"
    headers = [line for line in lines if re.match(r"  \d\. ", line)]
    endings = [lines[lines.index(header) + 1] for header in headers]
    assert endings == [
        f"     CRASHED after seq {run['last_seq']} (tool.intent): no ending on record",
        "     blocked (in_doubt_tool_call)",
        f"     CRASHED after seq {crashed['first_seq']} (recovery.started): no ending on record",
        "     completed (the model answered)",
    ]
    assert "     call-1-0 send: must not run twice and has no probe: left to an operator" in lines
    assert "     call-1-0 send: an operator said done, not on record before the process ended" in lines
    assert f"     call-1-0 send: an operator said done ({getpass.getuser()}, seq {settled['seq']})" in lines


# -- a torn tail ---------------------------------------------------------------------------------


def test_a_torn_tail_before_and_after_recover_cuts_it(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "torn-1", workspace, "after_intent")
    last = records_of(root, "torn-1")[-1]
    segment = session_dir(root, "torn-1") / "journal" / last.segment
    offset = segment.stat().st_size
    torn = b'{"seq":%d,"ts":"2026-12-03T13:00:00.000000Z","type":"tool.res' % (last.seq + 1)
    with segment.open("ab") as journal:  # what a crash in the middle of an append leaves
        journal.write(torn)

    [run] = history(hs, "torn-1")["processes"]
    assert run["ending"] == "crashed" and run["last_seq"] == last.seq
    assert run["torn_tail"] == {
        "segment": last.segment,
        "offset": offset,
        "length": len(torn),
        "quarantined": None,
    }
    lines = shown(hs, "torn-1")
    at = lines.index(
        f"     a torn record after seq {last.seq}: {last.segment} at byte {offset} ({len(torn)} bytes)"
    )
    assert lines[at + 1] == "       not cut yet (recover cuts it)"

    assert hs("recover", "torn-1").code == 0
    run, recover = history(hs, "torn-1")["processes"]
    quarantined = f"quarantine/{last.segment}.{offset}.torn"
    cut = {"segment": last.segment, "offset": offset, "length": len(torn), "quarantined": quarantined}
    assert run["torn_tail"] == cut == recover["found"]["repaired_torn_tail"]
    assert (session_dir(root, "torn-1") / quarantined).read_bytes() == torn
    assert recover["ending"] == "completed"
    assert [(d["probe"], d["result"]) for d in recover["decisions"]] == [("not_happened", "done")]
    lines = shown(hs, "torn-1")
    at = lines.index(
        f"     a torn record after seq {last.seq}: {last.segment} at byte {offset} ({len(torn)} bytes)"
    )
    assert lines[at + 1] == f"       cut into {quarantined}"


# -- a divergence, then accepted -----------------------------------------------------------------


def test_a_divergence_blocks_and_an_accepted_one_completes(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    # A deterministic model that changes its first word once the workspace holds `diverge`.
    model = [sys.executable, str(DATA / "recover_jobs" / "changing_model.py")]
    job = tmp_path / "changing.toml"
    job.write_text(
        tomli_w.dumps(
            {
                "name": "changing",
                "prompt": {"user": "Count."},
                "model": {"provider": "command", "command": model, "deterministic": True},
            }
        )
    )
    crash_run(home_env, job, "diverged-1", workspace, "mid_stream:2")
    (workspace / "diverge").touch()
    assert hs("recover", "diverged-1").code == 3

    run, blocked = history(hs, "diverged-1")["processes"]
    assert run["ending"] == "crashed" and run["last_record"]["type"] == "model.chunk"
    assert (blocked["ending"], blocked["reason"]) == ("blocked", "model_divergence")
    aborted = seq_of(root, "diverged-1", "model.stream_aborted")
    assert {"kind": "divergence", "seq": aborted, "reason": "model_divergence", "turn": 1} in blocked[
        "events"
    ]
    assert f"     turn 1: the model did not repeat what it had streamed (seq {aborted})" in shown(
        hs, "diverged-1"
    )

    assert hs("recover", "diverged-1", "--accept-divergence").code == 0
    told = history(hs, "diverged-1")
    accepted = told["processes"][-1]
    assert (accepted["ending"], accepted["found"]["accept_divergence"]) == ("completed", True)
    assert told["crashes"] == 1
    assert "     with --accept-divergence: a model or MCP server that changed is taken as it is" in shown(
        hs, "diverged-1"
    )


# -- a checkpoint of a stopped session, a fork ---------------------------------------------------


def test_a_checkpoint_of_a_stopped_session_and_a_fork_are_processes_of_their_own(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "ck-1", workspace, "after_intent")
    taken = hs("checkpoint", "ck-1", "--reason", "before the post-mortem")
    assert taken.code == 0, taken.stdout + taken.stderr
    run, checkpoint = history(hs, "ck-1")["processes"]
    assert run["ending"] == "crashed" and run["last_record"]["type"] == "tool.intent"
    assert (checkpoint["kind"], checkpoint["ending"]) == ("checkpoint", "checkpointed")
    assert checkpoint["reason"] == "requested: before the post-mortem"
    assert checkpoint["first_seq"] == checkpoint["last_seq"] == run["last_seq"] + 1
    assert_identified(checkpoint)
    assert any(
        line == "     took a checkpoint (requested: before the post-mortem)" for line in shown(hs, "ck-1")
    )

    forked = hs("recover", "ck-1", "--fork", "ck-fork")
    assert forked.code == 0, forked.stdout + forked.stderr
    [fork] = history(hs, "ck-fork")["processes"]
    assert (fork["kind"], fork["ending"], fork["forked_from"]["session_id"]) == ("fork", "forked", "ck-1")
    assert_identified(fork)
    assert shown(hs, "ck-fork")[0].startswith(f"history     one process (fork, pid {fork['pid']} on {HOST})")

    assert hs("recover", "ck-1").code == 0
    kinds = [(p["kind"], p["ending"]) for p in history(hs, "ck-1")["processes"]]
    assert kinds == [("run", "crashed"), ("checkpoint", "checkpointed"), ("recover", "completed")]


# -- long sessions: the story kept in checkpoints, or found by its records' bytes ------------------


def test_checkpoints_carry_the_story_whole_when_it_changes_and_name_it_otherwise(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    turns = [
        {
            "text": f"Writing {n}.",
            "tool_calls": [{"tool": "write_file", "args": {"path": f"{n}.txt", "content": "x"}}],
        }
        for n in range(3)
    ]
    job = write_job(tmp_path / "job-writes", [*turns, {"text": "Done."}], [WRITE])
    crash_run(home_env, job, "kept-1", workspace, "before_intent:3")
    assert hs("recover", "kept-1").code == 0
    records = records_of(root, "kept-1")
    bodies = [(r, r.data["body"]["story"]) for r in records if r.type == "checkpoint.created"]
    recovery = seq_of(root, "kept-1", "recovery.started")
    whole = [(r.seq, len(s["processes"])) for r, s in bodies if "kept_in" not in s]
    # each writer's first checkpoint holds the story whole, and so does one after it changed
    assert whole[0] == (bodies[0][0].seq, 1)
    assert any(seq > recovery and count == 2 for seq, count in whole)
    named = [(r, s["kept_in"]) for r, s in bodies if "kept_in" in s]
    assert named, "a checkpoint whose story did not change names the one that holds it"
    by_seq = {r.seq: r for r, _ in bodies}
    for record, where in named:
        holder = by_seq[where["seq"]]
        assert (holder.segment, holder.offset) == (
            where["segment"],
            where["offset"],
        ) and holder.seq < record.seq
        assert "kept_in" not in holder.data["body"]["story"]
    # from any checkpoint, its story and the records after it tell the whole journal's
    expected = tell(records).as_json()
    for record, _ in bodies:
        resumed = StoryFold.from_state(
            kept_story(FilesystemStore(Paths(root)), "kept-1", record.data["body"])
        )
        assert resumed is not None, record.seq
        for later in records:
            if later.seq > record.data["covers_seq"]:
                resumed.apply(later)
        assert resumed.told().as_json() == expected, record.seq


def test_a_long_journal_tells_the_same_story_from_its_tail_and_its_newest_checkpoint(
    tmp_path: Path,
    home_env: dict[str, str],
    hs: Cli,
    workspace: Path,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crash_run(home_env, send_job(tmp_path), "long-2", workspace, "before_result")
    assert hs("recover", "long-2").code == 3
    assert hs("checkpoint", "long-2").code == 0
    assert hs("recover", "long-2", "--resolve", "call-1-0=done").code == 0
    store = FilesystemStore(Paths(root))
    whole = describe.describe(store, "long-2")
    monkeypatch.setattr(describe, "FULL_CHECK_BYTES", 0)  # as for a journal of a million records
    tail = describe.describe(store, "long-2")
    assert tail["integrity"]["scope"] == "from_checkpoint"
    assert tail["history"] == whole["history"]
    # a session whose checkpoints predate the story: the records it needs found by their bytes
    view = rebuild(store, "long-2")
    found, unreadable = fold_found(store, "long-2", view.records)
    assert unreadable == 0
    assert found.told().as_json() == view.story.told().as_json()
    assert [p["ending"] for p in found.told().as_json()["processes"]] == [
        "crashed",
        "blocked",
        "checkpointed",
        "completed",
    ]


def test_a_running_process_is_running_and_crashed_once_killed(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    job = long_turn_job(tmp_path, words=300, delay_ms=20)
    proc = start(home_env, "run", str(job), "--session-id", "live-1", "--workspace", str(workspace))
    try:
        session = session_dir(root, "live-1")
        wait_for(lambda: session.exists() and (h := lock.holder(session)) is not None and h.pid == proc.pid)
        [live] = history(hs, "live-1")["processes"]
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert (live["kind"], live["ending"], live["pid"], live["host"]) == ("run", "running", proc.pid, HOST)
    [dead] = history(hs, "live-1")["processes"]
    assert dead["ending"] == "crashed" and dead["last_seq"] >= live["last_seq"]
    assert shown(hs, "live-1")[2].startswith(f"     CRASHED after seq {dead['last_seq']} (")


# -- the fold on its own: sessions written before `process`, LangGraph threads, its state ----------


def records(*items: tuple[str, dict[str, Any]]) -> list[Record]:
    return [
        Record(seq, f"2026-01-01T00:00:{seq:02d}Z", type_, data, "", "", "00000001.jsonl", seq * 100)
        for seq, (type_, data) in enumerate(items, 1)
    ]


PAUSED_RUN = (
    ("session.created", {"job_name": "old"}),
    ("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run started"}),
    ("session.state_change", {"from": "ACTIVE", "to": "PAUSED", "reason": "graceful shutdown (SIGTERM)"}),
    ("checkpoint.created", {"reason": "state change to PAUSED"}),
)


def test_an_old_sessions_requested_checkpoint_after_an_ending_is_the_commands() -> None:
    told = tell(records(*PAUSED_RUN, ("checkpoint.created", {"reason": "requested"}))).as_json()
    assert [(p["kind"], p["ending"], p["pid"]) for p in told["processes"]] == [
        ("run", "paused", None),
        ("checkpoint", "checkpointed", None),
    ]
    crashed = (*PAUSED_RUN[:2], ("tool.intent", {"tool_call_id": "call-1-0"}))
    told = tell(records(*crashed, ("checkpoint.created", {"reason": "requested"}))).as_json()
    assert [(p["kind"], p["ending"]) for p in told["processes"]] == [("run", "crashed")]


def test_a_langgraph_thread_is_open_between_invocations_and_crashed_before_a_torn_tail() -> None:
    thread = (
        ("session.created", {"kind": "langgraph", "thread_id": "t"}),
        ("langgraph.checkpoint", {"checkpoint_ns": "", "checkpoint_id": "1"}),
    )
    assert [p["ending"] for p in tell(records(*thread)).as_json()["processes"]] == ["open"]
    torn = {"segment": "00000001.jsonl", "offset": 200, "length": 9, "quarantined": "quarantine/x.torn"}
    told = tell(records(*thread, ("langgraph.repaired", {"repaired_torn_tail": torn}))).as_json()
    assert [(p["kind"], p["ending"]) for p in told["processes"]] == [
        ("langgraph", "crashed"),
        ("langgraph", "open"),
    ]
    assert told["processes"][0]["torn_tail"] == torn and told["crashes"] == 1


def test_the_fold_resumes_from_its_state_as_a_checkpoint_keeps_it() -> None:
    everything = records(
        *PAUSED_RUN,
        ("recovery.started", {"action": "resume", "in_doubt": [], "process": {"host": "h", "pid": 7}}),
        ("session.state_change", {"from": "PAUSED", "to": "ACTIVE", "reason": "recovered (paused)"}),
        ("session.completed", {"reason": "the model answered"}),
    )
    whole = StoryFold()
    for record in everything:
        whole.apply(record)
    for cut in range(1, len(everything)):
        first = StoryFold()
        for record in everything[:cut]:
            first.apply(record)
        resumed = StoryFold.from_state(json.loads(json.dumps(first.state())))
        assert resumed is not None
        for record in everything[cut:]:
            resumed.apply(record)
        assert resumed.told().as_json() == whole.told().as_json(), cut
    assert StoryFold.from_state({"processes": [{"no": "such field"}]}) is None


def test_the_words_for_what_a_recovery_found_and_did() -> None:
    stopped = [{"server": "git", "pid": 4242, "killed": [4242]}]
    skipped = [{"checkpoint_id": "ck-4", "seq": 30, "reason": "its body does not match its artifact id"}]
    found = {
        "action": "resume",
        "reason": "interrupted",
        "checkpoint": "ck-3",
        "in_doubt": [{"tool_call_id": "call-2-0", "tool": "store", "decision": "rerun_with_key"}],
        "skipped_checkpoints": skipped,
        "stopped_mcp_servers": stopped,
        "accept_divergence": True,
        "process": {"host": "box", "pid": 9},
    }
    everything = records(
        ("session.created", {"process": {"host": "box", "pid": 8}}),
        ("tool.intent", {"tool_call_id": "call-2-0", "tool": "store"}),
        ("recovery.started", found),
        ("mcp.tools", {"server": "git", "tools": [], "accepted": True}),
        ("session.state_change", {"from": "ACTIVE", "to": "ACTIVE", "reason": "recovered (interrupted)"}),
        (
            "recovery.resumed",
            {"checkpoint": "ck-3", "in_flight": {"turn": 2, "request_seq": 9}, "replaying": True},
        ),
        ("tool.intent", {"tool_call_id": "call-2-0", "tool": "store"}),
        ("tool.result", {"tool_call_id": "call-2-0", "tool": "store", "error": {"kind": "tool_failed"}}),
    )
    told = tell(everything, damaged_after="corrupt in 00000001.jsonl at byte 900").as_json()
    assert history_lines(told) == [
        "history (2 processes, 1 crashed)",
        "  partial: the journal is damaged after seq 8: corrupt in 00000001.jsonl at byte 900",
        "  1. run, pid 8 on box, 2026-01-01 00:00:01 to 00:00:02 (seq 1-2)",
        "     CRASHED after seq 2 (tool.intent): no ending on record",
        "  2. recover, pid 9 on box, 2026-01-01 00:00:03 to 00:00:08 (seq 3-8)",
        "     unknown: corrupt in 00000001.jsonl at byte 900, nothing after seq 8 can be read",
        "     found: plan resume (interrupted) from checkpoint ck-3, 1 call in doubt",
        "     with --accept-divergence: a model or MCP server that changed is taken as it is",
        "     skipped checkpoint ck-4: its body does not match its artifact id",
        "     stopped MCP server git left running (pid 4242)",
        "     call-2-0 store: run again with the same key; ran again at seq 7: failed (seq 8)",
        "     accepted MCP server git's changed tools (seq 4)",
        "     resumed at seq 6, asking turn 2 again (the model must repeat its streamed text)",
    ]


# -- the golden sessions: real runs killed for real, committed with what inspect tells -------------

HISTORY = FIXTURES / "history"
STORIES = {
    # session: [(kind, ending)], and each process's decisions
    # [(tool_call_id, decision, probe, resolution, result)]
    "killed-twice": (
        [("run", "crashed"), ("recover", "crashed"), ("recover", "completed")],
        [[], [("call-3-0", "probe", None, None, None)], [("call-3-0", "probe", "happened", None, "done")]],
    ),
    "blocked-resolved": (
        [("run", "crashed"), ("recover", "blocked"), ("recover", "crashed"), ("recover", "completed")],
        [
            [],
            [("call-3-0", "block", None, None, None)],
            [("call-3-0", "resolved_done", None, None, None)],
            [("call-3-0", "resolved_done", None, "done", "done")],
        ],
    ),
    "torn-checkpoint": (
        [("run", "crashed"), ("recover", "completed"), ("checkpoint", "checkpointed")],
        [[], [("call-3-0", "probe", "not_happened", None, "done")], []],
    ),
}


@pytest.fixture
def history_root(tmp_path: Path) -> Path:
    root = tmp_path / "history-root"
    root.mkdir(mode=0o700)
    shutil.copytree(HISTORY / "root" / "sessions", root / "sessions")
    return root


@pytest.mark.parametrize("session_id", sorted(STORIES))
def test_the_golden_sessions_tell_their_story_as_committed(
    session_id: str, history_root: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hs(*args: str) -> CliResult:
        return cli(*args, extra_env={"HANDSHAKE_HOME": str(history_root)})

    told = history(hs, session_id)
    assert told == json.loads((HISTORY / f"{session_id}.history.json").read_text())
    assert shown(hs, session_id) == (HISTORY / f"{session_id}.history.txt").read_text().splitlines()
    endings, decisions = STORIES[session_id]
    assert [(p["kind"], p["ending"]) for p in told["processes"]] == endings
    assert [
        [(d["tool_call_id"], d["decision"], d["probe"], d["resolution"], d["result"]) for d in p["decisions"]]
        for p in told["processes"]
    ] == decisions
    for process in told["processes"]:
        assert isinstance(process["pid"], int) and process["host"]
    # the same story from the newest checkpoint and the tail, as for a long journal
    store = FilesystemStore(Paths(history_root))
    monkeypatch.setattr(describe, "FULL_CHECK_BYTES", 0)
    assert describe.describe(store, session_id)["history"] == told


def test_a_run_stopped_at_a_boundary_then_cancelled_never_crashed(
    tmp_path: Path, home_env: dict[str, str], hs: Cli, workspace: Path, root: Path
) -> None:
    job = long_turn_job(tmp_path, words=300, delay_ms=20)
    proc = start(home_env, "run", str(job), "--session-id", "stopped-1", "--workspace", str(workspace))
    try:
        session = session_dir(root, "stopped-1")
        wait_for(
            lambda: (
                any(r.type == "model.chunk" for r in records_of(root, "stopped-1"))
                if session.exists()
                else False
            )
        )
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 75
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert hs("recover", "stopped-1", "--cancel").code == 0
    told = history(hs, "stopped-1")
    assert told["crashes"] == 0
    run, cancel = told["processes"]
    assert (run["ending"], run["reason"]) == ("paused", "graceful shutdown (SIGINT)")
    assert (cancel["kind"], cancel["ending"], cancel["found"]["action"]) == ("recover", "cancelled", "cancel")
    lines = shown(hs, "stopped-1")
    assert lines[0] == "history (2 processes, never crashed)"
    assert lines[2] == "     stopped at a boundary (graceful shutdown (SIGINT))"
    assert lines[4] == "     cancelled (cancelled by an operator)"
