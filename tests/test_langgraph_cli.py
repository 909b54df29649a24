"""The command line on LangGraph threads' sessions: `recover` repairs what belongs to
storage and records an operator's answer for a gated call in doubt, prints how to resume
from LangGraph and never runs the graph; `inspect --verify` checks a thread like any session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph.graph", reason="the test extra is not installed (pip install -e '.[test]')")

from handshake_cli.langgraph import HandshakeSaver
from handshake_cli.session.langgraph_thread import session_id_for
from tests.support.cli import Cli
from tests.support.langgraph_agent import payments
from tests.support.paths import FIXTURES
from tests.test_langgraph_exactly_once import agent, paid_once_each
from tests.test_langgraph_saver import build, config

SESSION = session_id_for("agent-thread")


def test_recover_records_done_for_the_call_in_doubt_and_the_graph_takes_it(root: Path, cli: Cli) -> None:
    assert agent(root, "handshake", "--kill-after-payment", "3") is None
    plan = cli("recover", SESSION, "--root", str(root), "--dry-run", "--json")
    assert plan.code == 0, plan.stderr
    (call,) = plan.json["in_doubt"]
    assert plan.json["thread_id"] == "agent-thread" and call["idempotency"] == "non_idempotent"
    assert plan.json["resume"] == 'graph.invoke(None, {"configurable": {"thread_id": "agent-thread"}})'
    done = cli("recover", SESSION, "--root", str(root), "--resolve", f"{call['tool_call_id']}=done")
    assert done.code == 0, done.stderr
    assert "never runs the graph" in done.stdout and len(payments(root / "ledger")) == 3
    finished = agent(root, "handshake")
    assert finished is not None and finished["status"] == "finished"
    assert paid_once_each(root)
    verify = cli("inspect", SESSION, "--root", str(root), "--verify", "--json")
    assert verify.code == 0, verify.stdout + verify.stderr


def test_recover_refuses_an_answer_for_a_call_not_in_doubt(root: Path, cli: Cli) -> None:
    assert agent(root, "handshake", "--probe") is not None
    refused = cli("recover", SESSION, "--root", str(root), "--resolve", "send_payment-0=done")
    assert refused.code == 2 and "not a call in doubt" in refused.stderr


def test_recover_cuts_a_torn_tail_into_quarantine(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("torn"))
    session = root / "sessions" / session_id_for("torn")
    segment = sorted((session / "journal").iterdir())[-1]
    with open(segment, "ab") as f:
        f.write(b'{"seq":99,"ts":"x","type":"langgraph.wri')
    done = cli("recover", session_id_for("torn"), "--root", str(root), "--json")
    assert done.code == 0, done.stderr
    assert done.json["repaired_torn_tail"]["quarantined"].startswith("quarantine/")
    assert cli("inspect", session_id_for("torn"), "--root", str(root), "--verify").code == 0


def test_recover_leaves_a_thread_a_live_saver_holds(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("held"))
        held = cli("recover", session_id_for("held"), "--root", str(root))
    assert held.code == 4 and "HandshakeSaver" in held.stderr


def test_the_readme_example_pays_each_invoice_once(
    tmp_path: Path, home_env: dict[str, str], cli: Cli
) -> None:
    """README, "LangGraph": killed after the first payment, recovered, resumed."""
    example = Path(__file__).resolve().parent.parent / "fixtures" / "langgraph" / "pay.py"

    def pay(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(example)],
            cwd=tmp_path,
            env={**home_env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert pay(KILL_AFTER_PAYMENT="1").returncode == -9
    session = session_id_for("invoices-2026-12")
    assert session == "lg-invoices-2026-12-05f14d8161423050"  # as the README names it
    plan = cli("recover", session, "--dry-run", "--json", extra_env=home_env)
    assert plan.code == 0 and len(plan.json["in_doubt"]) == 1
    done = pay()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["paid (found by the probe)", "paid 7 to carol"]
    paid = [json.loads(line)["to"] for line in (tmp_path / "payments.txt").read_text().splitlines()]
    assert paid == ["bob", "carol"]


def test_gc_removes_a_finished_thread_and_keeps_an_unfinished_one(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        for thread_id in ("finished", "going-on"):
            build(saver).invoke({"document": "d", "steps": []}, config(thread_id))
        saver.finish_thread("finished")
        with pytest.raises(Exception, match="was finished"):
            build(saver).invoke({"document": "e", "steps": []}, config("finished"))
    swept = cli("gc", "--older-than", "0s", "--root", str(root), "--json")
    assert swept.code == 0, swept.stderr
    assert sorted(p.name for p in (root / "sessions").iterdir()) == [session_id_for("going-on")]
    (kept,) = swept.json["skipped"]
    assert kept["state"] == "ACTIVE" and kept["reason"] == "unfinished"
    # What moves a thread on is its program (or the age rule), never `recover`.
    assert "finish_thread('going-on')" in kept["detail"] and "--include-unfinished" in kept["detail"]
    assert "recover" not in kept["detail"]
    aged = cli("gc", "--older-than", "0s", "--include-unfinished", "--root", str(root), "--json")
    assert aged.code == 0 and [r["session_id"] for r in aged.json["removed"]] == []  # within the grace


def test_the_listing_shows_a_thread_its_id_and_whether_it_is_finished(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        for thread_id in ("finished", "going on/2"):
            build(saver).invoke({"document": "d", "steps": []}, config(thread_id))
        saver.finish_thread("finished")
        held = cli("inspect", "--root", str(root), "--json")
    listed = cli("inspect", "--root", str(root), "--json")
    assert listed.code == 0 and held.code == 0, listed.stderr + held.stderr
    for listing, holder in ((held, True), (listed, False)):
        rows = {r["session_id"]: r for r in listing.json["sessions"]}
        going = rows[session_id_for("going on/2")]
        assert going["kind"] == "langgraph" and going["thread_id"] == "going on/2"
        # No run to interrupt: ACTIVE whether or not a saver holds it now.
        assert going["state"] == "ACTIVE" and not going["needs_attention"]
        assert (going["lock_holder"] is not None) is holder
        finished = rows[session_id_for("finished")]
        assert finished["state"] == "COMPLETED" and finished["thread_id"] == "finished"
    human = cli("inspect", "--root", str(root))
    line = next(li for li in human.stdout.splitlines() if li.startswith(session_id_for("going on/2")))
    assert "langgraph going on/2" in line and "ACTIVE" in line
    described = cli("inspect", session_id_for("going on/2"), "--root", str(root), "--json")
    assert described.json["state"] == "ACTIVE" and described.json["stored_state"] == "CREATED"
    shown = cli("inspect", session_id_for("going on/2"), "--root", str(root)).stdout
    assert "langgraph going on/2" in shown and "ACTIVE" in shown


def test_a_job_session_is_listed_as_a_job(root: Path, cli: Cli, workspace: Path) -> None:
    quickstart = FIXTURES / "jobs" / "quickstart.toml"
    ran = cli(
        "run", str(quickstart), "--root", str(root), "--session-id", "job-1", "--workspace", str(workspace)
    )
    assert ran.code == 0, ran.stderr
    (row,) = cli("inspect", "--root", str(root), "--json").json["sessions"]
    assert row["kind"] == "job" and row["thread_id"] is None and row["job_name"] == "quickstart"


def test_recover_fork_of_a_thread_is_refused_and_makes_nothing(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("kept"))
    refused = cli("recover", session_id_for("kept"), "--fork", "copy", "--root", str(root), "--json")
    assert refused.code == 2 and refused.json["error"]["code"] == "usage"
    assert "copy_thread" in refused.json["error"]["message"]
    assert sorted(p.name for p in (root / "sessions").iterdir()) == [session_id_for("kept")]


def test_recover_all_leaves_threads_alone(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("idle"))
    done = cli("recover", "--all", "--root", str(root), "--json")
    assert done.code == 0, done.stdout + done.stderr
    assert done.json["sessions"] == []


def test_inspect_shows_the_thread_its_checkpoints_and_channels(root: Path, cli: Cli) -> None:
    with HandshakeSaver(root) as saver:
        build(saver).invoke({"document": "x" * 10_000, "steps": []}, config("seen"))
    shown = cli("inspect", session_id_for("seen"), "--root", str(root), "--json")
    assert shown.code == 0, shown.stderr
    thread = shown.json["langgraph"]
    assert thread["thread_id"] == "seen" and thread["checkpoints"] == 4
    (root_ns,) = thread["namespaces"]
    assert root_ns["newest_step"] == 2 and root_ns["pending_writes"] == []
    document = next(c for c in thread["channels"] if c["channel"] == "document")
    assert document["artifact_id"] and document["bytes"] > 10_000
    human = cli("inspect", session_id_for("seen"), "--root", str(root))
    assert "LangGraph thread 'seen' (4 checkpoints)" in human.stdout


def test_a_thread_exported_and_imported_elsewhere_reads_the_same(
    root: Path, tmp_path: Path, cli: Cli
) -> None:
    with HandshakeSaver(root) as saver:
        build(saver).invoke({"document": "x" * 5000, "steps": []}, config("moved"))
        before = [(t.checkpoint, t.metadata) for t in saver.list(config("moved"))]
    bundle, elsewhere = tmp_path / "moved.tar.gz", tmp_path / "elsewhere"
    assert cli("export", session_id_for("moved"), "--root", str(root), "-o", str(bundle)).code == 0
    imported = cli("import", str(bundle), "--root", str(elsewhere), "--json")
    assert imported.code == 0, imported.stderr
    assert imported.json["kind"] == "langgraph" and imported.json["thread_id"] == "moved"
    assert imported.json["state"] == "ACTIVE" and imported.json["workspace_note"] is None
    (elsewhere / "sessions" / session_id_for("moved")).rename(tmp_path / "gone")
    human = cli("import", str(bundle), "--root", str(elsewhere))
    assert human.code == 0, human.stderr
    assert "workspace" not in human.stdout + human.stderr and "LangGraph thread 'moved'" in human.stdout
    with HandshakeSaver(elsewhere) as saver:
        assert [(t.checkpoint, t.metadata) for t in saver.list(config("moved"))] == before


KEEP_SAVER_OPEN = """
import sys
from handshake_cli.langgraph import HandshakeSaver
from tests.test_langgraph_saver import build, config
saver = HandshakeSaver(sys.argv[1])
build(saver).invoke({"document": "d", "steps": []}, config("killed"))
print("invoked", flush=True)
sys.stdin.read()  # until the test kills this process
"""


def test_a_thread_whose_saver_was_killed_keeps_its_tail_reads_intact_and_goes_on(
    root: Path, tmp_path: Path, cli: Cli
) -> None:
    """The saver writes its records over a preallocated tail of newlines; SIGKILLed, it leaves
    the tail on disk. That is no damage: `inspect --verify` finds none, export carries the
    records only, and the next saver writes where the records end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KEEP_SAVER_OPEN, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "invoked\n"
    finally:
        proc.kill()
        proc.wait()
    session = session_id_for("killed")
    journal = root / "sessions" / session / "journal"
    [segment] = sorted(journal.iterdir())
    left = segment.read_bytes()
    assert left.endswith(b"\n\n") and left.rstrip(b"\n").endswith(b'"}')  # the tail the killed saver left

    verified = cli("inspect", session, "--root", str(root), "--verify", "--json")
    assert verified.code == 0, verified.stdout + verified.stderr
    assert verified.json["journal"]["damage"] is None, verified.stdout
    assert verified.json["journal"]["records"] == verified.json["journal"]["last_seq"] > 1
    # Only the head lags (the saver writes it when it closes): nothing in the journal to cut.
    assert set(verified.json["head"]["differences"]) <= {"last_seq"}
    bundle = tmp_path / "killed.tar.gz"
    assert cli("export", session, "--root", str(root), "-o", str(bundle)).code == 0
    assert cli("import", str(bundle), "--root", str(tmp_path / "elsewhere")).code == 0
    copied = (tmp_path / "elsewhere" / "sessions" / session / "journal" / segment.name).read_bytes()
    assert copied == segment.read_bytes().rstrip(b"\n") + b"\n"

    with HandshakeSaver(root) as saver:
        assert build(saver).get_state(config("killed")).values["steps"] == ["one", "two"]
        build(saver).invoke({"document": "e", "steps": []}, config("killed"))
        assert build(saver).get_state(config("killed")).values["steps"] == ["one", "two", "one", "two"]
    assert b"\n\n" not in segment.read_bytes()
    assert cli("inspect", session, "--root", str(root), "--verify").code == 0
