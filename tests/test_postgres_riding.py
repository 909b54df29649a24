"""A record riding on the next sync (`Durability.NEXT_SYNC`) on the PostgreSQL store is held in
the writer's memory and sent with the next commit, in the same statement (lease.py `hold`,
`commit`): what that gives and what it must not change. A boundary's records reach the
database together, in one round trip; before that another process sees none of them, the
writer's own process sees them all; held records that wait too long are sent by themselves,
at the next append or by the lease's courier when no append comes;
a writer killed with records held loses exactly those, never leaving a gap; and a batch whose
commit fails, or whose fence does not hold, is fatal (exit 74) with nothing of it stored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from handshake_cli.errors import DurabilityError, ExitCode
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.postgres import PostgresStore
from handshake_cli.storage.postgres import lease as lease_module
from tests.support.cli import wait_for
from tests.support.postgres import PostgresServer

CONFIG = {"job": {"name": "pg", "prompt": {"user": "hello"}}, "workspace": "/nowhere"}
CREATED = {"job_name": "pg", "workspace": "/nowhere"}
TIMEOUT = 60

# Appends a riding record for each "ride" line on stdin and a durable one for each "commit",
# saying "appended N" once the append has returned.
WRITER = """
import sys
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.postgres import PostgresStore, lease as lease_module

lease_module.COURIER_SECONDS = 3600.0  # what appends alone hold, however slow the machine
lease = PostgresStore(sys.argv[1]).acquire(sys.argv[2], command="riding writer")
journal = lease.open_journal()
for word in sys.stdin:
    durability = Durability.NOW if word.strip() == "commit" else Durability.NEXT_SYNC
    record = journal.append("test.note", {"n": word.strip()}, durability=durability)
    print("appended", record.seq, flush=True)
