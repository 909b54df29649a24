"""`handshake gc` on a PostgreSQL root, through the real command line: the same policy and the
same safety as on a directory (tests/test_gc.py). Old finished sessions go, each removed in
one transaction under its lease; a session a writer holds, or an unfinished one (unless
--include-unfinished), stays; a dry run changes no row; --keep-checkpoints drops only
artifacts no record names. The server is tests/support/postgres.py's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from handshake_cli.errors import NotFound, SessionLocked
from handshake_cli.maintenance.gc import Policy, collect
from handshake_cli.session.state import fold, initial_head
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.postgres import PostgresStore
from handshake_cli.storage.postgres import journal as pg_journal
from handshake_cli.storage.postgres.lease import PostgresLease
from tests.support.cli import CliResult

Cli = Callable[..., CliResult]
OLD = "2020-01-02T03:04:05.000000Z"
ENDING = {"COMPLETED": "session.completed", "FAILED": "session.failed", "CANCELLED": "session.cancelled"}
TABLES = ("sessions", "records", "artifacts", "heads", "quarantine", "leases", "requests")
TIMEOUT = 60
DAY = 86400.0

# Holds a session's lease in a process of its own until its stdin says go on, as a running
# writer does; then appends one record and ends.
HOLD = """
import sys
from handshake_cli.storage.postgres import PostgresStore

lease = PostgresStore(sys.argv[1]).acquire(sys.argv[2], command="a writer in another process")
print("held", flush=True)
sys.stdin.readline()
print("appended", lease.open_journal().append("test.note", {}).seq, flush=True)
"""


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    found = PostgresStore(postgres_url)
    yield found
    found.close()


def make_session(
    store: PostgresStore,
    session_id: str,
    state: str = "COMPLETED",
    *,
    ts: str | None = OLD,
    artifacts: tuple[bytes, ...] = (),
    name_first: bool = False,
) -> list[str]:
    """A session whose records carry `ts` (None: now), ending in `state`, with `artifacts` kept
    (the first named by a tool result when `name_first`); the artifacts' ids."""
    clock = (lambda: ts) if ts else None
    store.create_session(
        {"job": {"name": "gc-test"}},
        {"model": {"provider": "scripted", "id": "scripted"}},
        head_for=initial_head,
        session_id=session_id,
        clock=clock,
    )
    with store.acquire(session_id) as lease:
        ids = [lease.put_artifact(data) for data in artifacts]
        journal = lease.open_journal(clock=clock)
        try:
            journal.append("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run"})
            if name_first:
                journal.append("tool.result", {"call_id": "c1", "output_artifact_id": ids[0]})
            if state in ENDING:
                journal.append(ENDING[state], {})
            elif state != "ACTIVE":
                journal.append("session.state_change", {"from": "ACTIVE", "to": state, "reason": "test"})
        finally:
            journal.close()
        lease.write_head(fold(session_id, store.scan(session_id).records).head())
    return ids


def everything(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the store's tables, to prove that nothing changed."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM handshake.{t} ORDER BY 1, 2").fetchall() for t in TABLES}


def gc(cli: Cli, url: str, *args: str, code: int = 0) -> dict[str, Any]:
    result = cli("gc", "--root", url, "--json", *args)
    assert result.code == code, result.stdout + result.stderr
    doc: dict[str, Any] = result.json
    assert doc["command"] == "gc"
    return doc


def ids(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["session_id"] for item in items)


def test_old_finished_sessions_go_whole_and_new_or_unfinished_ones_stay(
    cli: Cli, postgres_url: str, store: PostgresStore
) -> None:
    make_session(store, "old-done", artifacts=(b"output " * 500,), name_first=True)
    make_session(store, "old-failed", "FAILED")
    make_session(store, "old-paused", "PAUSED")
    make_session(store, "new-done", ts=None)
    sizes = {sid: store.session_bytes(sid) for sid in ("old-done", "old-failed")}

    doc = gc(cli, postgres_url, "--older-than", "7d")

    assert ids(doc["removed"]) == ["old-done", "old-failed"]
    assert {r["session_id"]: r["bytes"] for r in doc["removed"]} == sizes
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("old-paused", "unfinished")]
    assert "--include-unfinished" in doc["skipped"][0]["detail"]
    assert doc["kept"] == 1 and doc["reclaimed_bytes"] == sum(sizes.values())
    assert store.session_ids() == ["new-done", "old-paused"]
    rows = everything(postgres_url)  # not a row of a removed session is left in any table
    assert not [row for table in rows.values() for row in table if row[0] in sizes]
    listed = cli("inspect", "--json", "--root", postgres_url)
    assert [s["session_id"] for s in listed.json["sessions"]] == ["new-done", "old-paused"]


