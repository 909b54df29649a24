"""HandshakeSaver beyond the conformance suite: a thread is a session that survives its
saver, large values are artifacts stored once, a torn tail is cut when the thread opens, and
the session's lock keeps a second writer out."""

from __future__ import annotations

import operator
import os
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the test extra is not installed (pip install -e '.[test]')")

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from handshake_cli.errors import SessionLocked
from handshake_cli.langgraph import HandshakeSaver
from handshake_cli.paths import Paths
from handshake_cli.session.langgraph_thread import session_id_for
from handshake_cli.storage.artifacts import ArtifactStore
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.store import SESSION_ID


class State(TypedDict):
    document: str
    steps: Annotated[list[str], operator.add]


def build(saver: HandshakeSaver):  # type: ignore[no-untyped-def]
    graph = StateGraph(State)
    graph.add_node("one", lambda state: {"steps": ["one"]})
    graph.add_node("two", lambda state: {"steps": ["two"]})
    graph.add_edge(START, "one")
    graph.add_edge("one", "two")
    graph.add_edge("two", END)
    return graph.compile(checkpointer=saver)


def config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def test_a_thread_outlives_its_saver_and_reads_back_whole(tmp_path: Path) -> None:
    with HandshakeSaver(tmp_path) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("t1"))
        before = [t.checkpoint["id"] for t in saver.list(config("t1"))]
    with HandshakeSaver(tmp_path) as saver:
        after = [t.checkpoint["id"] for t in saver.list(config("t1"))]
        state = build(saver).get_state(config("t1"))
    assert before == after and len(after) == 4
    assert state.values == {"document": "d", "steps": ["one", "two"]}


def test_a_large_unchanged_channel_is_one_artifact(tmp_path: Path) -> None:
    big = "x" * 100_000
    with HandshakeSaver(tmp_path) as saver:
        build(saver).invoke({"document": big, "steps": []}, config("big"))
        assert build(saver).get_state(config("big")).values["document"] == big
    session = FilesystemStore(Paths(tmp_path)).session(session_id_for("big"))
    frames = [f for f in ArtifactStore(session.artifacts).frames() if f.length > 100_000]
    # The input as written (the `__start__` channel) and the `document` channel: once each,
    # though four checkpoints hold the document. (The other frame is the index snapshot.)
    assert len(frames) == 2
    journal = b"".join(p.read_bytes() for p in sorted(session.journal.iterdir()))
    assert len(journal) < 50_000  # the document is in no record


def test_a_torn_tail_is_cut_into_quarantine_when_the_thread_opens(tmp_path: Path) -> None:
    with HandshakeSaver(tmp_path) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("torn"))
    session = FilesystemStore(Paths(tmp_path)).session(session_id_for("torn"))
    segment = sorted(session.journal.iterdir())[-1]
    with open(segment, "ab") as f:
        f.write(b'{"seq":99,"ts":"x","type":"langgraph.wri')  # a write a kill cut short
    with HandshakeSaver(tmp_path) as saver:
        assert build(saver).get_state(config("torn")).values["steps"] == ["one", "two"]
        build(saver).invoke({"document": "e", "steps": []}, config("torn"))
    assert os.listdir(session.quarantine)
    with HandshakeSaver(tmp_path) as saver:
        assert build(saver).get_state(config("torn")).values["steps"] == ["one", "two", "one", "two"]


def test_the_thread_has_one_writer(tmp_path: Path) -> None:
    with HandshakeSaver(tmp_path) as first, HandshakeSaver(tmp_path) as second:
        build(first).invoke({"document": "d", "steps": []}, config("busy"))
        with pytest.raises(SessionLocked):
            second.get_tuple(config("busy"))


def test_any_thread_id_maps_to_a_session_and_back(tmp_path: Path) -> None:
    odd = ["../etc/passwd", "a b/ü\x00", "x" * 500, "-", ""]
    with HandshakeSaver(tmp_path) as saver:
        for thread_id in odd:
            build(saver).invoke({"document": "d", "steps": []}, config(thread_id))
        assert sorted(saver.thread_ids()) == sorted(odd)
    assert all(SESSION_ID.fullmatch(session_id_for(t)) for t in odd)
    assert len({session_id_for(t) for t in odd}) == len(odd)


