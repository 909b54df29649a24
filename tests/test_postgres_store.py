"""The PostgreSQL store against a real server, where the conformance suite cannot reach: the
server ending a writer's connection, the server stopping hard mid-append, a database of a newer
schema, wrong URLs and credentials, readers beside a writer, and segments that match the files.

Every test gets a fresh database on the test run's server (tests/support/postgres.py); the
ones that stop the server start it again before they end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from handshake_cli.errors import (
    DurabilityError,
    EnvironmentFailure,
    ExitCode,
    SessionLocked,
    UnsupportedFormat,
    UsageError,
)
from handshake_cli.paths import Paths
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.postgres import PostgresStore
from handshake_cli.storage.postgres.lease import PostgresLease
from tests.support.cli import Cli, wait_for
from tests.support.jobs import gate_call, gate_tool, write_job
from tests.support.postgres import PASSWORD, PostgresServer
from tests.support.vanish import vanish

CONFIG = {"job": {"name": "pg", "prompt": {"user": "hello"}}, "workspace": "/nowhere"}
CREATED = {"job_name": "pg", "workspace": "/nowhere"}
TIMEOUT = 60
TABLES = ("sessions", "records", "artifacts", "heads", "quarantine", "leases", "requests", "schema_version")


def head_for(record: Record) -> dict[str, Any]:
    return {"state": "CREATED", "last_seq": record.seq}


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    found = PostgresStore(postgres_url)
    yield found
    found.close()


def new_session(store: PostgresStore, session_id: str = "pg-1") -> str:
    return store.create_session(CONFIG, CREATED, head_for=head_for, session_id=session_id)


def seqs(store: PostgresStore, session_id: str) -> list[int]:
    result = store.scan(session_id)
    assert result.damage is None
    return [record.seq for record in result.records]


def everything(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store, to prove that nothing changed."""
    with psycopg.connect(url) as conn:
        query = "SELECT * FROM handshake.{} ORDER BY 1, 2"
        return {table: conn.execute(query.format(table)).fetchall() for table in TABLES}


# A writer in a process of its own: takes the lease, appends records (every third riding on
# the next sync), prints each acknowledged seq, and leaves the way the CLI would on an error:
# its message on stderr, its exit code.
WRITER = """
import sys
from handshake_cli.errors import HandshakeError
from handshake_cli.storage.contract import Durability
from handshake_cli.storage.postgres import PostgresStore
from handshake_cli.storage.postgres.lease import PostgresLease

store = PostgresStore(sys.argv[1])
try:
    lease = store.acquire(sys.argv[2], command="writer")
    print("backend", lease.conn.info.backend_pid, flush=True)
    journal = lease.open_journal()
    while True:
        seq = journal.last_seq + 1
        riding = seq % 3 == 0
        journal.append("test.note", {"n": seq}, durability=Durability.NEXT_SYNC if riding else Durability.NOW)
        if not riding:
            print("acked", seq, flush=True)
except HandshakeError as exc:
    print(type(exc).__name__, exc.message, file=sys.stderr, flush=True)
    sys.exit(int(exc.exit_code))
"""


class Writer:
    """The WRITER script, running; reads what it acknowledged as it goes."""

    def __init__(self, url: str, session_id: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, url, session_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        word, backend = self.proc.stdout.readline().split()
        assert word == "backend"
        self.backend = int(backend)
        self.acked: list[int] = []

    def wait_for_acks(self, count: int) -> None:
        assert self.proc.stdout is not None
        while len(self.acked) < count:
            line = self.proc.stdout.readline()
            assert line, f"the writer ended early: {self.finish()}"
            self.acked.append(int(line.split()[1]))

    def finish(self) -> tuple[int, str]:
        """Its exit code and stderr, once it has stopped (reading what it acknowledged last)."""
        out, err = self.proc.communicate(timeout=TIMEOUT)
        # Only whole lines: a writer killed mid-print leaves a cut one, and `communicate` reads
        # past what `readline` had buffered, so the first line it sees may be a cut one too.
        whole = (line.split() for line in out.splitlines())
        self.acked += [
            int(words[1]) for words in whole if len(words) == 2 and words[0] == "acked" and words[1].isdigit()
        ]
        return self.proc.returncode, err


# -- the lease: fencing ---------------------------------------------------------------------------


def test_a_writer_whose_connection_the_server_ends_can_never_write_again(
    postgres_server: PostgresServer, store: PostgresStore
) -> None:
    session_id = new_session(store)
    lease = store.acquire(session_id, command="old writer")
    journal = lease.open_journal()
    kept = [journal.append("test.note", {"n": n}) for n in range(3)]

    postgres_server.terminate_backend(lease.conn.info.backend_pid)

    with pytest.raises(DurabilityError) as failed:
        journal.append("test.note", {"n": "after"})
    assert failed.value.exit_code == ExitCode.ENVIRONMENT
    assert "never reconnects" in failed.value.message and PASSWORD not in failed.value.message
    for attempt in (
        lambda: journal.append("test.note", {"n": "again"}, durability=Durability.NEXT_SYNC),
        journal.sync,
        lambda: journal.add_artifact(b"late"),
        lambda: lease.put_artifact(b"late"),
    ):
        with pytest.raises(DurabilityError):
            attempt()
    assert not lease.write_head({"state": "ACTIVE"})  # never raises, never written
    assert seqs(store, session_id) == [1, *(r.seq for r in kept)]  # nothing it tried is stored
    assert store.holder(session_id) is None  # the server dropped the lock with the connection

    with store.acquire(session_id, command="new writer") as taken:
        holder = store.holder(session_id)
        assert holder is not None and holder.command == "new writer"
        after = taken.open_journal().append("test.note", {"n": "new writer"})
    assert after.seq == 5
    lease.release()  # never raises, and takes nothing from the new holder
    journal.close()


def test_a_writer_that_lost_its_lock_is_fenced_off_by_the_new_holders_token(
    postgres_url: str, store: PostgresStore
) -> None:
    """Its connection still alive (a pooler that reset the session, say): the lock is gone,
    another holder took the lease, and the old writer's statements insert nothing."""
    session_id = new_session(store)
    lease = store.acquire(session_id, command="old writer")
    journal = lease.open_journal()
    journal.append("test.note", {"n": "before"})
    lease.conn.execute("SELECT pg_advisory_unlock_all()")
    other = PostgresStore(postgres_url).acquire(session_id, command="new writer")

    with pytest.raises(DurabilityError, match="no longer holds"):
        journal.append("test.note", {"n": "old writer, after"})
    with pytest.raises(DurabilityError):
        journal.append("test.note", {"n": "again"})

    assert seqs(store, session_id) == [1, 2]
    holder = store.holder(session_id)
    assert holder is not None and holder.command == "new writer"
    assert other.open_journal().append("test.note", {"n": "new writer"}).seq == 3
    other.release()
    lease.release()


def test_one_of_two_racing_writers_gets_the_lease_and_the_other_is_told_who(
    postgres_url: str, store: PostgresStore
) -> None:
    session_id = new_session(store)
    outcomes: list[PostgresLease | SessionLocked] = []
    ready = threading.Barrier(2)

    def race(name: str) -> None:
        contender = PostgresStore(postgres_url)
        ready.wait()
        try:
            outcomes.append(contender.acquire(session_id, command=name))
        except SessionLocked as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=race, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)

    leases = [o for o in outcomes if isinstance(o, PostgresLease)]
    refused = [o for o in outcomes if isinstance(o, SessionLocked)]
    assert len(leases) == 1 and len(refused) == 1
    assert leases[0].holder.describe() in refused[0].message
    leases[0].release()


