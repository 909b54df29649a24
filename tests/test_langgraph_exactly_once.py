"""Exactly-once tools in a real LangGraph agent (tests/support/langgraph_agent.py: a scripted
chat model asking for three payments, LangGraph's ToolNode running them), SIGKILLed at
chosen points and run again: LangGraph's own SqliteSaver (synchronous=FULL) pays twice;
HandshakeSaver with the `exactly_once` gate never does. A call in doubt without a probe
stops the graph with an interrupt carrying the guidance, and the graph resumes with the
operator's answer."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "langgraph.checkpoint.sqlite", reason="the test extra is not installed (pip install -e '.[test]')"
)

from tests.support.langgraph_agent import PAYMENTS, payments

REPO = Path(__file__).resolve().parent.parent


def agent(root: Path, saver: str, *flags: str, store: str | None = None) -> dict[str, Any] | None:
    """One run of the agent in its own process; its outcome, or None when it was killed. The
    ledger is in `root`, the thread in `store` (a PostgreSQL URL) when given, else in `root`."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.langgraph_agent",
            "--saver",
            saver,
            "--root",
            store or str(root),
            "--ledger",
            str(root / "ledger"),
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode == -9:
        return None
    assert done.returncode == 0, done.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return outcome


def operator_answer(root: Path, interrupts: list[dict[str, Any]]) -> str:
    """What an operator finds in the payee's books for each call in doubt: the payment with
    its key happened or not. As JSON, for --resume."""
    keys = {p["key"] for p in payments(root / "ledger")}
    return json.dumps(
        {i["tool_call_id"]: "done" if i["idempotency_key"] in keys else "retry" for i in interrupts}
    )


def run_to_the_end(root: Path, saver: str, *flags: str, store: str | None = None) -> list[dict[str, Any]]:
    """Run the agent again until it finishes, answering each interrupt as an operator would;
    the interrupts met on the way."""
    met: list[dict[str, Any]] = []
    resume: list[str] = []
    for _ in range(20):
        outcome = agent(root, saver, *flags, *resume, store=store)
        if outcome is None:
            resume = []
            continue
        if outcome["status"] == "finished":
            return met
        met += outcome["interrupts"]
        resume = ["--resume", operator_answer(root, outcome["interrupts"])]
    raise AssertionError("the agent never finished")


def paid_once_each(root: Path) -> bool:
    counts = Counter((p["to"], p["amount"]) for p in payments(root / "ledger"))
    return len(counts) == PAYMENTS and set(counts.values()) == {1}


def test_langgraph_own_saver_pays_twice_after_a_kill(tmp_path: Path) -> None:
    assert agent(tmp_path, "sqlite", "--kill-after-payment", "1") is None
    run_to_the_end(tmp_path, "sqlite")
    counts = Counter((p["to"], p["amount"]) for p in payments(tmp_path / "ledger"))
    assert max(counts.values()) == 2, counts


@pytest.mark.parametrize("payment", range(1, PAYMENTS + 1))
def test_handshake_pays_once_when_a_probe_settles_the_call_in_doubt(tmp_path: Path, payment: int) -> None:
    assert agent(tmp_path, "handshake", "--probe", "--kill-after-payment", str(payment)) is None
    assert run_to_the_end(tmp_path, "handshake", "--probe") == []
    assert paid_once_each(tmp_path)


def test_on_a_postgresql_root_a_killed_agent_pays_each_invoice_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """Killed right after its second payment (one of the two calls of one turn), the thread
    in a database: the next run finds the call in doubt there, its probe settles it."""
    assert agent(tmp_path, "handshake", "--probe", "--kill-after-payment", "2", store=postgres_url) is None
    assert run_to_the_end(tmp_path, "handshake", "--probe", store=postgres_url) == []
    assert paid_once_each(tmp_path)