def test_include_unfinished_takes_a_paused_session_past_the_age(
    cli: Cli, postgres_url: str, store: PostgresStore
) -> None:
    make_session(store, "old-paused", "PAUSED")
    make_session(store, "new-paused", "PAUSED", ts=None)
    doc = gc(cli, postgres_url, "--older-than", "7d", "--include-unfinished")
    assert ids(doc["removed"]) == ["old-paused"] and doc["removed"][0]["state"] == "PAUSED"
    assert store.session_ids() == ["new-paused"]


def test_a_session_whose_lease_a_writer_holds_is_never_removed(
    cli: Cli, postgres_url: str, store: PostgresStore
) -> None:
    """Even a finished one: removal takes the lease first, so a holder keeps it whole."""
    make_session(store, "held-done")
    make_session(store, "free-done")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, postgres_url, "held-done"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        doc = gc(cli, postgres_url, "--older-than", "1d", "--include-unfinished")
        assert ids(doc["removed"]) == ["free-done"]
        [skipped] = doc["skipped"]
        assert (skipped["session_id"], skipped["reason"]) == ("held-done", "locked")
        assert "a writer in another process" in skipped["detail"]
        out, _ = holder.communicate("go on\n", timeout=TIMEOUT)
        assert holder.returncode == 0 and out.strip() == "appended 4"  # the writer never noticed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert store.session_ids() == ["held-done"]
    assert [r.seq for r in store.scan("held-done").records] == [1, 2, 3, 4]
    # Its holder gone, the next gc takes it (its last record, the writer's, is new: no age).
    doc = gc(cli, postgres_url, "--older-than", "0s")
    assert ids(doc["removed"]) == ["held-done"] and store.session_ids() == []


def test_a_dry_run_changes_no_row_and_says_what_would_go(
    cli: Cli, postgres_url: str, store: PostgresStore
) -> None:
    make_session(store, "old-done")
    make_session(store, "old-paused", "PAUSED")
    make_session(store, "pruned", artifacts=(b"named " * 300, b"unnamed " * 300), name_first=True)
    expected = {"old-done": store.session_bytes("old-done"), "pruned": store.session_bytes("pruned")}
    before = everything(postgres_url)

    doc = gc(cli, postgres_url, "--older-than", "0s", "--keep-checkpoints", "1", "--dry-run")
    human = cli("gc", "--root", postgres_url, "--older-than", "0s", "--dry-run")

    assert everything(postgres_url) == before
    assert doc["dry_run"] is True
    assert {r["session_id"]: r["bytes"] for r in doc["removed"]} == expected
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("old-paused", "unfinished")]
    assert human.code == 0 and "would remove 2 session(s)" in human.stdout
    assert "dry run: nothing was removed" in human.stdout


def test_keep_checkpoints_drops_only_artifacts_no_record_names(
    cli: Cli, postgres_url: str, store: PostgresStore
) -> None:
    named, unnamed = b"named " * 300, b"unnamed " * 400
    named_id, unnamed_id = make_session(store, "done", ts=None, artifacts=(named, unnamed), name_first=True)
    paused_ids = make_session(store, "paused", "PAUSED", ts=None, artifacts=(unnamed,))

    doc = gc(cli, postgres_url, "--keep-checkpoints", "1")

    assert doc["removed"] == [] and doc["kept"] == 2
    assert [(s["kind"], s["bytes"]) for s in doc["swept"]] == [("artifact", len(unnamed))]
    assert doc["swept"][0]["path"] == f"sessions/done/artifacts/objects/{unnamed_id}"
    assert set(store.artifact_sizes("done")) == {named_id}
    assert store.get_artifact("done", named_id) == named
    assert set(store.artifact_sizes("paused")) == set(paused_ids)  # unfinished: may still name it


def test_a_store_that_cannot_be_reached_is_74_and_a_password_is_never_shown(cli: Cli) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("gc", "--root", f"postgresql://postgres:s3cret@127.0.0.1:{port}/db", "--json")
    assert result.code == 74, result.stdout + result.stderr
    assert result.json["error"]["code"] == "environment"
    assert "s3cret" not in result.stdout + result.stderr