"""


def head_for(record: Record) -> dict[str, Any]:
    return {"state": "CREATED", "last_seq": record.seq}


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    found = PostgresStore(postgres_url)
    yield found
    found.close()


@pytest.fixture
def other(postgres_url: str) -> Iterator[PostgresStore]:
    """A store of its own, as another process (or machine) has: nothing held here is sent for it."""
    found = PostgresStore(postgres_url)
    yield found
    found.close()


def seqs(store: PostgresStore, session_id: str) -> list[int]:
    result = store.scan(session_id)
    assert result.damage is None
    return [record.seq for record in result.records]


@pytest.fixture
def no_courier(monkeypatch: pytest.MonkeyPatch) -> None:
    """The courier kept out of a test about what appends alone send (however slow the machine)."""
    monkeypatch.setattr(lease_module, "COURIER_SECONDS", 3600.0)


@pytest.mark.usefixtures("no_courier")
def test_riding_records_reach_the_database_with_the_next_commit_in_one_round_trip(
    store: PostgresStore, other: PostgresStore
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="batched")
    with store.acquire(session_id) as lease, tempfile.TemporaryFile() as trace:
        journal = lease.open_journal()
        journal.append("test.note", {"n": "first"})  # the statement is prepared once per connection
        pgconn = lease.conn.pgconn
        pgconn.trace(trace.fileno())  # libpq's record of every protocol message, both ways
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        held = [
            journal.append("test.note", {"n": n}, durability=Durability.NEXT_SYNC)
            for n in ("intent", "result")
        ]
        assert seqs(other, session_id) == [1, 2]  # another process sees none of them yet
        sent_before_commit = trace.tell()
        committed = journal.append("test.note", {"n": "checkpoint"})
        pgconn.untrace()
        trace.seek(0)
        messages = trace.read().decode("utf-8", "replace").splitlines()
        assert sent_before_commit == 0, "a riding append reached the server before the commit"
        # One statement, one Sync (one round trip), one commit, three rows.
        assert sum(1 for line in messages if line.split("\t")[:3:2] == ["F", "Sync"]) == 1, messages
        assert sum(1 for line in messages if "CommandComplete" in line and "INSERT 0 3" in line) == 1, (
            messages
        )
        assert seqs(other, session_id) == [1, 2, 3, 4, 5]
        assert other.record_at(session_id, held[0].segment, held[0].offset) == held[0]
        assert other.last_record(session_id) == committed
        journal.close()


@pytest.mark.usefixtures("no_courier")
def test_the_writers_own_process_reads_held_records_another_sees_them_at_the_commit(
    store: PostgresStore, other: PostgresStore
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="own")
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        riding = journal.append("test.note", {"n": 1}, durability=Durability.NEXT_SYNC)
        assert seqs(other, session_id) == [1]
        assert store.last_record(session_id) == riding  # read-your-writes: the store sends them first
        # Sent (committed asynchronously) for that read, so now visible to everyone.
        assert seqs(other, session_id) == [1, 2]
        journal.sync()
        journal.close()
    assert seqs(other, session_id) == [1, 2]


@pytest.mark.usefixtures("no_courier")
@pytest.mark.parametrize(("limit", "value"), [("HOLD_SECONDS", 0.0), ("HOLD_ROWS", 1)])
def test_held_records_past_the_holding_limit_are_sent_without_a_commit(
    store: PostgresStore, other: PostgresStore, monkeypatch: pytest.MonkeyPatch, limit: str, value: float
) -> None:
    """A long stream of chunks is not kept from other processes until the next checkpoint:
    once the oldest held record is HOLD_SECONDS old (or HOLD_ROWS / HOLD_BYTES are reached)
    an append sends what is held, committed asynchronously, without waiting for the reply."""
    monkeypatch.setattr(lease_module, limit, value)
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="window")
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        riding = journal.append("test.note", {"n": 1}, durability=Durability.NEXT_SYNC)
        reads = 0
        while seqs(other, session_id) != [1, 2]:  # the server commits it as it arrives
            reads += 1
            assert reads < 10_000, "the held record was never sent"
        assert other.last_record(session_id) == riding
        journal.append("test.note", {"n": 2})  # reads the reply of the send, then commits
        journal.close()
    assert seqs(other, session_id) == [1, 2, 3]


def test_records_held_while_the_writer_appends_nothing_are_sent_by_the_courier(
    store: PostgresStore, other: PostgresStore
) -> None:
    """A tool that takes its time, a stream that stalls: no append comes to carry what is held,
    so the lease's courier sends it once it has waited HOLD_SECONDS (committed asynchronously)
    and another process sees it; the writer's next commit goes on from there, and the courier
    ends with the lease."""
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="courier")
    lease = store.acquire(session_id)
    journal = lease.open_journal()
    journal.append("test.note", {"n": "committed"})
    riding = journal.append("test.note", {"n": "intent"}, durability=Durability.NEXT_SYNC)
    # No append comes: only the courier can send it (the timeout is a hung test's safety net).
    wait_for(lambda: seqs(other, session_id) == [1, 2, 3], timeout=TIMEOUT)
    assert other.last_record(session_id) == riding
    assert journal.append("test.note", {"n": "result"}).seq == 4
    courier = lease.courier
    assert courier is not None
    lease.release()
    courier.join(timeout=TIMEOUT)
    assert not courier.is_alive()
    assert seqs(other, session_id) == [1, 2, 3, 4]


def test_a_writer_killed_with_records_held_loses_exactly_those(
    store: PostgresStore, postgres_url: str
) -> None:
    """They were never durable (DESIGN section 2, rule 3: a crash may lose what rides on the
    next sync); the journal ends at the writer's last commit, whole, and another writer goes on."""
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="killed")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, postgres_url, session_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None and writer.stderr is not None
    try:
        for word, expected in (("ride", 2), ("commit", 3), ("ride", 4), ("ride", 5)):
            writer.stdin.write(word + "\n")
            writer.stdin.flush()
            line = writer.stdout.readline()
            assert line.split() == ["appended", str(expected)], line + writer.stderr.read()
        writer.send_signal(signal.SIGKILL)  # records 4 and 5 held, never sent
        writer.wait(timeout=TIMEOUT)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=TIMEOUT)
    assert seqs(store, session_id) == [1, 2, 3]
    assert store.holder(session_id) is None  # the server dropped the lease with the connection
    with store.acquire(session_id) as lease:
        assert lease.open_journal().append("test.note", {"n": "next writer"}).seq == 4