def test_without_a_probe_the_graph_stops_with_guidance_until_an_operator_answers(tmp_path: Path) -> None:
    assert agent(tmp_path, "handshake", "--kill-after-payment", "1") is None
    outcome = agent(tmp_path, "handshake")
    assert outcome is not None and outcome["status"] == "interrupted"
    guidance = outcome["interrupts"][0]
    assert guidance["handshake"] == "tool_call_in_doubt" and guidance["thread_id"] == "agent-thread"
    assert guidance["tool"] == "send_payment" and guidance["tool_call_id"].startswith("send_payment-")
    assert 'Command(resume="done")' in guidance["message"]

    def paid_keys() -> Counter[str]:
        return Counter(p["key"] for p in payments(tmp_path / "ledger"))

    # The call in doubt shown (ToolNode runs the turn's two calls at once, and which of them
    # stops the node first is the threads' race) is not run while it is in doubt; its sibling
    # may run meanwhile, once, as LangGraph runs a step's other tasks.
    in_doubt = {i["idempotency_key"] for i in outcome["interrupts"]}
    held = {key: paid_keys()[key] for key in in_doubt}
    assert max(paid_keys().values()) == 1
    again = agent(tmp_path, "handshake")  # resumed without an answer: still in doubt, not run
    assert again is not None and again["interrupts"] == outcome["interrupts"]
    assert {key: paid_keys()[key] for key in in_doubt} == held and max(paid_keys().values()) == 1
    met = run_to_the_end(tmp_path, "handshake")  # the operator answers done or retry for each
    assert met and paid_once_each(tmp_path)


def test_retry_runs_the_call_in_doubt_again_with_the_same_key(tmp_path: Path) -> None:
    assert agent(tmp_path, "handshake", "--kill-before-payment", "3") is None
    outcome = agent(tmp_path, "handshake")
    assert outcome is not None and outcome["status"] == "interrupted"
    key = outcome["interrupts"][0]["idempotency_key"]
    assert key not in {p["key"] for p in payments(tmp_path / "ledger")}
    finished = agent(tmp_path, "handshake", "--resume", "retry")  # the one call in doubt: a bare answer
    assert finished is not None and finished["status"] == "finished"
    assert paid_once_each(tmp_path)
    assert key in {p["key"] for p in payments(tmp_path / "ledger")}


# A run of the agent takes ~0.05-0.07 s from the graph's start (less once a kill has left
# part of it checkpointed): kills drawn from a wider window mostly miss, and each miss costs a
# whole process (about a second of imports) for no kill.
KILL_WINDOW_SECONDS = 0.12


@dataclass
class Sweep:
    kills: int = 0
    runs: int = 0  # threads run to the end, each after its kills
    duplicated_runs: int = 0  # threads whose ledger holds a payment twice
    extra_payments: int = 0  # payments beyond one per invoice, over all threads


def sweep(tmp_path: Path, saver: str, kills: int, seed: int = 15) -> Sweep:
    """Kill the agent at random moments (each run of a thread killed until one gets through,
    then run to its end), until `kills` kills; what the ledgers hold."""
    rng = random.Random(seed)
    found = Sweep()
    while found.kills < kills:
        root = tmp_path / f"{saver}{found.runs}"
        root.mkdir()
        probe = ["--probe"] if found.runs % 2 and saver == "handshake" else []
        found.runs += 1
        while True:  # kill it at random moments until one run gets through
            outcome = agent(root, saver, *probe, "--kill-in", f"{rng.uniform(0, KILL_WINDOW_SECONDS):.4f}")
            if outcome is None:
                found.kills += 1
                continue
            break
        if outcome["status"] != "finished":
            run_to_the_end(root, saver, *probe)
        counts = Counter((p["to"], p["amount"]) for p in payments(root / "ledger"))
        assert len(counts) == PAYMENTS, (root, counts)  # every invoice paid, at least once
        extra = sum(counts.values()) - PAYMENTS
        found.duplicated_runs += extra > 0
        found.extra_payments += extra
    return found


@pytest.mark.slow
def test_two_hundred_random_kills_never_pay_twice(tmp_path: Path) -> None:
    found = sweep(tmp_path, "handshake", 200)
    print(f"handshake: {found}")
    assert found.kills >= 200
    assert found.duplicated_runs == 0 and found.extra_payments == 0, found