class _Interleaved(PostgresStore):
    """A PostgreSQL store whose gc removal lets `before` run first: a writer acting in the
    instant between gc's look at a session and gc taking its lease."""

    def __init__(self, url: str, before: Callable[[str], None]) -> None:
        super().__init__(url)
        self.before = before

    def remove_unchanged(self, session_id: str, last: Record) -> int | None:
        self.before(session_id)
        return super().remove_unchanged(session_id, last)


def test_a_writer_that_appends_between_gcs_look_and_its_lease_keeps_the_session(
    postgres_url: str, store: PostgresStore
) -> None:
    make_session(store, "old-done")

    def append(session_id: str) -> None:
        with store.acquire(session_id, command="a writer") as lease:
            lease.open_journal().append("test.note", {})

    gc_store = _Interleaved(postgres_url, append)
    try:
        report = collect(gc_store, Policy(older_than=DAY))
    finally:
        gc_store.close()
    assert report.removed == [] and [(s["session_id"], s["reason"]) for s in report.skipped] == [
        ("old-done", "changed")
    ]
    assert [r.seq for r in store.scan("old-done").records] == [1, 2, 3, 4]


def test_a_writer_that_takes_the_lease_before_gc_does_keeps_the_session_and_writes_on(
    postgres_url: str, store: PostgresStore
) -> None:
    make_session(store, "old-done")
    taken: list[PostgresLease] = []

    def take(session_id: str) -> None:
        taken.append(store.acquire(session_id, command="a writer that came first"))

    gc_store = _Interleaved(postgres_url, take)
    try:
        report = collect(gc_store, Policy(older_than=DAY))
        [skipped] = report.skipped
        assert (skipped["session_id"], skipped["reason"]) == ("old-done", "locked")
        assert "a writer that came first" in skipped["detail"]
        assert taken[0].open_journal().append("test.note", {}).seq == 4  # its lease still holds
    finally:
        for lease in taken:
            lease.release()
        gc_store.close()
    assert report.removed == [] and store.session_ids() == ["old-done"]


def test_once_gc_holds_the_lock_a_writer_is_refused_and_then_finds_no_session(
    postgres_url: str, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: gc first. Inside gc's removal (its lock taken, its transaction not yet
    committed) a writer's acquire is refused; after the commit there is no session to take."""
    make_session(store, "old-done")
    writer = PostgresStore(postgres_url)
    refused: list[str] = []
    read_last = pg_journal.last_record

    def last_record_then_a_writer_tries(conn: Any, session_id: str) -> Record | None:
        try:
            writer.acquire(session_id, command="a late writer").release()
        except SessionLocked as exc:
            refused.append(exc.message)
        return read_last(conn, session_id)

    monkeypatch.setattr(pg_journal, "last_record", last_record_then_a_writer_tries)
    try:
        report = collect(store, Policy(older_than=DAY))
        assert [r["session_id"] for r in report.removed] == ["old-done"]
        assert len(refused) == 1 and "old-done is locked" in refused[0]
        with pytest.raises(NotFound):
            writer.acquire("old-done", command="a late writer")
    finally:
        writer.close()
    assert store.session_ids() == []


def test_a_damaged_session_is_never_removed_and_gc_exits_5(
    cli: Cli, postgres_url: str, store: PostgresStore
) -> None:
    make_session(store, "corrupt-1")
    make_session(store, "fine-1")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        [(line,)] = conn.execute(
            "SELECT line FROM handshake.records WHERE session_id = 'corrupt-1' AND seq = 2"
        ).fetchall()
        damaged = bytearray(line)
        damaged[damaged.index(b'"type":"session.state_change"') + 9] ^= 0x01  # a bit flip in record 2
        conn.execute(
            "UPDATE handshake.records SET line = %s WHERE session_id = 'corrupt-1' AND seq = 2",
            (bytes(damaged),),
        )
        conn.execute("DELETE FROM handshake.heads WHERE session_id = 'corrupt-1'")  # so gc must fold

    doc = gc(cli, postgres_url, "--older-than", "0s", "--include-unfinished", code=5)

    assert ids(doc["removed"]) == ["fine-1"]
    [skipped] = doc["skipped"]
    assert (skipped["session_id"], skipped["reason"]) == ("corrupt-1", "damaged")
    assert skipped["error"]["exit_code"] == 5
    assert "handshake inspect corrupt-1 --verify --root postgresql://" in skipped["detail"]
    assert store.session_ids() == ["corrupt-1"]
