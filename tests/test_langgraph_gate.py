"""The exactly_once gate in-process: async tools (on a directory and on a PostgreSQL root),
identical calls in one node, the key a tool sees, and what it does under a checkpointer that
is not handshake's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the test extra is not installed (pip install -e '.[test]')")

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from handshake_cli.langgraph import HandshakeSaver, current_call, exactly_once
from handshake_cli.paths import Paths
from handshake_cli.session.langgraph_thread import session_id_for
from handshake_cli.storage.open import open_store


class State(TypedDict, total=False):
    keys: list[str]


CONFIG: RunnableConfig = {"configurable": {"thread_id": "gate"}}


def record_types(root: Path | str) -> list[str]:
    scan = open_store(Paths.resolve(str(root))).scan(session_id_for("gate"))
    return [r.type for r in scan.records if r.type.startswith("tool.")]


@pytest.fixture(params=["directory", "postgres"])
def gate_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The root the gate's thread lives in: a directory, and a PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path)


def test_an_async_tool_is_journaled_around_its_run(gate_root: str) -> None:
    seen: list[str] = []

    @exactly_once(idempotency="non_idempotent")
    async def notify(who: str, idempotency_key: str = "") -> str:
        seen.append(idempotency_key)
        return f"told {who}"

    async def node(state: State) -> State:
        return {"keys": [await notify("ann"), await notify("ann")]}

    graph = StateGraph(State)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    graph.add_edge("node", END)

    async def run() -> dict[str, Any]:
        async with HandshakeSaver(gate_root) as saver:
            return await graph.compile(checkpointer=saver).ainvoke({"keys": []}, CONFIG)

    assert asyncio.run(run())["keys"] == ["told ann", "told ann"]
    assert len(set(seen)) == 2  # two identical calls, two calls: each its own key
    assert record_types(gate_root) == ["tool.intent", "tool.result", "tool.intent", "tool.result"]


def test_the_key_is_the_same_through_the_parameter_and_current_call(tmp_path: Path) -> None:
    pairs: list[tuple[str, str | None]] = []

    @exactly_once(idempotency="idempotent_with_key")
    def charge(amount: int, idempotency_key: str = "") -> int:
        call = current_call()
        pairs.append((idempotency_key, call.idempotency_key if call else None))
        return amount

    graph = StateGraph(State)
    graph.add_node("node", lambda state: {"keys": [str(charge(3))]})
    graph.add_edge(START, "node")
    graph.add_edge("node", END)
    with HandshakeSaver(tmp_path) as saver:
        graph.compile(checkpointer=saver).invoke({"keys": []}, CONFIG)
    ((given, seen),) = pairs
    assert given == seen and given.startswith("hs-")
    assert "idempotency_key" not in str(charge.__signature__)  # type: ignore[attr-defined]


def test_under_another_checkpointer_the_gate_only_gives_the_key() -> None:
    keys: list[str] = []

    @exactly_once(idempotency="non_idempotent")
    def act(idempotency_key: str = "") -> str:
        keys.append(idempotency_key)
        return "acted"

    graph = StateGraph(State)
    graph.add_node("node", lambda state: {"keys": [act()]})
    graph.add_edge(START, "node")
    graph.add_edge("node", END)
    graph.compile(checkpointer=InMemorySaver()).invoke({"keys": []}, CONFIG)
    assert len(keys) == 1 and keys[0].startswith("hs-")
