"""A record riding on the next sync (`Durability.NEXT_SYNC`) on the PostgreSQL store is sent
without waiting for the server's reply (lease.py `send_riding`), and what that must not change:
readers see it at once, a writer killed right after the append returned leaves it stored, and a
fence that did not hold for it is fatal at the writer's next statement, with nothing stored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from handshake_cli.errors import DurabilityError, ExitCode
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.postgres import PostgresStore

CONFIG = {"job": {"name": "pg", "prompt": {"user": "hello"}}, "workspace": "/nowhere"}
CREATED = {"job_name": "pg", "workspace": "/nowhere"}
TIMEOUT = 60

# Appends riding records and says "sent N" once each append has returned; never syncs.
WRITER = """
import sys
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.postgres import PostgresStore

lease = PostgresStore(sys.argv[1]).acquire(sys.argv[2], command="riding writer")
journal = lease.open_journal()
while True:
    record = journal.append("model.chunk", {"turn": 1, "index": 0, "count": 1, "text": "w "},
                            durability=Durability.NEXT_SYNC)
    print("sent", record.seq, flush=True)
    sys.stdin.readline()
"""


def head_for(record: Record) -> dict[str, Any]:
    return {"state": "CREATED", "last_seq": record.seq}


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    found = PostgresStore(postgres_url)
    yield found
    found.close()


def seqs(store: PostgresStore, session_id: str) -> list[int]:
    result = store.scan(session_id)
    assert result.damage is None
    return [record.seq for record in result.records]


def test_a_riding_record_is_seen_by_readers_before_the_writer_does_anything_else(
    store: PostgresStore, postgres_url: str
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="riding")
    reader = PostgresStore(postgres_url)
    try:
        with store.acquire(session_id) as lease:
            journal = lease.open_journal()
            riding = journal.append("test.note", {"n": 1}, durability=Durability.NEXT_SYNC)
            # The writer waits for nothing more; the reader sees the row once the server has it.
            reads = 0
            while seqs(reader, session_id) != [1, 2]:
                reads += 1
                assert reads < 10_000, "the riding record never became visible"
            assert reader.last_record(session_id) == riding
            journal.append("test.note", {"n": 2})  # durable, and carries the riding one
            journal.close()
        assert seqs(reader, session_id) == [1, 2, 3]
    finally:
        reader.close()


def test_a_writer_killed_right_after_a_riding_append_returned_leaves_it_stored(
    store: PostgresStore, postgres_url: str
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="killed")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, postgres_url, session_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        for expected in (2, 3, 4):
            line = writer.stdout.readline()
            assert line.split() == ["sent", str(expected)], line
            if expected < 4:
                writer.stdin.write("\n")
                writer.stdin.flush()
        writer.send_signal(signal.SIGKILL)  # right after append 4 returned: its reply never read
        writer.wait(timeout=TIMEOUT)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=TIMEOUT)
    assert seqs(store, session_id) == [1, 2, 3, 4]
    assert store.holder(session_id) is None  # the server dropped the lease with the connection


def test_a_riding_append_the_fence_refused_is_fatal_at_the_next_statement(
    store: PostgresStore, postgres_url: str
) -> None:
    session_id = store.create_session(CONFIG, CREATED, head_for=head_for, session_id="fenced")
    lease = store.acquire(session_id, command="old writer")
    journal = lease.open_journal()
    journal.append("test.note", {"n": "kept"})
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # the lease row taken away
        admin.execute("DELETE FROM handshake.leases WHERE session_id = %s", (session_id,))

    journal.append("test.note", {"n": "refused"}, durability=Durability.NEXT_SYNC)  # sent, not answered

    with pytest.raises(DurabilityError) as failed:
        journal.sync()
    assert failed.value.exit_code == ExitCode.ENVIRONMENT
    assert "no longer holds" in failed.value.message
    with pytest.raises(DurabilityError):
        journal.append("test.note", {"n": "after"})
    lease.release()
    assert seqs(store, session_id) == [1, 2]  # nothing the fenced writer tried is stored