def test_a_thread_reopens_from_its_index_snapshot_and_reads_the_same(tmp_path: Path) -> None:
    with HandshakeSaver(tmp_path) as saver:
        for _ in range(3):
            build(saver).invoke({"document": "d", "steps": []}, config("long"))
        everything = [(t.checkpoint, t.metadata, t.pending_writes) for t in saver.list(config("long"))]
    session = FilesystemStore(Paths(tmp_path)).session(session_id_for("long"))
    head = FilesystemStore(Paths(tmp_path)).read_head(session.session_id)
    assert head is not None and head["langgraph_index"]["seq"] == head["last_seq"]
    with HandshakeSaver(tmp_path) as saver:
        opened = saver.thread("long", create=False)
        assert opened is not None and opened.index.records > 0 and opened.indexed_seq == head["last_seq"]
        assert [
            (t.checkpoint, t.metadata, t.pending_writes) for t in saver.list(config("long"))
        ] == everything
        build(saver).invoke({"document": "d", "steps": []}, config("long"))  # goes on after it
    (session.path / "head.json").unlink()  # without the cache: the whole journal is folded
    with HandshakeSaver(tmp_path) as saver:
        assert len(list(saver.list(config("long")))) == len(everything) + 4


def test_prune_hides_checkpoints_and_copy_then_delete_reclaims_their_bytes(tmp_path: Path) -> None:
    """README, "LangGraph": prune keeps every byte (the journal is append-only); copying the
    thread takes only what is still shown, and deleting the old one frees the rest."""
    sessions = tmp_path / "sessions"

    def size(thread_id: str) -> int:
        folder = sessions / session_id_for(thread_id)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    with HandshakeSaver(tmp_path) as saver:
        for n in range(5):
            build(saver).invoke({"document": f"{n}" * 20_000, "steps": []}, config("old"))
        before = size("old")
        saver.prune(["old"])
        assert len(list(saver.list(config("old")))) == 1
        assert size("old") >= before  # hidden, not reclaimed
        state = build(saver).get_state(config("old")).values
        saver.copy_thread("old", "new")
        saver.delete_thread("old")
        assert not (sessions / session_id_for("old")).exists()
        assert len(list(saver.list(config("new")))) == 1
        assert build(saver).get_state(config("new")).values == state
    assert size("new") < before / 3


def test_writes_made_at_once_share_one_sync_and_each_returns_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangGraph calls put_writes from its executor's threads, several at once: the records
    written while one sync runs ride on the next, one sync for all of them."""
    tasks = 8
    with HandshakeSaver(tmp_path) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("many"))
        newest = saver.get_tuple(config("many"))
        assert newest is not None
        opened = saver.thread("many", create=False)
        assert opened is not None
        written = threading.Event()
        base = opened.appender.last_seq
        apply = opened.index.apply

        def counted(record: Any) -> None:
            apply(record)
            if record.seq == base + tasks:
                written.set()

        syncs: list[int] = []
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            syncs.append(fd)
            assert written.wait(30)  # the first sync lasts until every task has written
            real(fd)

        mine: dict[int, int] = {}  # thread -> the seq of the record it wrote
        write = opened.write

        def noted(type_: str, data: dict[str, Any]) -> Any:
            record = write(type_, data)
            mine[threading.get_ident()] = record.seq
            return record

        monkeypatch.setattr(opened.index, "apply", counted)
        monkeypatch.setattr(opened, "write", noted)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        returned: list[bool] = []

        def task(n: int) -> None:
            saver.put_writes(newest.config, [("steps", [f"t{n}"])], f"task-{n}")
            returned.append(opened.durable_seq >= mine[threading.get_ident()])  # its own on disk

        threads = [threading.Thread(target=task, args=(n,)) for n in range(tasks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        monkeypatch.undo()
        assert len(syncs) == 2  # the first task's own, then one for the seven written meanwhile
        assert returned == [True] * tasks  # each returned with its own record on disk
        assert opened.durable_seq == base + tasks
    with HandshakeSaver(tmp_path) as saver:
        again = saver.get_tuple(config("many"))
        assert again is not None and len(again.pending_writes or []) == tasks
