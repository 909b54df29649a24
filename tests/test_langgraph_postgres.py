"""HandshakeSaver on a PostgreSQL root: a thread written there is a session of the database,
read back whole by a new process (from its index snapshot), shown and verified by
`handshake inspect --root URL`, its large values artifacts of the database stored once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.graph", reason="the test extra is not installed (pip install -e '.[test]')")
pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg

from handshake_cli.errors import SessionLocked
from handshake_cli.langgraph import HandshakeSaver
from handshake_cli.paths import Paths
from handshake_cli.session.langgraph_thread import session_id_for
from handshake_cli.storage.open import open_store
from tests.support.cli import CliResult
from tests.test_langgraph_saver import build, config

READ_BACK = """
import json, sys
from tests.test_langgraph_saver import build, config
from handshake_cli.langgraph import HandshakeSaver
with HandshakeSaver(sys.argv[1]) as saver:
    state = build(saver).get_state(config("pg"))
    ids = [t.checkpoint["id"] for t in saver.list(config("pg"))]
print(json.dumps({"values": state.values, "ids": ids}))
"""


def test_a_thread_on_postgresql_is_read_back_by_a_new_process_and_by_inspect(
    postgres_url: str, cli: Callable[..., CliResult]
) -> None:
    big = "y" * 50_000
    with HandshakeSaver(postgres_url) as saver:
        build(saver).invoke({"document": big, "steps": []}, config("pg"))
        written = [t.checkpoint["id"] for t in saver.list(config("pg"))]

    store = open_store(Paths.resolve(postgres_url))
    session_id = session_id_for("pg")
    records = store.scan(session_id).records
    named = {
        ref["artifact"]
        for r in records
        if r.type == "langgraph.checkpoint"
        for ref in [blob["value"] for blob in r.data["blobs"]]
        if "artifact" in ref
    }
    assert named and all('"pack":' not in json.dumps(r.data) for r in records)  # no pack on a database
    assert all(store.get_artifact(session_id, ident).count(b"y") >= 50_000 for ident in named)
    head = store.read_head(session_id) or {}
    index = [r for r in records if r.type == "langgraph.index"]
    # Each value once (the unchanged document is not stored again), beside the index snapshots.
    assert set(store.artifact_sizes(session_id)) == named | {r.data["artifact_id"] for r in index}
    assert index and head["langgraph_index"]["seq"] == index[-1].seq  # the snapshot a new saver starts from

    proc = subprocess.run(
        [sys.executable, "-c", READ_BACK, postgres_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    again: dict[str, Any] = json.loads(proc.stdout)
    assert again["ids"] == written and len(written) == 4
    assert again["values"] == {"document": big, "steps": ["one", "two"]}

    verified = cli("inspect", session_id, "--root", postgres_url, "--verify", "--json")
    assert verified.code == 0, verified.stdout + verified.stderr
    shown = cli("inspect", session_id, "--root", postgres_url, "--json")
    assert shown.code == 0, shown.stderr
    thread = shown.json["langgraph"]
    assert thread["thread_id"] == "pg" and thread["checkpoints"] == 4
    document = next(c for c in thread["channels"] if c["channel"] == "document")
    assert document["artifact_id"] and document["bytes"] > 50_000


def test_a_thread_on_postgresql_has_one_writer(postgres_url: str) -> None:
    with HandshakeSaver(postgres_url) as first, HandshakeSaver(postgres_url) as second:
        build(first).invoke({"document": "d", "steps": []}, config("one"))
        with pytest.raises(SessionLocked):
            second.get_tuple(config("one"))


def test_gc_keep_checkpoints_keeps_the_values_a_finished_thread_names(
    postgres_url: str, cli: Callable[..., CliResult]
) -> None:
    big = "z" * 30_000
    with HandshakeSaver(postgres_url) as saver:
        build(saver).invoke({"document": big, "steps": []}, config("kept"))
        saver.finish_thread("kept")
    swept = cli("gc", "--keep-checkpoints", "1", "--root", postgres_url, "--json")
    assert swept.code == 0, swept.stdout + swept.stderr
    with HandshakeSaver(postgres_url) as saver:
        assert build(saver).get_state(config("kept")).values == {"document": big, "steps": ["one", "two"]}


def test_a_torn_tail_in_the_database_is_cut_into_quarantine_when_the_thread_opens(postgres_url: str) -> None:
    with HandshakeSaver(postgres_url) as saver:
        build(saver).invoke({"document": "d", "steps": []}, config("torn"))
    store = open_store(Paths.resolve(postgres_url))
    session_id = session_id_for("torn")
    last = store.last_record(session_id)
    assert last is not None
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a write a kill cut short
        conn.execute(
            "UPDATE handshake.records SET line = line || %s "
            "WHERE session_id = %s AND segment = %s AND byte_offset = %s",
            (
                b'{"seq":99,"ts":"x","type":"langgraph.wri',
                session_id,
                int(last.segment.split(".")[0]),
                last.offset,
            ),
        )
    assert store.scan(session_id).torn_tail is not None
    with HandshakeSaver(postgres_url) as saver:
        assert build(saver).get_state(config("torn")).values["steps"] == ["one", "two"]
        build(saver).invoke({"document": "e", "steps": []}, config("torn"))
    assert store.quarantined(session_id)
    assert "langgraph.repaired" in [r.type for r in store.scan(session_id).records]
    with HandshakeSaver(postgres_url) as saver:
        assert build(saver).get_state(config("torn")).values["steps"] == ["one", "two", "one", "two"]