# -- the server stopped hard ----------------------------------------------------------------------


@pytest.mark.parametrize("acks", [1, 40, 150])
def test_the_server_stopped_hard_mid_append_loses_nothing_acknowledged_and_stops_the_writer(
    postgres_server: PostgresServer, postgres_url: str, store: PostgresStore, acks: int
) -> None:
    session_id = new_session(store)
    writer = Writer(postgres_url, session_id)
    writer.wait_for_acks(acks)

    postgres_server.stop_immediately()  # pg_ctl stop -m immediate, while the writer appends
    try:
        code, stderr = writer.finish()
        with pytest.raises(EnvironmentFailure):  # a reader, meanwhile: exit 74
            store.scan(session_id)
    finally:
        postgres_server.start()

    assert code == ExitCode.ENVIRONMENT, stderr
    assert stderr.startswith("DurabilityError") and "never reconnects" in stderr
    stored = seqs(store, session_id)  # the reader connects again: a read acknowledges nothing
    assert stored == list(range(1, len(stored) + 1))  # a prefix of what was tried, no gap
    assert set(writer.acked) <= set(stored)  # everything acknowledged is there
    assert store.holder(session_id) is None
    with store.acquire(session_id, command="recover") as lease:
        assert lease.open_journal().append("test.note", {"n": "after"}).seq == len(stored) + 1


def test_a_reader_whose_connection_is_lost_fails_with_74_and_the_next_read_connects_again(
    postgres_server: PostgresServer, store: PostgresStore
) -> None:
    session_id = new_session(store)
    assert store._conn is not None
    postgres_server.terminate_backend(store._conn.info.backend_pid)

    with pytest.raises(EnvironmentFailure) as lost:
        store.scan(session_id)

    assert lost.value.exit_code == ExitCode.ENVIRONMENT and "lost the connection" in lost.value.message
    assert seqs(store, session_id) == [1]


# -- the schema's version -------------------------------------------------------------------------


def test_a_database_of_a_newer_schema_is_refused_and_nothing_is_changed(
    postgres_url: str, store: PostgresStore
) -> None:
    session_id = new_session(store)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE handshake.schema_version SET version = 2")
    before = everything(postgres_url)
    newer = PostgresStore(postgres_url)

    for attempt in (
        newer.session_ids,
        lambda: newer.scan(session_id),
        lambda: newer.acquire(session_id),
        lambda: newer.create_session(CONFIG, CREATED, head_for=head_for, session_id="pg-2"),
        lambda: newer.remove_session(session_id),
    ):
        with pytest.raises(UnsupportedFormat) as refused:
            attempt()
        assert refused.value.exit_code == ExitCode.USAGE and refused.value.code == "unsupported_format"
        assert "schema version 2" in refused.value.message
        assert "reads schema version 1" in refused.value.message
    assert everything(postgres_url) == before


