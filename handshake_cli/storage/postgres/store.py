"""The PostgreSQL store: every session of one database, read by anyone, changed under a lease.

Reads go through one connection of the store's own, never take a lock and are never blocked
by a writer (MVCC); a read that spans several rows (a scan) runs in one REPEATABLE READ, READ
ONLY transaction, so it sees one moment of the journal. A reader whose connection fails gets
`EnvironmentFailure` (exit 74) and the next read connects again: a read acknowledges nothing.
Writing needs a lease (`acquire`, lease.py), which opens a connection of its own. Creating a
session is one transaction; removing one is one transaction under its lease.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from handshake_cli.errors import (
    ArtifactCorrupt,
    DurabilityError,
    EnvironmentFailure,
    NotFound,
    SessionExists,
    SessionLocked,
    UsageError,
)
from handshake_cli.paths import Paths
from handshake_cli.storage import durable
from handshake_cli.storage.artifacts import ARTIFACT_ID, artifact_id
from handshake_cli.storage.contract import (
    ArtifactCheck,
    CheckpointRequest,
    HeadFor,
    SessionFile,
    SessionStore,
)
from handshake_cli.storage.head import HEAD_FORMAT
from handshake_cli.storage.journal import codec, records
from handshake_cli.storage.journal.codec import Clock, Record, genesis, utc_now
from handshake_cli.storage.journal.scan import ScanResult, Start
from handshake_cli.storage.lock import LockHolder
from handshake_cli.storage.postgres import bundle, journal, schema
from handshake_cli.storage.postgres.connect import (
    REFUSED,
    Connection,
    connect,
    denied,
    is_lost,
    lost,
    shown_url,
)
from handshake_cli.storage.postgres.lease import PostgresLease, head_bytes
from handshake_cli.storage.store import (
    FORMAT_VERSION,
    SESSION_ID,
    check_job_binding,
    job_digest,
    new_session_id,
    parse_config,
    validate_session_id,
)

# How long a refused writer waits for the holder to say who it is: the lock is taken a moment
# before the row naming its holder is committed.
HOLDER_WAIT = 2.0
ANSWER_POLL = 0.05  # seconds between looks for a checkpoint request's answer
# Seconds between a lease holder's own looks for checkpoint requests: an asker may be on
# another machine, where no signal reaches (DECISIONS.md, "handshake checkpoint across machines").
REQUEST_POLL = 1.0
# The live holder of a session's lease: its row, and the advisory lock its backend holds.
HOLDER = """
SELECT s.session_id, l.pid, l.host, l.started_at, l.command,
       EXISTS (SELECT 1 FROM pg_locks k
                WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.backend_pid
                  AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND k.classid = %(classid)s::oid AND k.objid = %(objid)s::oid AND k.objsubid = 1)
  FROM handshake.sessions s LEFT JOIN handshake.leases l USING (session_id)
 WHERE s.session_id = %(session)s
"""


# What a session takes: its config, lines, artifacts, quarantined bytes and head.
# A journal's bytes, as its segment files' sizes: each segment's extent (its last row's offset
# plus that row's length), found by skipping from segment to segment through the primary key
# (a recursive "loose index scan"): a few index probes per segment, where summing every row's
# length reads every row (a million records: ~2 ms against 0.25-1 s). The same figure for a
# journal whose rows follow each other, as an appender writes them.
JOURNAL_BYTES = """(
WITH RECURSIVE segments(segment) AS (
    (SELECT segment FROM handshake.records WHERE session_id = %(session)s ORDER BY segment LIMIT 1)
    UNION ALL
    SELECT (SELECT r.segment FROM handshake.records r
             WHERE r.session_id = %(session)s AND r.segment > segments.segment
             ORDER BY r.segment LIMIT 1)
      FROM segments WHERE segments.segment IS NOT NULL
)
SELECT coalesce(sum(last.byte_offset + octet_length(last.line)), 0)
  FROM segments,
       LATERAL (SELECT r.byte_offset, r.line FROM handshake.records r
                 WHERE r.session_id = %(session)s AND r.segment = segments.segment
                 ORDER BY r.byte_offset DESC LIMIT 1) AS last
 WHERE segments.segment IS NOT NULL
)"""
SESSION_BYTES = f"""
SELECT (SELECT octet_length(config) FROM handshake.sessions WHERE session_id = %(session)s)
     + {JOURNAL_BYTES}
     + (SELECT coalesce(sum(octet_length(data)), 0) FROM handshake.artifacts WHERE session_id = %(session)s)
     + (SELECT coalesce(sum(octet_length(data)), 0) FROM handshake.quarantine WHERE session_id = %(session)s)
     + (SELECT coalesce(sum(octet_length(head)), 0) FROM handshake.heads WHERE session_id = %(session)s)
