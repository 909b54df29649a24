"""A LangGraph agent for the crash tests: a scripted chat model (langchain_core's
FakeMessagesListChatModel) that asks for three payments, two of them in one turn, run by
LangGraph's ToolNode. A payment is a non-idempotent effect: a line appended (and synced) to
a ledger file. Run as a program, it runs the agent on one thread to its end, or until an
interrupt, or until it is killed:

    python -m tests.support.langgraph_agent --saver handshake|sqlite --root DIR|URL --ledger FILE
        [--kill-after-payment N | --kill-before-payment N | --kill-in SECONDS]
        [--probe] [--resume done|retry|JSON]

It prints one JSON line: {"status": "finished" | "interrupted", "interrupts": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from handshake_cli.langgraph import Probed, exactly_once

THREAD = "agent-thread"
SCRIPT = [
    AIMessage(
        "",
        tool_calls=[
            {"name": "send_payment", "args": {"to": "bob", "amount": 5}, "id": "call_1"},
            {"name": "send_payment", "args": {"to": "carol", "amount": 7}, "id": "call_2"},
        ],
    ),
    AIMessage(
        "", tool_calls=[{"name": "send_payment", "args": {"to": "dave", "amount": 11}, "id": "call_3"}]
    ),
    AIMessage("all three paid"),
]
PAYMENTS = 3


def payments(ledger: Path) -> list[dict[str, Any]]:
    """Every payment the ledger holds (the effects that happened)."""
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]


_LEDGER_LOCK = threading.Lock()  # ToolNode runs a turn's two payments in parallel


def pay(ledger: Path, to: str, amount: int, key: str, kill_after: int | None, kill_before: int | None) -> str:
    with _LEDGER_LOCK:
        if kill_before is not None and len(payments(ledger)) + 1 == kill_before:
            os.kill(os.getpid(), signal.SIGKILL)  # the intent is journaled; the payment never made
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(json.dumps({"to": to, "amount": amount, "key": key}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if kill_after is not None and len(payments(ledger)) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # the effect happened; its result was never returned
    return f"paid {amount} to {to}"


def build(
    saver: Any, ledger: Path, *, gated: bool, kill_after: int | None, kill_before: int | None, probe: bool
) -> Any:
    def probe_ledger(key: str, **_: Any) -> Probed:
        found = [p for p in payments(ledger) if p["key"] == key]
        return Probed(bool(found), f"paid {found[0]['amount']} to {found[0]['to']}" if found else None)

    if gated:

        @tool
        @exactly_once(idempotency="non_idempotent", probe=probe_ledger if probe else None)
        def send_payment(to: str, amount: int, idempotency_key: str = "") -> str:
            """Send a payment."""
            return pay(ledger, to, amount, idempotency_key, kill_after, kill_before)

    else:

        @tool
        def send_payment(to: str, amount: int) -> str:
            """Send a payment."""
            return pay(ledger, to, amount, "", kill_after, kill_before)

    def agent(state: MessagesState) -> dict[str, Any]:
        turn = sum(isinstance(m, AIMessage) for m in state["messages"])
        model = FakeMessagesListChatModel(responses=[SCRIPT[turn]])
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([send_payment]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=saver)


def run(
    saver_kind: str,
    root: str,
    ledger: Path,
    *,
    kill_after: int | None = None,
    kill_before: int | None = None,
    kill_in: float | None = None,
    probe: bool = False,
    resume: str | dict[str, str] | None = None,
) -> dict[str, Any]:
    config: RunnableConfig = {"configurable": {"thread_id": THREAD}}
    if saver_kind == "handshake":
        from handshake_cli.langgraph import HandshakeSaver

        saver: Any = HandshakeSaver(root)
    else:
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        connection = sqlite3.connect(Path(root) / "checkpoints.sqlite", check_same_thread=False)
        connection.execute("PRAGMA synchronous=FULL")
        saver = SqliteSaver(connection)
    graph = build(
        saver,
        ledger,
        gated=saver_kind == "handshake",
        kill_after=kill_after,
        kill_before=kill_before,
        probe=probe,
    )
    started = graph.get_state(config).values
    payload: Any = (
        Command(resume=resume) if resume else (None if started else {"messages": [("user", "pay")]})
    )
    if kill_in is not None:  # a kill at a random moment of the run, whatever it is doing then
        timer = threading.Timer(kill_in, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
    graph.invoke(payload, config)
    state = graph.get_state(config)
    interrupts = [i.value for task in state.tasks for i in task.interrupts]
    if saver_kind == "handshake":
        saver.close()
    return {"status": "interrupted" if interrupts else "finished", "interrupts": interrupts}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saver", choices=["handshake", "sqlite"], required=True)
    parser.add_argument("--root", required=True, help="a directory, or a PostgreSQL URL (handshake)")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--kill-after-payment", type=int)
    parser.add_argument("--kill-before-payment", type=int)
    parser.add_argument("--kill-in", type=float, help="seconds after the graph starts")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--resume", help='"done", "retry", or JSON {call id: "done" | "retry"}')
    args = parser.parse_args(argv)
    outcome = run(
        args.saver,
        args.root,
        args.ledger,
        kill_after=args.kill_after_payment,
        kill_before=args.kill_before_payment,
        kill_in=args.kill_in,
        probe=args.probe,
        resume=json.loads(args.resume) if args.resume and args.resume.startswith("{") else args.resume,
    )
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