def test_the_tables_are_made_by_the_first_writer_and_a_reader_of_an_empty_database_finds_nothing(
    postgres_url: str,
) -> None:
    reader = PostgresStore(postgres_url)
    assert reader.session_ids() == []
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('handshake.sessions')").fetchone() == (None,)
    writers = [PostgresStore(postgres_url) for _ in range(4)]
    threads = [
        threading.Thread(target=new_session, args=(writer, f"made-{n}")) for n, writer in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert reader.session_ids() == [f"made-{n}" for n in range(4)]


# -- bad roots -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("postgresql://user:s3cret@host:notaport/db", ExitCode.USAGE, "not a TCP port"),
        ("postgresql://user:s3%zzcret@localhost/db", ExitCode.USAGE, "not a URL libpq can read"),
        ("mysql://user:s3cret@localhost/db", ExitCode.USAGE, "not a PostgreSQL URL"),
    ],
)
def test_a_malformed_url_is_usage_and_its_password_is_never_shown(url: str, code: int, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        PostgresStore(url).session_ids()
    assert refused.value.exit_code == code and says in refused.value.message
    assert "s3" not in refused.value.message and "cret" not in refused.value.message


def test_wrong_credentials_or_database_are_usage_and_an_unreachable_server_is_74(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    wrong_password = postgres_server.url(database, password="not-the-password")
    with pytest.raises(UsageError) as refused:
        PostgresStore(wrong_password).session_ids()
    assert refused.value.exit_code == ExitCode.USAGE
    assert "password authentication failed" in refused.value.message
    assert "not-the-password" not in refused.value.message and "postgres@127.0.0.1" in refused.value.message

    with pytest.raises(UsageError, match="does not exist"):
        PostgresStore(postgres_server.url("no_such_database")).session_ids()
    with pytest.raises(UsageError, match="no_such_role"):
        PostgresStore(postgres_server.url(database, user="no_such_role")).acquire("pg-1")

    with socket_closed() as port:
        unreachable = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/{database}"
        with pytest.raises(EnvironmentFailure) as failed:
            PostgresStore(unreachable).session_ids()
    assert failed.value.exit_code == ExitCode.ENVIRONMENT
    assert "cannot connect" in failed.value.message and PASSWORD not in failed.value.message


class socket_closed:
    """A loopback port nothing listens on (bound, never listening, while the `with` lasts)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# -- readers beside a writer ----------------------------------------------------------------------


def test_readers_see_a_growing_verified_prefix_while_a_writer_appends_and_never_wait_for_it(
    postgres_url: str, store: PostgresStore
) -> None:
    session_id = new_session(store)
    writer = Writer(postgres_url, session_id)
    try:
        writer.wait_for_acks(5)
        seen: list[int] = []
        while len(seen) < 30 or seen[-1] < 200:
            result = store.scan(session_id)
            assert result.damage is None  # a moment of the journal, verified whole
            count = [r.seq for r in result.records]
            assert count == list(range(1, len(count) + 1))
            assert not seen or len(count) >= seen[-1]
            seen.append(len(count))
            last = store.last_record(session_id)
            assert last is not None and last.seq >= len(count)
            holder = store.holder(session_id)
            assert holder is not None and holder.command == "writer"
        assert len(set(seen)) > 1  # the journal grew between the readers' looks
    finally:
        writer.proc.kill()
        writer.finish()


# -- segments, as the files would hold them --------------------------------------------------------


def test_segments_hold_exactly_the_bytes_of_the_filesystem_stores_files(
    tmp_path: Path, store: PostgresStore, postgres_url: str
) -> None:
    ticks = iter(range(10**6))

    def clock() -> str:
        return f"2026-12-03T00:00:00.{next(ticks):06d}Z"

    files = FilesystemStore(Paths(tmp_path / "root"))
    for kept in (files, store):
        ticks = iter(range(10**6))
        session_id = kept.create_session(CONFIG, CREATED, head_for=head_for, session_id="same", clock=clock)
        with kept.acquire(session_id) as lease:
            journal = lease.open_journal(clock=clock, segment_bytes=700)
            for n in range(12):
                journal.append("test.note", {"n": n, "text": "x" * (n * 17)}, durability=Durability.NEXT_SYNC)
            journal.sync()
            journal.close()

    folder = tmp_path / "root" / "sessions" / "same" / "journal"
    expected = {path.name: path.read_bytes() for path in folder.iterdir()}
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT segment, line FROM handshake.records WHERE session_id = 'same' "
            "ORDER BY segment, byte_offset"
        ).fetchall()
    segments: dict[str, bytes] = {}
    for number, line in rows:
        name = f"{number:08d}.jsonl"
        segments[name] = segments.get(name, b"") + bytes(line)
    assert len(expected) > 3 and segments == expected
    assert store.scan("same").records == files.scan("same").records
    # Measured segment by segment through the index, the journal is the files' size to the byte.
    on_disk = sum(len(data) for data in expected.values())
    assert store.journal_bytes("same") == files.journal_bytes("same") == on_disk
    head = store.read_head("same")
    assert head is not None and json.loads((folder.parent / "head.json").read_bytes()) == head
    config = (folder.parent / "session.toml").read_bytes()
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT config FROM handshake.sessions WHERE session_id = 'same'").fetchone()
    assert row is not None and bytes(row[0]) == config


# -- through the command line ----------------------------------------------------------------------


def test_the_command_line_says_what_is_wrong_with_a_root_and_exits_as_documented(
    cli: Cli, postgres_server: PostgresServer, postgres_url: str, store: PostgresStore
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    new_session(store)
    cases = [
        ("postgresql://postgres:s3cret@127.0.0.1:notaport/db", ExitCode.USAGE, "usage"),
        (postgres_server.url(database, password="s3cret"), ExitCode.USAGE, "usage"),
    ]
    with socket_closed() as port:
        unreachable = f"postgresql://postgres:s3cret@127.0.0.1:{port}/db"
        cases.append((unreachable, ExitCode.ENVIRONMENT, "environment"))
        for url, code, error in cases:
            done = cli("inspect", "--json", "--root", url)
            assert done.code == code, done.stderr
            assert done.json["error"]["code"] == error
            assert "s3cret" not in done.stdout + done.stderr
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE handshake.schema_version SET version = 2")
    done = cli("inspect", "pg-1", "--json", "--root", postgres_url)
    assert done.code == ExitCode.USAGE and done.json["error"]["code"] == "unsupported_format"
    assert "schema version 2" in done.json["error"]["message"]


def test_a_statement_the_server_cuts_short_is_74_saying_so_and_loses_nothing_acknowledged(
    cli: Cli, env: dict[str, str], postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """A lock_timeout (or a statement_timeout) set on the database cuts a statement short while
    the connection lives: a reader and a writer both exit 74 saying the server cut it short,
    not that the connection was lost; the writer stops, and recover completes the session once
    the lock is gone. The lock is held by the test until it lets go: no timing luck."""
    database = postgres_url.rsplit("/", 1)[1]
    with postgres_server.admin() as admin:
        admin.execute(f"ALTER DATABASE \"{database}\" SET lock_timeout = '100ms'")
    workspace = tmp_path / "ws"
    with gated_run(env, postgres_url, tmp_path, "cut-1") as run:
        locking = psycopg.connect(postgres_url, options="-c lock_timeout=0")
        try:
            wait_for((workspace / "waiting1").exists, timeout=TIMEOUT)
            locking.execute("LOCK TABLE handshake.sessions, handshake.records IN ACCESS EXCLUSIVE MODE")
            reader = cli("inspect", "--json", "--root", postgres_url)
            (workspace / "open1").touch()
            out, err = run.communicate(timeout=TIMEOUT)
        finally:
            locking.rollback()
            locking.close()
    assert reader.code == ExitCode.ENVIRONMENT, reader.stdout + reader.stderr
    message = reader.json["error"]["message"]
    assert "cut short a statement" in message and "lock timeout" in message
    assert "lost the connection" not in message
    assert run.returncode == ExitCode.ENVIRONMENT, err
    error = json.loads(out)["error"]
    assert error["code"] == "durability" and "the server cut short its statement" in error["message"]
    assert "lock timeout" in error["message"] and "never reconnects" in error["message"]
    recovered = cli("recover", "cut-1", "--json", "--root", postgres_url)
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    verified = cli("inspect", "cut-1", "--verify", "--json", "--root", postgres_url)
    assert verified.code == 0 and verified.json["verdict"] == "intact"
    assert cli("inspect", "cut-1", "--json", "--root", postgres_url).json["state"] == "COMPLETED"


class OlderServer:
    """A loopback TCP proxy to the test server that says, as the server reports itself at
    start-up, that it runs `version` (PostgreSQL's ParameterStatus `server_version`, from which
    libpq takes the server's version): an old server, as a client sees one. It reads the
    server's messages whole (type, length, body); the URL it gives asks for neither SSL nor GSS
    encryption, so the stream is messages from the first byte."""

    def __init__(self, url: str, version: str) -> None:
        parsed = conninfo_to_dict(url)
        self.target = (str(parsed["host"]), int(str(parsed["port"])))
        self.version = version.encode()
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = url.replace(f":{parsed['port']}/", f":{port}/") + "?sslmode=disable&gssencmode=disable"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._messages, args=(server, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _messages(self, source: socket.socket, sink: socket.socket) -> None:
        stream = source.makefile("rb")
        with contextlib.suppress(OSError, ValueError):
            while head := stream.read(5):
                body = stream.read(int.from_bytes(head[1:5], "big") - 4)
                name = body.partition(b"\0")[0]
                if head[:1] == b"S" and name == b"server_version":
                    body = name + b"\0" + self.version + b"\0"
                    head = b"S" + (len(body) + 4).to_bytes(4, "big")
                sink.sendall(head + body)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def test_a_server_older_than_handshake_needs_is_named_and_refused_with_2_by_every_command(
    cli: Cli, postgres_url: str, tmp_path: Path
) -> None:
    """Not a lost connection to retry (74): the root is wrong, said before anything is
    written, with the version the server reports and the one handshake needs."""
    job = write_job(tmp_path / "job", [{"text": "Done."}], [])
    assert cli("run", str(job), "--session-id", "pg-1", "--root", postgres_url).code == 0
    before = everything(postgres_url)
    for version, major in (("11.22", "11"), ("9.6.24", "9.6")):
        old = OlderServer(postgres_url, version)
        try:
            for argv in (["inspect"], ["inspect", "pg-1"], ["run", str(job), "--session-id", "pg-2"], ["gc"]):
                done = cli(*argv, "--json", "--root", old.url)
                assert done.code == ExitCode.USAGE, (argv, done.stdout, done.stderr)
                message = done.json["error"]["message"]
                assert f"runs version {major}; handshake needs PostgreSQL 12 or later" in message, message
                assert PASSWORD not in done.stdout + done.stderr
        finally:
            old.close()
    same = OlderServer(postgres_url, "18.6")  # the proxy itself changes nothing else
    try:
        assert cli("inspect", "pg-1", "--json", "--root", same.url).json["state"] == "COMPLETED"
    finally:
        same.close()
    assert everything(postgres_url) == before


def test_a_writer_on_this_machine_is_not_killed_by_a_checkpoint_request_signal(
    postgres_url: str, store: PostgresStore
) -> None:
    """`handshake checkpoint` signals the holder the lease row names (SIGUSR1); a holder that
    serves no requests ignores it, as with the filesystem store's lock."""
    session_id = new_session(store)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, postgres_url, session_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGUSR1)
    out, _ = holder.communicate("go on\n", timeout=TIMEOUT)
    assert holder.returncode == 0 and out.strip() == "appended 2"


HOLD = """
import sys
from handshake_cli.storage.postgres import PostgresStore

lease = PostgresStore(sys.argv[1]).acquire(sys.argv[2], command="holder")
print("held", flush=True)
sys.stdin.readline()
print("appended", lease.open_journal().append("test.note", {}).seq, flush=True)
"""


@contextlib.contextmanager
def gated_run(
    env: dict[str, str], url: str, tmp_path: Path, session_id: str
) -> Iterator[subprocess.Popen[str]]:
    """`handshake run --json` of a job whose first tool call waits at a gate: `waiting1` appears
    in `tmp_path/ws` once the call runs, and the call ends once the test touches `open1` there.
    On the way out the gate is opened, and a run still going is killed and reaped."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    turns: list[dict[str, Any]] = [{"text": "Let me wait.", "tool_calls": [gate_call(1)]}, {"text": "Done."}]
    job = write_job(tmp_path / "job", turns, [gate_tool()])
    argv = ["run", str(job), "--session-id", session_id, "--workspace", str(workspace), "--json"]
    run = subprocess.Popen(
        [sys.executable, "-m", "handshake_cli", *argv, "--root", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield run
    finally:
        (workspace / "open1").touch()
        if run.poll() is None:
            run.kill()
        if run.stdout is not None and not run.stdout.closed:
            run.communicate()


def test_a_run_whose_database_stops_hard_exits_74_and_recover_finishes_it(
    cli: Cli, env: dict[str, str], postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """The run is held inside a tool call while the server stops hard;
    the tool's result cannot be committed, so the run stops with exit 74, and a recover once
    the server is back runs the (idempotent) tool again and completes the session."""
    workspace = tmp_path / "ws"
    try:
        with gated_run(env, postgres_url, tmp_path, "fleet-1") as run:
            wait_for((workspace / "waiting1").exists, timeout=TIMEOUT)
            postgres_server.stop_immediately()
            (workspace / "open1").touch()
            out, err = run.communicate(timeout=TIMEOUT)
    finally:
        if postgres_server.process is None:
            postgres_server.start()

    assert run.returncode == ExitCode.ENVIRONMENT, err
    error = json.loads(out)["error"]
    assert error["code"] == "durability" and "never reconnects" in error["message"]
    assert PASSWORD not in out + err
    described = cli("inspect", "fleet-1", "--json", "--root", postgres_url)
    assert described.code == 0 and described.json["state"] == "INTERRUPTED", described.stdout
    recovered = cli("recover", "fleet-1", "--json", "--root", postgres_url)
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    verified = cli("inspect", "fleet-1", "--verify", "--json", "--root", postgres_url)
    assert verified.code == 0 and verified.json["verdict"] == "intact"
    assert cli("inspect", "fleet-1", "--json", "--root", postgres_url).json["state"] == "COMPLETED"


def event_types(cli: Cli, url: str, session_id: str) -> list[str]:
    """The types of a session's records, as `inspect --events` shows them from another process."""
    shown = cli("inspect", session_id, "--events", "--json", "--root", url)
    assert shown.code == 0, shown.stdout + shown.stderr
    return [event["type"] for event in shown.json["events"]]


def test_another_machine_sees_a_read_tool_that_is_running_and_recovers_it_after_a_kill(
    cli: Cli, env: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    """A read tool's intent rides on the result's checkpoint, but a tool that takes its time
    lets no append carry it: the writer's courier sends it, so `inspect` from another process
    shows the call under way (as a file's reader would). Killed there, the run leaves that
    intent without a result, which recover runs again (a read: no effect to repeat)."""
    workspace = tmp_path / "ws"
    with gated_run(env, postgres_url, tmp_path, "slow-read") as run:
        wait_for((workspace / "waiting1").exists, timeout=TIMEOUT)
        wait_for(lambda: "tool.intent" in event_types(cli, postgres_url, "slow-read"), timeout=TIMEOUT)
        assert "tool.result" not in event_types(cli, postgres_url, "slow-read")
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=TIMEOUT)

    assert cli("inspect", "slow-read", "--json", "--root", postgres_url).json["state"] == "INTERRUPTED"
    recovered = cli("recover", "slow-read", "--json", "--root", postgres_url)
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    types = event_types(cli, postgres_url, "slow-read")
    # The killed run's intent stays; the recovery's own intent and result follow it.
    ran = types[types.index("recovery.started") :]
    assert types.count("tool.intent") == 2 and ran.count("tool.intent") == ran.count("tool.result") == 1
    verified = cli("inspect", "slow-read", "--verify", "--json", "--root", postgres_url)
    assert verified.code == 0 and verified.json["verdict"] == "intact"
    assert cli("inspect", "slow-read", "--json", "--root", postgres_url).json["state"] == "COMPLETED"


# -- torn tails inside a row -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "cut"),
    [
        (lambda line: line[:-1], b""),  # the newline never reached the disk
        (lambda line: line[:-1] + b"garbage", b"garbage"),  # bytes after an intact record
    ],
    ids=["no final newline", "garbage after the record"],
)
def test_a_torn_tail_inside_the_last_row_is_cut_where_the_scanner_says(
    postgres_url: str, store: PostgresStore, damage: Any, cut: bytes
) -> None:
    """The scanner places the damage inside a row (after an intact record's bytes): the cut
    keeps that record, ends the segment with a newline as a file would, and keeps the rest."""
    session_id = new_session(store)
    with store.acquire(session_id) as lease:
        journal = lease.open_journal(segment_bytes=400)
        appended = [journal.append("test.note", {"n": n, "pad": "x" * 60}) for n in range(6)]
        journal.close()
    last = appended[-1]
    number = int(last.segment.split(".")[0])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        where = (session_id, number, last.offset)
        row_is = "WHERE session_id = %s AND segment = %s AND byte_offset = %s"
        row = conn.execute(f"SELECT line FROM handshake.records {row_is}", where).fetchone()
        assert row is not None
        conn.execute(f"UPDATE handshake.records SET line = %s {row_is}", (damage(bytes(row[0])), *where))

    torn = store.scan(session_id)
    assert torn.torn_tail is not None and torn.records[-1] == last  # the record itself is intact
    assert (torn.torn_tail.segment, torn.torn_tail.length) == (last.segment, len(cut))
    with store.acquire(session_id) as lease:
        repair = lease.repair_torn_tail(torn.torn_tail)
        after = lease.open_journal(segment_bytes=400).append("test.note", {"n": "after"})

    assert (repair["quarantined"] is None) == (cut == b"")
    if cut:
        assert store.read_quarantined(session_id, str(repair["quarantined"])) == cut
    result = store.scan(session_id)
    assert result.damage is None and result.records[1:] == [*appended, after]
    assert len({r.segment for r in result.records}) > 2


def test_a_writers_connection_has_keepalives_so_a_vanished_machine_lets_go_of_its_lease(
    postgres_url: str, store: PostgresStore
) -> None:
    """Without them the server keeps a silent peer's session (and its advisory lock) for the
    OS's two hours; it is never ended for being idle (next test); the URL's own settings win."""
    session_id = new_session(store)
    with store.acquire(session_id) as lease:
        shown = {
            name: lease.conn.execute(f"SHOW {name}").fetchone()
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert lease.conn.info.get_parameters()["keepalives_idle"] == "10"
        never_idle_out = lease.conn.execute("SHOW idle_session_timeout").fetchone()
    assert shown == {
        "tcp_keepalives_idle": ("10",),
        "tcp_keepalives_interval": ("5",),
        "tcp_keepalives_count": ("3",),
    }
    assert never_idle_out == ("0",)
    own = PostgresStore(
        postgres_url
        + "?options=-c%20tcp_keepalives_idle%3D60%20-c%20idle_session_timeout%3D5min&keepalives_idle=60"
    )
    with own.acquire(session_id) as lease:
        assert lease.conn.execute("SHOW tcp_keepalives_idle").fetchone() == ("60",)
        assert lease.conn.info.get_parameters()["keepalives_idle"] == "60"
        assert lease.conn.execute("SHOW idle_session_timeout").fetchone() == ("5min",)
    own.close()


def test_a_database_that_ends_idle_sessions_does_not_end_a_run_waiting_on_its_tool(
    cli: Cli, env: dict[str, str], postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """A lease lives as long as its connection, and a writer's connection is idle while a tool
    runs or a model answers: a database set to end idle sessions (as managed servers often are)
    must not end it. The run waits in its tool until the server's own clock says the lease's
    connection has been idle five times the database's limit, then completes."""
    database = postgres_url.rsplit("/", 1)[1]
    with postgres_server.admin() as admin:
        admin.execute(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '300ms'")
    with psycopg.connect(postgres_url, autocommit=True) as plain:  # the setting holds: a plain one is ended
        pid = plain.info.backend_pid
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s"
        with postgres_server.admin() as admin:
            wait_for(lambda: admin.execute(gone, (pid,)).fetchone() == (True,), timeout=TIMEOUT)
    workspace = tmp_path / "ws"
    with gated_run(env, postgres_url, tmp_path, "idle-1") as run:
        wait_for((workspace / "waiting1").exists, timeout=TIMEOUT)
        with psycopg.connect(postgres_url, autocommit=True, options="-c idle_session_timeout=0") as looking:
            found = looking.execute(
                "SELECT backend_pid FROM handshake.leases WHERE session_id = 'idle-1'"
            ).fetchone()
            assert found is not None
            lease_pid = found[0]

            def idle_long_enough() -> bool:
                row = looking.execute(
                    "SELECT state = 'idle' AND now() - state_change > interval '1500 ms' "
                    "FROM pg_stat_activity WHERE pid = %s",
                    (lease_pid,),
                ).fetchone()
                assert row is not None, "the server ended the lease's connection for being idle"
                return bool(row[0])

            wait_for(idle_long_enough, timeout=TIMEOUT)
        (workspace / "open1").touch()
        out, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 0, out + err
    assert json.loads(out)["state"] == "COMPLETED"
    described = cli("inspect", "idle-1", "--verify", "--json", "--root", postgres_url)
    assert described.code == 0 and described.json["verdict"] == "intact", described.stdout


# -- the commands' core on PostgreSQL, against the files --------------------------------------------

# What differs between two runs of one job: times, the workspace, and the hashes of what holds
# a time (a record's chain; a checkpoint's body).
VOLATILE = {
    *("created_at", "updated_at", "last_checkpoint_at", "ts", "elapsed", "workspace", "size_bytes"),
    *("started_at", "ended_at"),  # when each process wrote (the history)
    *("sum", "prev", "artifact_id", "checkpoint_artifact_id", "segment", "offset", "checkpoint_location"),
    *("path", "lock_holder"),
}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_a_run_on_postgres_tells_the_files_story_and_a_bundle_carries_it_both_ways(
    tmp_path: Path, postgres_url: str, store: PostgresStore
) -> None:
    from handshake_cli.engine import launch
    from handshake_cli.engine.jobs import load_job
    from handshake_cli.maintenance.bundle import export_session, import_bundle
    from handshake_cli.readers.describe import describe
    from handshake_cli.readers.events import events
    from handshake_cli.readers.verify import verify
    from handshake_cli.recovery import execute
    from tests.support.jobs import READ, WRITE

    write = {"tool": "write_file", "args": {"path": "a.txt", "content": "x" * 70000}}
    turns = [
        {"text": "Writing.", "tool_calls": [write]},
        {"text": "Reading.", "tool_calls": [{"tool": "read_file", "args": {"path": "a.txt"}}]},
        {"text": "Done."},
    ]
    job = load_job(write_job(tmp_path / "job", turns, [WRITE, READ]))
    files = FilesystemStore(Paths(tmp_path / "root"))
    for kept, name in ((store, "ws-pg"), (files, "ws-fs")):
        (tmp_path / name).mkdir()
        result = launch.start(job, kept, workspace=tmp_path / name, session_id="one")
        assert result.state == "COMPLETED", result.reason

    for read in (
        lambda s: describe(s, "one"),
        lambda s: verify(s, "one").as_json(),
        lambda s: events(s, "one", types=["tool"]),
        lambda s: execute.recover(s, "one", execute.Options(dry_run=True)).as_json(),
    ):
        assert _stable(read(store)) == _stable(read(files))
    assert verify(store, "one").artifacts_checked >= 1  # the large read went to an artifact

    # PostgreSQL hands out the files' positions, so a bundle lands with every link intact.
    export_session(store, "one", tmp_path / "from-pg.tgz")
    landed = FilesystemStore(Paths(tmp_path / "landed"))
    assert import_bundle(landed, tmp_path / "from-pg.tgz").verdict == "intact"
    assert landed.scan("one").records == store.scan("one").records
    assert describe(landed, "one") | {"lock_holder": None} == describe(store, "one") | {"lock_holder": None}
    export_session(files, "one", tmp_path / "from-files.tgz")
    back = PostgresStore(postgres_url)
    back.remove_session("one")
    assert import_bundle(back, tmp_path / "from-files.tgz").verdict == "intact"
    assert back.scan("one").records == files.scan("one").records
    assert _stable(describe(back, "one")) == _stable(describe(files, "one"))


# -- two machines ----------------------------------------------------------------------------------

ON_MACHINE_B = """
import sys
from handshake_cli.storage.postgres import PostgresStore

lease = PostgresStore(sys.argv[1]).acquire(sys.argv[2], command="handshake run job.toml")
print(lease.holder.pid, lease.conn.info.backend_pid, flush=True)
sys.stdin.read()
"""


def _can_unshare() -> bool:
    """Whether this machine lets a process have a host name of its own (root, and a kernel and
    container that allow a UTS namespace)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True, check=False).returncode == 0


UNSHARE = _can_unshare()


@pytest.mark.skipif(not UNSHARE, reason="a host name of its own needs root and unshare")
def test_a_lease_held_on_another_machine_is_named_and_taken_over_when_that_machine_dies(
    postgres_server: PostgresServer, postgres_url: str, store: PostgresStore
) -> None:
    """Machine B is a process with a host name of its own (a UTS namespace). This machine is
    refused, told B's host, pid and command; B's holder cannot be judged from here (another
    host); when B dies its lease ends with its database session, and this machine takes over."""
    session_id = new_session(store)
    script = f'hostname machine-b && exec {sys.executable} -c \'{ON_MACHINE_B}\' "$0" "$1"'
    machine_b = subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", script, postgres_url, session_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert machine_b.stdout is not None
        pid, backend = map(int, machine_b.stdout.readline().split())
        holder = store.holder(session_id)
        assert holder is not None and (holder.host, holder.pid) == ("machine-b", pid)
        assert holder.is_alive() is None  # another host: only the database can tell
        with pytest.raises(SessionLocked) as refused:
            store.acquire(session_id, command="handshake recover --all")
        assert f"pid {pid} on machine-b (handshake run job.toml)" in refused.value.message
    finally:
        machine_b.kill()  # the machine dies: its connection with it
        machine_b.communicate(timeout=TIMEOUT)
    postgres_server.wait_backend_gone(backend)
    assert store.holder(session_id) is None
    with store.acquire(session_id, command="handshake recover --all") as lease:
        assert lease.holder.host != "machine-b"
        assert lease.open_journal().append("test.note", {"n": "taken over"}).seq == 2


def test_a_writer_whose_machine_vanishes_without_a_word_loses_its_lease_to_the_keepalives(
    cli: Cli, env: dict[str, str], postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """A preempted runner sends nothing: no FIN, no RST. The lease's connection asks the server
    for keepalives (connect.py: a first probe after 10 s idle), so the server finds the writer
    gone, ends its session and with it the lease, and another machine recovers the session.
    Without them the server would ask only after the kernel's default idle time, two hours."""
    workspace = tmp_path / "ws"
    lease = (
        "SELECT l.backend_pid, a.client_port FROM handshake.leases l "
        "JOIN pg_stat_activity a ON a.pid = l.backend_pid WHERE l.session_id = 'vanished'"
    )
    with gated_run(env, postgres_url, tmp_path, "vanished") as run:
        wait_for((workspace / "waiting1").exists, timeout=TIMEOUT)
        # Quiet first: the courier has sent the turn's held records (and read the reply), so
        # nothing the server sent waits for an acknowledgement, which would draw a RST.
        wait_for(lambda: "tool.intent" in event_types(cli, postgres_url, "vanished"), timeout=TIMEOUT)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            found = conn.execute(lease).fetchone()
            assert found is not None
            backend, port = found
            vanish(run.pid, port)
            # Nothing reached the server: its backend is still there (a probe is due at most
            # once every 10 s, so this look, milliseconds later, sees the silence).
            assert conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone()
    postgres_server.wait_backend_gone(backend)  # the keepalives' doing
    recovered = cli("recover", "vanished", "--json", "--root", postgres_url)
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    verified = cli("inspect", "vanished", "--verify", "--json", "--root", postgres_url)
    assert verified.code == 0 and verified.json["verdict"] == "intact"
    assert cli("inspect", "vanished", "--json", "--root", postgres_url).json["state"] == "COMPLETED"


# -- a database user's rights ----------------------------------------------------------------------


def test_a_read_only_user_inspects_and_is_told_clearly_it_may_not_write(
    postgres_server: PostgresServer, postgres_url: str, store: PostgresStore
) -> None:
    """A post-mortem role with SELECT only: every read works (readers never write), a lease
    or a new session is exit 2 naming what it may not do, and nothing changes."""
    session_id = new_session(store)
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE postmortem LOGIN PASSWORD 'pm'")
        conn.execute("GRANT USAGE ON SCHEMA handshake TO postmortem")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA handshake TO postmortem")
    before = everything(postgres_url)
    reader = PostgresStore(postgres_server.url(database, user="postmortem", password="pm"))
    try:
        assert reader.session_ids() == [session_id]
        assert seqs(reader, session_id) == [1]
        assert reader.read_config(session_id)["job"] == CONFIG["job"]
        assert reader.holder(session_id) is None and reader.read_head(session_id) is not None
        for attempt, what in (
            (lambda: reader.acquire(session_id), "take the lease"),
            (lambda: new_session(reader, "pg-2"), "create a session"),
        ):
            with pytest.raises(UsageError) as refused:
                attempt()
            assert refused.value.exit_code == ExitCode.USAGE and what in refused.value.message
            assert "permission denied" in refused.value.message and "pm@" not in refused.value.message
        assert store.holder(session_id) is None  # the refused writer's lock went with its connection
    finally:
        reader.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY postmortem")
            conn.execute("DROP ROLE postmortem")
    assert everything(postgres_url) == before


def test_a_database_that_takes_no_writes_is_read_and_every_writing_command_is_refused_with_2(
    cli: Cli, postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """A fleet pointed at a hot standby, or at a database set read-only: inspect and export
    work, and run, recover, checkpoint, import and gc are exit 2 saying the database takes no
    writes (never "a bug in handshake"); nothing changes."""
    job = write_job(tmp_path / "job", [{"text": "Done."}], [])
    crash = {"HANDSHAKE_CRASH_AT": "after_checkpoint:1"}  # killed once ACTIVE: interrupted
    died = cli("run", str(job), "--session-id", "pg-1", "--root", postgres_url, extra_env=crash)
    assert died.code != 0
    assert cli("inspect", "pg-1", "--json", "--root", postgres_url).json["state"] == "INTERRUPTED"
    assert cli("run", str(job), "--session-id", "pg-done", "--root", postgres_url).code == 0  # for gc
    fs_root = tmp_path / "files"
    assert cli("run", str(job), "--session-id", "fs-1", "--root", str(fs_root)).code == 0
    bundle = tmp_path / "fs-1.tar"
    assert cli("export", "fs-1", "-o", str(bundle), "--root", str(fs_root)).code == 0
    database = postgres_url.rsplit("/", 1)[1]
    with postgres_server.admin() as admin:
        admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    before = everything(postgres_url)
    try:
        assert cli("inspect", "pg-1", "--json", "--root", postgres_url).json["session_id"] == "pg-1"
        exported = cli("export", "pg-1", "-o", str(tmp_path / "pg-1.tar"), "--root", postgres_url)
        assert exported.code == 0, exported.stderr
        for argv in (
            ["run", str(job), "--session-id", "pg-2"],
            ["recover", "pg-1"],
            ["checkpoint", "pg-1"],
            ["import", str(bundle)],
            ["gc", "--older-than", "0s"],
        ):
            done = cli(*argv, "--json", "--root", postgres_url)
            assert done.code == ExitCode.USAGE, (argv, done.stdout, done.stderr)
            message = done.json["error"]["message"]
            assert "takes no writes" in message and "read-only transaction" in message, message
            assert PASSWORD not in done.stdout + done.stderr
    finally:
        with postgres_server.admin() as admin:
            admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    assert everything(postgres_url) == before


def test_a_user_that_may_not_create_the_tables_is_told_so_on_an_empty_database(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE plain LOGIN PASSWORD 'pl'")
        conn.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC')
    plain = PostgresStore(postgres_server.url(database, user="plain", password="pl"))
    try:
        assert plain.session_ids() == []  # a reader creates nothing
        with pytest.raises(UsageError, match="may not create a session"):
            new_session(plain)
    finally:
        plain.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY plain")
            conn.execute("DROP ROLE plain")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('handshake.sessions')").fetchone() == (None,)


# -- what a writer appended, its own process reads at once ----------------------------------------


@pytest.mark.parametrize("durability", list(Durability))
def test_a_record_is_readable_through_the_store_as_soon_as_its_append_returns(
    store: PostgresStore, durability: Durability
) -> None:
    """As with files (the page cache) and memory: the writer's own process reads back, through
    the store, what it just appended, riding or not. Nothing may be left in flight between the
    lease's connection and the store's when `append` returns."""
    session_id = new_session(store)
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        for n in range(300):
            record = journal.append(
                "model.chunk", {"turn": 1, "index": n, "count": 1, "text": "w "}, durability=durability
            )
            assert store.record_at(session_id, record.segment, record.offset) == record, n
            ident = journal.add_artifact(f"output {n}".encode())
            assert store.get_artifact(session_id, ident) == f"output {n}".encode()


def test_a_reader_thread_beside_the_writer_thread_of_one_process_sees_every_append(
    store: PostgresStore,
) -> None:
    """One process, one store: the writer appends on one thread while another reads (as
    `handshake checkpoint`'s asker does in-process). Every read is whole and verified, and
    whatever an append returned before a read began is in it."""
    session_id = new_session(store)
    returned = [1]  # the last seq an append has returned
    failures: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                floor = returned[0]
                result = store.scan(session_id)
                assert result.damage is None
                assert [r.seq for r in result.records] == list(range(1, result.last_seq + 1))
                assert result.last_seq >= floor
        except BaseException as exc:
            failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with store.acquire(session_id) as lease:
            journal = lease.open_journal()
            for n in range(400):
                durability = Durability.NOW if n % 50 == 0 else Durability.NEXT_SYNC
                returned[0] = journal.append("test.note", {"n": n}, durability=durability).seq
    finally:
        done.set()
        reader.join(TIMEOUT)
    assert failures == []
    assert seqs(store, session_id)[-1] == 401