"""
# Every table holding a session's rows, in the order a removal deletes them.
REMOVED_TABLES = ("records", "artifacts", "heads", "quarantine", "requests", "leases", "sessions")
TAKE_LEASE = """
INSERT INTO handshake.leases (session_id, token, backend_pid, pid, host, started_at, command)
VALUES (%s, %s, pg_backend_pid(), %s, %s, %s, %s)
ON CONFLICT (session_id) DO UPDATE SET token = EXCLUDED.token, backend_pid = EXCLUDED.backend_pid,
    pid = EXCLUDED.pid, host = EXCLUDED.host, started_at = EXCLUDED.started_at,
    command = EXCLUDED.command, synced_seq = 0
"""


def lease_key(session_id: str) -> int:
    """The advisory lock of a session's lease: 64 bits of a hash of its id (per database)."""
    digest = hashlib.blake2b(b"handshake.lease\0" + session_id.encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore(SessionStore):
    """Sessions as rows of one PostgreSQL database (schema.py has the tables)."""

    request_poll: float | None = REQUEST_POLL

    def __init__(self, url: str, *, paths: Paths | None = None) -> None:
        self.url = url
        self.shown = shown_url(url)
        self.paths = paths or Paths(Path(self.shown), url=url)
        self._conn: Connection | None = None
        self._ready = False  # the tables are there (checked on every new connection)
        self._lock = threading.RLock()  # one operation at a time on the store's connection
        self._leases: weakref.WeakSet[PostgresLease] = weakref.WeakSet()  # handed out, maybe live

    # -- the store's connection ------------------------------------------------------------

    @contextmanager
    def _reading(self, doing: str, *, snapshot: bool = False, create: bool = False) -> Iterator[Connection]:
        """The store's connection, for one operation (in one REPEATABLE READ, READ ONLY
        transaction when `snapshot`). Tables missing and not `create`: nothing is stored yet.
        The riding records this store's leases hold are sent first, and what is in flight is
        waited for: what an append returned, this process reads."""
        for lease in list(self._leases):
            lease.settle_for_readers()
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.url, self.shown)
                    self._ready = False
                if not self._ready:
                    self._ready = schema.ready(self._conn, self.shown, create=create)
                if snapshot:
                    with self._conn.transaction():
                        self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        yield self._conn
                else:
                    yield self._conn
            except REFUSED as exc:
                raise denied(exc, self.shown, doing) from None
            except psycopg.Error as exc:
                if not is_lost(exc):
                    raise
                self._close()
                raise lost(exc, self.shown, doing) from None

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the store's connection (a lease has its own); the next read opens another."""
        with self._lock:
            self._close()

    def _session(self, conn: Connection, session_id: str) -> None:
        """NotFound unless the session is there (inside the caller's operation)."""
        if (
            not self._ready
            or self._row(conn, "SELECT 1 FROM handshake.sessions WHERE session_id = %s", session_id) is None
        ):
            raise self._not_found(session_id)

    def _not_found(self, session_id: str) -> NotFound:
        return NotFound(
            f"no session {session_id} in {self.shown}",
            guidance=[" ".join(["handshake", "inspect", *self.paths.root_args()])],
        )

    @staticmethod
    def _row(conn: Connection, query: str, *params: Any) -> tuple[Any, ...] | None:
        return conn.execute(query, params).fetchone()

    # -- sessions ----------------------------------------------------------------------------

    def session_ids(self) -> list[str]:
        with self._reading("list the sessions") as conn:
            if not self._ready:
                return []
            rows = conn.execute("SELECT session_id FROM handshake.sessions").fetchall()
        return sorted(row[0] for row in rows if SESSION_ID.fullmatch(row[0]))  # as a directory's names

    def create_session(
        self,
        config: dict[str, Any],
        created_data: dict[str, Any],
        *,
        head_for: HeadFor,
        session_id: str | None = None,
        clock: Clock | None = None,
    ) -> str:
        import tomli_w

        session_id = new_session_id() if session_id is None else validate_session_id(session_id)
        created_at = (clock or utc_now)()
        toml = {**copy.deepcopy(config), "format_version": FORMAT_VERSION, "session_id": session_id}
        toml["created_at"] = created_at
        data = {
            **created_data,
            "session_id": session_id,
            "format_version": FORMAT_VERSION,
            "job_sha256": job_digest(config.get("job")),
        }
        line, digest = codec.encode(1, created_at, "session.created", data, genesis(session_id))
        records.refuse_beyond_limits(line, "session.created", data)
        first = Record(
            1, created_at, "session.created", data, genesis(session_id), digest, codec.segment_name(1), 0
        )
        head = head_bytes(head_for(first))
        with self._reading("create a session", create=True) as conn:
            try:
                with conn.transaction():
                    made = conn.execute(
                        "INSERT INTO handshake.sessions (session_id, config, created_at) VALUES (%s, %b, %s) "
                        "ON CONFLICT DO NOTHING",
                        (session_id, tomli_w.dumps(toml).encode("utf-8"), created_at),
                    )
                    if made.rowcount != 1:
                        raise SessionExists(f"session {session_id} already exists in {self.shown}")
                    conn.execute(
                        "INSERT INTO handshake.records (session_id, segment, byte_offset, seq, type, line) "
                        "VALUES (%s, 1, 0, 1, 'session.created', %b)",
                        (session_id, line),
                    )
                    conn.execute(
                        "INSERT INTO handshake.heads (session_id, head) VALUES (%s, %b)", (session_id, head)
                    )
            except psycopg.Error as exc:
                if not is_lost(exc):
                    raise
                self._close()
                raise DurabilityError(
                    f"creating session {session_id} in {self.shown} failed: {' '.join(str(exc).split())}; "
                    "it may or may not exist now (`handshake inspect` says)",
                    details={"root": self.shown, "operation": "create"},
                ) from None
        return session_id

    def remove_session(self, session_id: str) -> None:
        with self.acquire(session_id, command=f"remove session {session_id}") as lease:
            lease.remove_session()

    def remove_unchanged(self, session_id: str, last: Record) -> int | None:
        """One transaction on the store's connection: the session's lock taken for the
        transaction only (`pg_try_advisory_xact_lock`: a writer's `pg_try_advisory_lock`
        is refused while it is held, and a held lease refuses it), the last record checked,
        the session measured and every row of it deleted; the commit lets the lock go. No
        connection of its own, unlike a lease: gc removes many sessions."""
        validate_session_id(session_id)
        with self._reading("remove a session", create=False) as conn:
            self._session(conn, session_id)
            with conn.transaction():
                taken = self._row(conn, "SELECT pg_try_advisory_xact_lock(%s)", lease_key(session_id))
                if taken and taken[0]:
                    self._session(conn, session_id)  # not removed by another gc meanwhile
                    found = journal.last_record(conn, session_id)
                    if found is None or (found.seq, found.sum) != (last.seq, last.sum):
                        return None
                    row = conn.execute(SESSION_BYTES, {"session": session_id}).fetchone()
                    for table in REMOVED_TABLES:
                        conn.execute(f"DELETE FROM handshake.{table} WHERE session_id = %s", (session_id,))
                    return int(row[0]) if row else 0
        raise self._locked(session_id)

    def read_config(self, session_id: str, *, check_job: bool = True) -> dict[str, Any]:
        validate_session_id(session_id)
        with self._reading("read a session's config") as conn:
            row = self._ready and self._row(
                conn,
                "SELECT s.config, r.line FROM handshake.sessions s LEFT JOIN handshake.records r "
                "ON r.session_id = s.session_id AND r.segment = 1 AND r.byte_offset = 0 "
                "WHERE s.session_id = %s",
                session_id,
            )
        if not row:
            raise self._not_found(session_id)
        config = parse_config(bytes(row[0]), session_id)
        if check_job:
            first = (
                journal.line_record(bytes(row[1]), codec.segment_name(1), 0) if row[1] is not None else None
            )
            check_job_binding(session_id, config, first[0] if first else None)
        return config

    def location(self, session_id: str) -> str:
        return f"{self.shown} (session {session_id})"

    def session_bytes(self, session_id: str) -> int:
        validate_session_id(session_id)
        with self._reading("measure a session") as conn:
            self._session(conn, session_id)
            row = conn.execute(SESSION_BYTES, {"session": session_id}).fetchone()
        return int(row[0]) if row else 0

    # -- the journal ---------------------------------------------------------------------------

    def scan(
        self, session_id: str, *, start: Start | None = None, decode: bool | frozenset[str] = True
    ) -> ScanResult:
        validate_session_id(session_id)
        with self._reading("read a journal", snapshot=True) as conn:
            self._session(conn, session_id)
            return journal.scan(conn, session_id, start, decode)

    def last_record(self, session_id: str) -> Record | None:
        validate_session_id(session_id)
        with self._reading("read a journal", snapshot=True) as conn:
            self._session(conn, session_id)
            return journal.last_record(conn, session_id)

    def record_at(self, session_id: str, segment: str, offset: int) -> Record | None:
        found = self.record_line_at(session_id, segment, offset)
        return found[0] if found else None

    def record_line_at(self, session_id: str, segment: str, offset: int) -> tuple[Record, bytes] | None:
        validate_session_id(session_id)
        with self._reading("read a journal record", snapshot=True) as conn:
            self._session(conn, session_id)
            return journal.line_at(conn, session_id, segment, offset)

    def first_record(self, session_id: str) -> Record | None:
        found = self.record_line_at(session_id, codec.segment_name(1), 0)
        return found[0] if found else None

    def start_near(self, session_id: str, seq: int) -> Start | None:
        validate_session_id(session_id)
        with self._reading("read a journal", snapshot=True) as conn:
            self._session(conn, session_id)
            return journal.start_near(conn, session_id, seq)

    def find_backwards(
        self, session_id: str, type_: str, *, at_most: int | None = None
    ) -> Iterator[tuple[Record, bytes]]:
        validate_session_id(session_id)
        below: int | None = None
        # Most callers want the newest one (recovery: its newest checkpoint, a record that grows
        # with the thread): the first page is that one alone, the next ones grow.
        page = 1
        while True:
            with self._reading("read a journal", snapshot=True) as conn:
                self._session(conn, session_id)
                found, below = journal.find_backwards(conn, session_id, type_, at_most, below, page)
            yield from found
            if below is None:
                return
            page = min(page * 4, 256)

    def journal_bytes(self, session_id: str) -> int:
        validate_session_id(session_id)
        with self._reading("measure a journal") as conn:
            self._session(conn, session_id)
            row = conn.execute(f"SELECT {JOURNAL_BYTES}", {"session": session_id}).fetchone()
        return int(row[0]) if row else 0

    # -- artifacts, the head cache, quarantine -------------------------------------------------

    def get_artifact(self, session_id: str, ident: str) -> bytes:
        validate_session_id(session_id)
        if not ARTIFACT_ID.fullmatch(ident):
            raise ArtifactCorrupt(f"{ident!r} is not an artifact id")
        with self._reading("read an artifact", snapshot=True) as conn:
            self._session(conn, session_id)
            row = self._row(
                conn,
                "SELECT data FROM handshake.artifacts WHERE session_id = %s AND artifact_id = %s",
                session_id,
                ident,
            )
        if row is None:
            raise NotFound(
                f"artifact {ident} is not in session {session_id}",
                details={"artifact_id": ident},
            )
        data = bytes(row[0])
        if artifact_id(data) != ident:
            raise ArtifactCorrupt(
                f"artifact {ident} of session {session_id} is damaged: its bytes no longer match its id",
                details={"artifact_id": ident},
            )
        return data

    def read_head(self, session_id: str) -> dict[str, Any] | None:
        validate_session_id(session_id)
        with self._reading("read a session's head", snapshot=True) as conn:
            self._session(conn, session_id)
            row = self._row(conn, "SELECT head FROM handshake.heads WHERE session_id = %s", session_id)
        try:
            found = json.loads(bytes(row[0])) if row else None
        except ValueError:
            return None
        return found if isinstance(found, dict) and found.get("format_version") == HEAD_FORMAT else None

    def quarantined(self, session_id: str) -> list[str]:
        validate_session_id(session_id)
        with self._reading("list quarantine", snapshot=True) as conn:
            self._session(conn, session_id)
            rows = conn.execute("SELECT name FROM handshake.quarantine WHERE session_id = %s", (session_id,))
            return sorted(row[0] for row in rows)

    def read_quarantined(self, session_id: str, name: str) -> bytes:
        validate_session_id(session_id)
        with self._reading("read quarantine", snapshot=True) as conn:
            self._session(conn, session_id)
            row = self._row(
                conn,
                "SELECT data FROM handshake.quarantine WHERE session_id = %s AND name = %s",
                session_id,
                name,
            )
        if row is None:
            raise NotFound(f"session {session_id} keeps nothing under {name}")
        return bytes(row[0])

    def artifact_sizes(self, session_id: str) -> dict[str, int]:
        validate_session_id(session_id)
        with self._reading("list a session's artifacts", snapshot=True) as conn:
            self._session(conn, session_id)
            rows = conn.execute(
                "SELECT artifact_id, octet_length(data) FROM handshake.artifacts WHERE session_id = %s",
                (session_id,),
            ).fetchall()
        return {str(ident): int(size) for ident, size in rows}

    def check_artifacts(self, session_id: str) -> ArtifactCheck:
        validate_session_id(session_id)
        problems: list[dict[str, Any]] = []
        present: set[str] = set()
        with self._reading("check artifacts", snapshot=True) as conn:
            self._session(conn, session_id)
            with conn.cursor(name="handshake_artifacts", binary=True) as cursor:
                cursor.itersize = 16
                cursor.execute(
                    "SELECT artifact_id, data FROM handshake.artifacts WHERE session_id = %s "
                    "ORDER BY artifact_id",
                    (session_id,),
                )
                for ident, data in cursor:
                    present.add(ident)
                    if not ARTIFACT_ID.fullmatch(ident) or artifact_id(bytes(data)) != ident:
                        problems.append(
                            {"kind": "artifact_corrupt", "artifact_id": ident, "repairable": False}
                        )
        return {"checked": len(present), "problems": problems, "present": present}

    # -- bundles: the session's rows as a bundle's files, and back (bundle.py) ----------------

    def session_files(self, session_id: str, skipped: list[dict[str, str]]) -> Iterator[str | SessionFile]:
        validate_session_id(session_id)
        with self._reading("export a session", snapshot=True) as conn:
            self._session(conn, session_id)
            head = self._row(conn, "SELECT head FROM handshake.heads WHERE session_id = %s", session_id)
            config = self._row(
                conn, "SELECT config FROM handshake.sessions WHERE session_id = %s", session_id
            )
            segments = conn.execute(
                "SELECT DISTINCT segment FROM handshake.records WHERE session_id = %s ORDER BY segment",
                (session_id,),
            ).fetchall()
        if head is not None:
            yield bundle.Bytes("head.json", bytes(head[0]))
        assert config is not None
        yield bundle.Bytes("session.toml", bytes(config[0]))
        yield "journal"
        for (number,) in segments:  # each read whole, in one statement: a prefix of a live journal
            with self._reading("export a session") as conn:
                data = bundle.segment(conn, session_id, number)
            yield bundle.Bytes(f"journal/{codec.segment_name(number)}", data)
        with self._reading("export a session") as conn:
            idents = bundle.artifact_ids(conn, session_id)
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM handshake.quarantine WHERE session_id = %s ORDER BY name", (session_id,)
                )
            ]
        if idents:
            yield "artifacts"
            yield "artifacts/objects"
        for ident in idents:
            if not ARTIFACT_ID.fullmatch(ident):
                skipped.append({"path": f"artifacts/objects/{ident}", "reason": "not an artifact id"})
                continue
            with self._reading("export a session") as conn:
                row = self._row(
                    conn,
                    "SELECT data FROM handshake.artifacts WHERE session_id = %s AND artifact_id = %s",
                    session_id,
                    ident,
                )
            if row is not None:
                yield bundle.Bytes(f"artifacts/objects/{ident}", bytes(row[0]))
        if names:
            yield "quarantine"
        for name in names:
            if not re.fullmatch(bundle.QUARANTINE_NAME, name):
                skipped.append({"path": name, "reason": "not a name quarantine gives"})
                continue
            yield bundle.Bytes(name, self.read_quarantined(session_id, name))

    def staging_area(self, session_id: str) -> Path:
        validate_session_id(session_id)
        return Path(tempfile.mkdtemp(prefix=f"handshake-import-{session_id}."))

    def import_session(self, session_id: str, staged: Path) -> None:
        validate_session_id(session_id)
        config_bytes = durable.read_bytes(staged / "sessions" / session_id / "session.toml")
        config = parse_config(config_bytes, session_id)
        with self._reading("import a session", create=True) as conn:
            try:
                with conn.transaction():
                    if self._row(conn, "SELECT 1 FROM handshake.sessions WHERE session_id = %s", session_id):
                        raise SessionExists(f"session {session_id} already exists in {self.shown}")
                    bundle.insert(conn, session_id, staged, config_bytes, str(config.get("created_at", "")))
            except psycopg.errors.UniqueViolation:
                raise SessionExists(f"session {session_id} already exists in {self.shown}") from None

    # -- the lease ---------------------------------------------------------------------------

    def acquire(self, session_id: str, *, command: str | None = None) -> PostgresLease:
        """Take the lease: the advisory lock on this new connection, then the row naming us."""
        validate_session_id(session_id)
        conn = connect(self.url, self.shown)
        try:
            if not schema.ready(conn, self.shown, create=False):
                raise self._not_found(session_id)
            key = lease_key(session_id)
            taken = self._row(conn, "SELECT pg_try_advisory_lock(%s)", key)
            if not (taken and taken[0]):
                raise self._locked(session_id)
            me = LockHolder(
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                # The command line as typed may hold the root's password: the row shows it without.
                command=(command or " ".join(["handshake", *sys.argv[1:]])).replace(self.url, self.shown),
            )
            with conn.transaction():
                if (
                    self._row(conn, "SELECT 1 FROM handshake.sessions WHERE session_id = %s", session_id)
                    is None
                ):
                    raise self._not_found(session_id)
                token_row = self._row(conn, "SELECT nextval('handshake.lease_tokens')")
                assert token_row is not None
                token = int(token_row[0])
                conn.execute(TAKE_LEASE, (session_id, token, me.pid, me.host, me.started_at, me.command))
        except REFUSED as exc:
            conn.close()
            raise denied(exc, self.shown, f"take the lease of session {session_id}") from None
        except psycopg.Error as exc:
            conn.close()
            if not is_lost(exc):
                raise
            raise lost(exc, self.shown, f"take the lease of session {session_id}") from None
        except BaseException:
            conn.close()
            raise
        _shield_from_checkpoint_requests()
        lease = PostgresLease(conn, session_id, me, token, self.shown, self.paths.root_args())
        self._leases.add(lease)
        return lease

    def _locked(self, session_id: str) -> SessionLocked:
        """The refusal naming the holder; it may need a moment to have said who it is."""
        deadline = time.monotonic() + HOLDER_WAIT
        while (found := self.holder(session_id)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        who = found.describe() if found else "another database session (it has not said who yet)"
        return SessionLocked(
            f"session {session_id} is locked by {who}",
            details={"lock_holder": found.as_json() if found else None},
        )

    def holder(self, session_id: str) -> LockHolder | None:
        validate_session_id(session_id)
        key = lease_key(session_id)
        params = {"session": session_id, "classid": (key >> 32) & 0xFFFFFFFF, "objid": key & 0xFFFFFFFF}
        with self._reading("find a session's lease holder") as conn:
            row = self._ready and conn.execute(HOLDER, params).fetchone()
        if not row:
            raise self._not_found(session_id)
        _, pid, host, started_at, command, live = row
        return LockHolder(pid, host, started_at, command) if live else None

    # -- asking a running session for a checkpoint --------------------------------------------

    def submit_request(self, session_id: str, reason: str | None) -> CheckpointRequest:
        validate_session_id(session_id)
        request = CheckpointRequest(secrets.token_hex(8), reason)
        with self._reading("ask for a checkpoint") as conn:
            made = self._ready and conn.execute(
                "INSERT INTO handshake.requests (session_id, nonce, reason) SELECT %s, %s, %s "
                "WHERE EXISTS (SELECT 1 FROM handshake.sessions WHERE session_id = %s)",
                (session_id, request.nonce, reason, session_id),
            )
        if not made or made.rowcount != 1:
            raise self._not_found(session_id)
        return request

    def wait_for_answer(
        self,
        session_id: str,
        request: CheckpointRequest,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            answer = self._take_answer(session_id, request)
            if answer is not None:
                return answer
            if not alive() or time.monotonic() >= deadline:
                return self._take_answer(session_id, request)
            time.sleep(ANSWER_POLL)

    def _take_answer(self, session_id: str, request: CheckpointRequest) -> dict[str, Any] | None:
        with self._reading("read a checkpoint answer") as conn:
            row = self._ready and self._row(
                conn,
                "DELETE FROM handshake.requests WHERE session_id = %s AND nonce = %s AND answer IS NOT NULL "
                "RETURNING answer",
                session_id,
                request.nonce,
            )
        if not row:
            return None
        found = json.loads(bytes(row[0]))
        return found if isinstance(found, dict) else None

    def withdraw_request(self, session_id: str, request: CheckpointRequest) -> None:
        try:
            with self._reading("withdraw a checkpoint request") as conn:
                if self._ready:
                    conn.execute(
                        "DELETE FROM handshake.requests "
                        "WHERE session_id = %s AND nonce = %s AND answer IS NULL",
                        (session_id, request.nonce),
                    )
        except (EnvironmentFailure, UsageError, psycopg.Error):
            pass


def _shield_from_checkpoint_requests() -> None:
    """`handshake checkpoint` on the holder's machine sends SIGUSR1 to the pid the lease row
    names, whose default action would kill a holder that serves no requests (a recovery that
    only blocks): ignore it, as the filesystem store's lock does (`SessionLock._shield`); the
    runner installs its own handler. For the process's life: a signal sent just after a
    release must not kill a writer on its way out."""
    import signal

    try:
        if signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are the main thread's business
        pass