def test_a_batch_whose_commit_fails_is_fatal_and_none_of_it_is_stored(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="lost")
    lease = store.acquire(session_id, command="old writer")
    journal = lease.open_journal()
    journal.append("test.note", {"n": "kept"})
    for n in range(3):
        journal.append("test.note", {"n": n}, durability=Durability.NEXT_SYNC)  # held: returns at once

    postgres_server.terminate_backend(lease.conn.info.backend_pid)

    with pytest.raises(DurabilityError) as failed:
        journal.append("test.note", {"n": "checkpoint"})
    assert failed.value.exit_code == ExitCode.ENVIRONMENT
    assert "never reconnects" in failed.value.message
    for attempt in (
        lambda: journal.append("test.note", {"n": "again"}, durability=Durability.NEXT_SYNC),
        journal.sync,
    ):
        with pytest.raises(DurabilityError):
            attempt()
    lease.release()  # never raises; sends nothing
    assert seqs(store, session_id) == [1, 2]  # nothing of the batch


def test_a_batch_the_fence_refused_is_fatal_and_none_of_it_is_stored(
    store: PostgresStore, postgres_url: str
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="fenced")
    lease = store.acquire(session_id, command="old writer")
    journal = lease.open_journal()
    journal.append("test.note", {"n": "kept"})
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # the lease row taken away
        admin.execute("DELETE FROM handshake.leases WHERE session_id = %s", (session_id,))

    journal.append("test.note", {"n": "refused"}, durability=Durability.NEXT_SYNC)  # held

    with pytest.raises(DurabilityError) as failed:
        journal.sync()
    assert failed.value.exit_code == ExitCode.ENVIRONMENT
    assert "no longer holds" in failed.value.message
    with pytest.raises(DurabilityError):
        journal.append("test.note", {"n": "after"})
    lease.release()
    assert seqs(store, session_id) == [1, 2]  # nothing the fenced writer tried is stored


def test_an_artifact_added_while_records_are_held_goes_ahead_of_them(
    store: PostgresStore, other: PostgresStore
) -> None:
    """Large output kept while a read tool's intent is held: the artifact is committed at once
    (no held record can name it), the records follow with the commit, and the record naming
    the artifact is never stored without it."""
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="artifact")
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        journal.append("test.note", {"n": "intent"}, durability=Durability.NEXT_SYNC)
        ident = journal.add_artifact(b"large output")
        assert other.get_artifact(session_id, ident) == b"large output"
        assert seqs(other, session_id) == [1]  # the intent is still held
        journal.sync_artifacts()  # its commit carries the held intent too
        assert seqs(other, session_id) == [1, 2]
        journal.append("test.note", {"n": "result", "artifact_id": ident}, durability=Durability.NEXT_SYNC)
        assert seqs(other, session_id) == [1, 2]
        journal.append("test.note", {"n": "checkpoint"})
        assert seqs(other, session_id) == [1, 2, 3, 4]
        journal.close()


def test_a_commit_that_waits_for_the_server_leaves_the_other_threads_running(
    store: PostgresStore, postgres_url: str
) -> None:
    """The commit waits for its reply in `select`, not inside libpq holding the GIL: while the
    server makes it wait (here a lock another session holds on the leases table), the
    process's other threads (an MCP host's event loop, a LangGraph saver's callers, signal
    handlers) go on. Had the GIL been held, this thread could not have looked before the lock
    went (the other session is ended by the server after 30 s idle, whatever happens)."""
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="waiting")
    lease = store.acquire(session_id)
    journal = lease.open_journal()
    journal.append("test.note", {"n": "first"})
    backend = lease.conn.info.backend_pid
    done = threading.Event()
    failures: list[BaseException] = []

    def commit() -> None:
        try:
            journal.append("test.note", {"n": "riding"}, durability=Durability.NEXT_SYNC)
            journal.append("test.note", {"n": "committed"})
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    with psycopg.connect(postgres_url) as blocker, psycopg.connect(postgres_url, autocommit=True) as watcher:
        blocker.execute("SET idle_in_transaction_session_timeout = '30s'")
        blocker.execute("LOCK TABLE handshake.leases IN ACCESS EXCLUSIVE MODE")
        writer = threading.Thread(target=commit)
        writer.start()
        waiting = None
        while waiting is None and not done.is_set():  # until the writer's backend waits for the lock
            row = watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (backend,)
            ).fetchone()
            waiting = row
        assert not done.is_set(), "this thread did not run while the commit waited"
        blocker.rollback()
        writer.join(TIMEOUT)
    assert failures == []
    lease.release()
    assert seqs(store, session_id) == [1, 2, 3, 4]
