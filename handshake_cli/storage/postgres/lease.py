"""A session's lease on PostgreSQL, and the journal appender that writes through it.

The lease is a session-level advisory lock held by one database connection, the writer's:
the server drops it when that connection ends, however it ends (the process killed, the
machine lost, the backend terminated). Everything the holder writes goes through that one
connection, and every write also checks, in the same statement, that the lease row still
carries this holder's token: a writer that lost its lease can write nothing more (fencing).

Durability is the commit. A record appended with `Durability.NEXT_SYNC` (riding) is held in
the writer's memory and sent with the next commit, in the same statement: an append with
`Durability.NOW` or a `sync` sends every held record and its own in one INSERT committed with
synchronous_commit on, so a tool-call boundary is one round trip and one WAL flush. Held
records are also sent (committed asynchronously) once they are `HOLD_SECONDS` old at an
append, or too many; by the lease's courier thread once they have waited `HOLD_SECONDS` with
no append to carry them (a tool running, a stream stalled: other machines see what the
writer is doing); and before this process reads through the store (read-your-writes) or the
lease writes anything but an artifact (which no held record can name: it is added after
them). Every use of the connection holds `io`, so the courier and the writer never talk over
each other. A writer killed meanwhile loses them, as a machine crash loses unsynced bytes of
a file (DESIGN section 2, rule 3): never a gap, since they are always the journal's newest.
`put_artifact`, a cut torn tail and `sync` commit with synchronous_commit on; `add_artifact`
and the head commit with it off (durable with the next synchronous commit: WAL is flushed
in order).

A connection that fails, or a commit that does, is fatal to the writer: the lease and its
appender raise `DurabilityError` from then on and never reconnect (DESIGN section 2, rule 4),
and nothing of a batch that failed was acknowledged.
"""

from __future__ import annotations

import json
import select
import struct
import threading
import time
from collections.abc import Collection
from typing import Any, NamedTuple

import psycopg

from handshake_cli.errors import DurabilityError, IntegrityError, JournalNeedsRepair
from handshake_cli.storage.artifacts import artifact_id
from handshake_cli.storage.contract import (
    CheckpointRequest,
    Durability,
    JournalAppender,
    Lease,
    TailRepair,
)
from handshake_cli.storage.head import HEAD_FORMAT
from handshake_cli.storage.journal import codec, records
from handshake_cli.storage.journal.codec import DEFAULT_SEGMENT_BYTES, Clock, Record, segment_name, utc_now
from handshake_cli.storage.journal.scan import Damage, Start
from handshake_cli.storage.lock import LockHolder
from handshake_cli.storage.postgres import journal
from handshake_cli.storage.postgres.connect import Connection, was_cancelled

# Each write is one statement in a transaction of its own, whose first act sets how it commits
# ("on": durable when it returns; "off": visible at once and durable with the next synchronous
# commit), and which writes nothing unless this holder's token is the lease's.
# Records: one prepared statement for any number of rows (the held ones and the one a NOW
# append adds), sent through libpq with its arrays already in PostgreSQL's binary form, so
# psycopg builds no query for it. The fence held when every row was written.
RECORDS = b"handshake_records"
INSERT_RECORDS = b"""
WITH commit AS (SELECT set_config('synchronous_commit', $2, true))
INSERT INTO handshake.records (session_id, segment, byte_offset, seq, type, line)
SELECT $1, r.segment, r.byte_offset, r.seq, r.type, r.line
  FROM commit, unnest($4::int8[], $5::int8[], $6::int8[], $7::text[], $8::bytea[])
       AS r(segment, byte_offset, seq, type, line)
 WHERE EXISTS (SELECT 1 FROM handshake.leases WHERE session_id = $1 AND token = $3)
"""
# pg_type oids: text, text, bigint, then arrays of bigint x3, text, bytea
RECORDS_TYPES = (25, 25, 20, 1016, 1016, 1016, 1009, 1001)
RECORDS_FORMATS = (0, 0, 0, 1, 1, 1, 1, 1)  # the arrays go in binary, the rest as text
_ARRAY_HEAD = struct.Struct("!iiIii")  # dimensions, has-nulls, element type, length, lower bound
# Held riding records are sent (asynchronously) at an append once the oldest is this old, or
# once there are this many, or this many bytes; and by the courier, which looks every
# COURIER_SECONDS, once the oldest is HOLD_SECONDS old: so another process sees a riding
# record at most about half a second late, and that is what a killed writer may lose at most.
HOLD_SECONDS = 0.25
HOLD_ROWS = 1000
HOLD_BYTES = 1 << 20
COURIER_SECONDS = 0.25
# An artifact; the answer says whether the fence held, and whether a row was added (none when
# the artifact is already there).
INSERT_ARTIFACT = """
WITH commit AS (SELECT set_config('synchronous_commit', %(commit)s, true)),
     fence AS (SELECT 1 FROM handshake.leases, commit WHERE session_id = %(session)s AND token = %(token)s),
     put AS (INSERT INTO handshake.artifacts (session_id, artifact_id, data)
             SELECT %(session)s, %(id)s, %(data)b FROM fence ON CONFLICT DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM put)
"""
WRITE_HEAD = """
WITH commit AS (SELECT set_config('synchronous_commit', %(commit)s, true))
INSERT INTO handshake.heads (session_id, head)
SELECT %(session)s, %(head)b FROM commit
 WHERE EXISTS (SELECT 1 FROM handshake.leases WHERE session_id = %(session)s AND token = %(token)s)
ON CONFLICT (session_id) DO UPDATE SET head = EXCLUDED.head
"""
# A synchronous commit that writes WAL (so the flush covers every asynchronous commit before
# it) and checks the fence.
FLUSH = "UPDATE handshake.leases SET synced_seq = %s WHERE session_id = %s AND token = %s"
FENCE = "SELECT 1 FROM handshake.leases WHERE session_id = %s AND token = %s"


def head_bytes(fields: dict[str, Any]) -> bytes:
    """The head cache as head.json holds it (`storage.head.write`), byte for byte."""
    return json.dumps({"format_version": HEAD_FORMAT, **fields}, indent=2, sort_keys=True).encode() + b"\n"


class Row(NamedTuple):
    """One record's row in `handshake.records`, as an appender made it."""

    segment: int
    offset: int
    seq: int
    type: str
    line: bytes


def _array(oid: int, items: list[bytes]) -> bytes:
    """A one-dimensional array without nulls in PostgreSQL's binary format."""
    parts = [_ARRAY_HEAD.pack(1, 0, oid, len(items), 1)]
    for item in items:
        parts.append(len(item).to_bytes(4, "big"))
        parts.append(item)
    return b"".join(parts)


def _bigints(values: list[int]) -> bytes:
    return _array(20, [value.to_bytes(8, "big", signed=True) for value in values])


def _error(sqlstate: bytes | None, message: str) -> psycopg.Error:
    """The exception psycopg would raise for a failed reply with this SQLSTATE."""
    try:
        kind = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
    except KeyError:
        kind = psycopg.OperationalError
    return kind(message)


class PostgresLease(Lease):
    """The lease of one session, held by `conn`'s database session."""

    def __init__(
        self,
        conn: Connection,
        session_id: str,
        holder: LockHolder,
        token: int,
        shown: str,
        root_args: list[str] | None = None,
    ) -> None:
        self.conn = conn
        self.session_id = session_id
        self.holder = holder
        self.token = token
        self.shown = shown
        self.root_args = root_args or []  # the `--root` words a printed command repeats
        self.broken: str | None = None  # why this lease can write nothing more
        # The failure met on the writer's behalf (by the courier, or a reader sending held
        # rows), raised whole to the writer at its next statement: what failed, and what to run.
        self.kept: DurabilityError | None = None
        self.unflushed = False  # an asynchronous commit, or a held row, since the last synchronous one
        self.released = False
        self.held: list[Row] = []  # riding records not sent yet, oldest first
        self.held_bytes = 0
        self.held_since = 0.0  # time.monotonic() when the oldest held row was appended
        self.sent: tuple[str, int] | None = None  # rows sent, their reply not read yet: (doing, how many)
        self.prepared = False  # RECORDS is prepared on this connection
        # One thread at a time on the connection's libpq state and the held rows: the writer's
        # statements, the courier, and a reader of the same store (another thread, say)
        # sending them first.
        self.io = threading.RLock()
        self.courier: threading.Thread | None = None  # started by the first held row
        self.stopping = threading.Event()

    # -- writing through the lease's connection ------------------------------------------------

    def check(self) -> None:
        """Raise if this writer can write nothing more; first read the reply of rows still
        out, so every statement after them knows whether they held."""
        with self.io:
            if self.kept is not None:
                kept, self.kept = self.kept, None
                raise kept
            if self.broken:
                raise DurabilityError(
                    f"session {self.session_id}: this writer is unusable after an earlier failure: "
                    f"{self.broken}"
                )
            if self.sent is not None:
                self.settle()

    def hold(self, row: Row) -> None:
        """Keep a riding record's row for the next commit (`commit`), which sends it in the
        same statement. Rows held too long or too many are sent now, committed asynchronously,
        without waiting for the reply (read by `check` before the next statement)."""
        with self.io:
            self.check()
            now = time.monotonic()
            if not self.held:
                self.held_since = now
            if self.courier is None:
                self.courier = threading.Thread(
                    target=self._carry, name=f"handshake courier {self.session_id}", daemon=True
                )
                self.courier.start()
            self.held.append(row)
            self.held_bytes += len(row.line)
            self.unflushed = True
            if (
                now - self.held_since >= HOLD_SECONDS
                or len(self.held) >= HOLD_ROWS
                or self.held_bytes >= HOLD_BYTES
            ):
                self._send([], durable=False, doing=f"append record {row.seq}")

    def commit(self, rows: list[Row], doing: str) -> None:
        """Every held row and `rows`, in one statement committed with synchronous_commit on:
        durable, with every asynchronous commit before it, when this returns."""
        with self.io:
            self.check()
            self._send(rows, durable=True, doing=doing)
            self.settle()
            self.unflushed = False

    def send_held(self) -> None:
        """Send the held rows (committed asynchronously) and wait for the reply: before any
        other statement of the lease, so the rows reach the server in the order appended."""
        with self.io:
            self.check()
            if self.held:
                self._send([], durable=False, doing=f"append record {self.held[-1].seq}")
                self.settle()

    def settle_for_readers(self) -> None:
        """Before the store reads: send what is held and wait for what is out, so what
        `append` returned is there to read (as it is in a file). A failure is kept for the
        writer's next statement, never raised to a reader."""
        with self.io:
            if (self.held or self.sent is not None) and not self.broken:
                try:
                    self.send_held()
                except DurabilityError as exc:
                    self.kept = exc  # the writer's next statement raises it

    def _carry(self) -> None:
        """The courier: every COURIER_SECONDS, rows held HOLD_SECONDS with no append to carry them
        (a tool that takes its time, a model stream that stalls) are sent and their reply
        read, so another machine's `inspect` sees what the writer is doing, and a writer
        killed meanwhile loses no more than that window. It never waits for the writer: a
        connection in use now is carrying them anyway. A failure is kept for the writer."""
        while not self.stopping.wait(COURIER_SECONDS):
            if not self.io.acquire(blocking=False):
                continue
            try:
                if self.broken or self.released:
                    return
                if self.held and time.monotonic() - self.held_since >= HOLD_SECONDS:
                    self.settle_for_readers()
            finally:
                self.io.release()

    def _send(self, rows: list[Row], *, durable: bool, doing: str) -> None:
        """Send the held rows and `rows` as one INSERT_RECORDS; the reply is `settle`'s."""
        batch = self.held + rows if self.held else rows
        self.held, self.held_bytes = [], 0
        if not batch:
            return
        values = [
            self.session_id.encode(),
            b"on" if durable else b"off",
            str(self.token).encode(),
            _bigints([row.segment for row in batch]),
            _bigints([row.offset for row in batch]),
            _bigints([row.seq for row in batch]),
            _array(25, [row.type.encode() for row in batch]),
            _array(17, [row.line for row in batch]),
        ]
        pgconn = self.conn.pgconn
        try:
            if not self.prepared:
                prepared = pgconn.prepare(RECORDS, INSERT_RECORDS, RECORDS_TYPES)
                if prepared.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    raise psycopg.OperationalError(prepared.get_error_message())
                self.prepared = True
            pgconn.send_query_prepared(RECORDS, values, RECORDS_FORMATS)
            while pgconn.flush():  # the connection is non-blocking: push the rest out
                select.select([], [pgconn.socket], [])
        except psycopg.Error as exc:
            raise self.failed(exc, doing) from None
        self.sent = (doing, len(batch))
        if not durable:
            self.unflushed = True

    def settle(self) -> None:
        """Read the reply of the rows sent last: a failed statement or connection is fatal,
        as in `run`; fewer rows written than sent means the fence did not hold."""
        sent, self.sent = self.sent, None
        if sent is None:
            return
        doing, count = sent
        pgconn = self.conn.pgconn
        replies = []
        try:
            while True:
                # Wait in select, not in libpq: the GIL is free for other threads meanwhile,
                # and a signal's handler runs while the server takes its time.
                while pgconn.is_busy():
                    select.select([pgconn.socket], [], [])
                    pgconn.consume_input()
                reply = pgconn.get_result()
                if reply is None:
                    break
                replies.append(reply)
        except (psycopg.Error, OSError) as exc:
            failure = exc if isinstance(exc, psycopg.Error) else psycopg.OperationalError(str(exc))
            raise self.failed(failure, doing) from None
        if not replies or replies[0].status != psycopg.pq.ExecStatus.COMMAND_OK:
            cause = replies[0].get_error_message() if replies else pgconn.get_error_message()
            if isinstance(cause, bytes):
                cause = cause.decode("utf-8", "replace")
            state = replies[0].error_field(psycopg.pq.DiagnosticField.SQLSTATE) if replies else None
            raise self.failed(_error(state, cause or "no reply"), doing)
        if replies[0].command_tuples != count:
            raise self.fenced()

    def failed(self, exc: psycopg.Error, doing: str) -> DurabilityError:
        """The lease's connection failed while `doing`: the lease is lost, this writer stops."""
        cause = " ".join(str(exc).split()) or type(exc).__name__
        if was_cancelled(exc):  # a statement_timeout or lock_timeout: the connection lives, the write did not
            what = (
                f"the server cut short its statement on the connection to {self.shown} that holds its lease"
            )
        else:
            what = f"the connection to {self.shown} that holds its lease failed"
        self.broken = f"{what} ({cause})"
        self.held, self.held_bytes = [], 0  # never sent: never acknowledged as durable either
        return DurabilityError(
            f"session {self.session_id}: {doing} failed: {what} ({cause}); this process stops here "
            "and never reconnects. What was acknowledged is committed; recover the session once the "
            "database is back",
            guidance=[" ".join(["handshake", "recover", self.session_id, *self.root_args])],
            details={"root": self.shown, "operation": doing},
        )

    def fenced(self) -> DurabilityError:
        self.broken = "its lease was taken over"
        self.held, self.held_bytes = [], 0
        return DurabilityError(
            f"session {self.session_id}: this writer no longer holds the session's lease (its database "
            "session lost the lock and another holder took it); nothing more is written",
            details={"root": self.shown, "operation": "fence"},
        )

    def run(
        self, query: str, params: Any, *, durable: bool, doing: str, after_held: bool = True
    ) -> psycopg.Cursor[Any]:
        """Execute one statement in a transaction of its own, after the held rows unless not
        `after_held`: committed with synchronous_commit on when `durable`, else off (visible
        now, durable with the next synchronous commit). A statement that says how it commits
        takes `%(commit)s` from here."""
        with self.io:
            if after_held:
                self.send_held()
            else:
                self.check()
            if isinstance(params, dict):
                params["commit"] = "on" if durable else "off"
            try:
                cursor = self.conn.execute(query, params)
            except psycopg.Error as exc:
                raise self.failed(exc, doing) from None
        if not durable:
            self.unflushed = True
        return cursor

    def flush(self, last_seq: int = 0) -> None:
        """Make every held row and asynchronous commit so far durable, by a synchronous
        commit; checks the fence."""
        with self.io:
            if self.held:
                self.commit([], "sync")
                return
            cursor = self.run(FLUSH, (last_seq, self.session_id, self.token), durable=True, doing="sync")
            if cursor.rowcount != 1:
                raise self.fenced()
            self.unflushed = False

    # -- the contract --------------------------------------------------------------------------

    def open_journal(
        self, *, clock: Clock | None = None, start: Start | None = None, segment_bytes: int | None = None
    ) -> PostgresAppender:
        try:
            with self.io:
                self.check()
                with self.conn.transaction():
                    result = journal.scan(self.conn, self.session_id, start, False)
        except psycopg.Error as exc:
            raise self.failed(exc, "open the journal") from None
        if result.corruption:
            damage = result.corruption
            raise IntegrityError(
                f"journal is corrupt at {damage.segment} offset {damage.offset}: {damage.detail}"
            )
        if result.torn_tail:
            damage = result.torn_tail
            raise JournalNeedsRepair(
                f"journal ends in a torn tail at {damage.segment} offset {damage.offset}; "
                "recovery must cut it off before anything is appended",
                guidance=[" ".join(["handshake", "recover", self.session_id, *self.root_args])],
            )
        last = list(result.valid_ends)[-1] if result.valid_ends else None
        return PostgresAppender(
            self,
            clock or utc_now,
            last_seq=result.last_seq,
            last_sum=result.last_sum,
            segment=journal.segment_number(last) if last else None,
            size=result.valid_ends[last] if last else 0,
            segment_bytes=segment_bytes or DEFAULT_SEGMENT_BYTES,
        )

    def put_artifact(self, data: bytes) -> str:
        ident = artifact_id(data)
        params = {"session": self.session_id, "token": self.token, "id": ident, "data": data}
        row = self.run(INSERT_ARTIFACT, params, durable=True, doing="keep an artifact").fetchone()
        if row is None or row[0] != 1:
            raise self.fenced()
        if row[1] == 1:
            self.unflushed = False  # this commit wrote, and its flush carried every one before it
        elif self.unflushed:
            self.flush()  # already there, perhaps from an asynchronous commit: make sure of it
        return ident

    def write_head(self, fields: dict[str, Any]) -> bool:
        params = {"session": self.session_id, "token": self.token, "head": head_bytes(fields)}
        try:
            return self.run(WRITE_HEAD, params, durable=False, doing="write the head").rowcount == 1
        except DurabilityError:
            return False  # never fatal by itself: the next append says what happened

    def repair_torn_tail(self, damage: Damage) -> TailRepair:
        number = journal.segment_number(damage.segment)
        if not damage.repairable or number is None:
            raise IntegrityError(
                f"session {self.session_id}: the damage at {damage.segment} offset {damage.offset} is "
                f"corruption ({damage.detail}), which is never cut off"
            )
        self.send_held()
        try:
            with self.io, self.conn.transaction():
                if self.conn.execute(FENCE, (self.session_id, self.token)).fetchone() is None:
                    raise self.fenced()
                quarantined = self._cut(number, damage)
        except psycopg.Error as exc:
            raise self.failed(exc, "cut a torn tail") from None
        self.unflushed = False
        return TailRepair(
            segment=damage.segment, offset=damage.offset, length=damage.length, quarantined=quarantined
        )

    def _cut(self, number: int, damage: Damage) -> str | None:
        """In the caller's transaction: keep the segment's bytes from the damage on in
        quarantine, then cut them off, the segment ending in a newline as a file would."""
        rows = [
            (at, bytes(line))
            for at, line in self.conn.execute(
                "SELECT byte_offset, line FROM handshake.records WHERE session_id = %s AND segment = %s "
                "ORDER BY byte_offset",
                (self.session_id, number),
            )
        ]
        size = rows[-1][0] + len(rows[-1][1]) if rows else 0
        if not 0 <= damage.offset <= size:
            raise IntegrityError(
                f"session {self.session_id}: {damage.segment} offset {damage.offset} is not in the journal"
            )
        torn = b"".join(
            line[max(0, damage.offset - at) :] for at, line in rows if at + len(line) > damage.offset
        )
        name = self._quarantine(f"{damage.segment}.{damage.offset}", torn) if torn else None
        self.conn.execute(
            "DELETE FROM handshake.records WHERE session_id = %s AND segment = %s AND byte_offset >= %s",
            (self.session_id, number, damage.offset),
        )
        kept = [(at, line, line[: damage.offset - at]) for at, line in rows if at < damage.offset]
        if kept and (kept[-1][2] != kept[-1][1] or not kept[-1][2].endswith(b"\n")):
            # The damage begins inside this row (even just after one of its newlines): it keeps
            # only the bytes before it, ending in a newline.
            at, _, line = kept[-1]
            self.conn.execute(
                "UPDATE handshake.records SET line = %b "
                "WHERE session_id = %s AND segment = %s AND byte_offset = %s",
                (line if line.endswith(b"\n") else line + b"\n", self.session_id, number, at),
            )
        return name

    def _quarantine(self, stem: str, data: bytes) -> str:
        """Keep `data` under a name no bytes have yet (or the one already holding exactly them)."""
        number = 1
        while True:
            name = f"quarantine/{stem}.torn" if number == 1 else f"quarantine/{stem}.{number}.torn"
            row = self.conn.execute(
                "INSERT INTO handshake.quarantine (session_id, name, data) VALUES (%s, %s, %b) "
                "ON CONFLICT (session_id, name) DO UPDATE SET data = handshake.quarantine.data "
                "RETURNING data",
                (self.session_id, name, data),
            ).fetchone()
            if row is not None and bytes(row[0]) == data:
                return name
            number += 1

    def pending_requests(self) -> list[CheckpointRequest]:
        try:
            with self.io:
                self.check()
                rows = self.conn.execute(
                    "SELECT nonce, reason FROM handshake.requests WHERE session_id = %s AND answer IS NULL "
                    "ORDER BY asked",
                    (self.session_id,),
                ).fetchall()
        except psycopg.Error as exc:
            raise self.failed(exc, "read checkpoint requests") from None
        return [CheckpointRequest(nonce, reason) for nonce, reason in rows]

    def answer_request(self, request: CheckpointRequest, payload: dict[str, Any]) -> bool:
        answer = json.dumps(payload, sort_keys=True).encode()
        try:
            cursor = self.run(
                "UPDATE handshake.requests SET answer = %b WHERE session_id = %s AND nonce = %s",
                (answer, self.session_id, request.nonce),
                durable=True,
                doing="answer a checkpoint request",
            )
        except DurabilityError:
            return False
        if cursor.rowcount == 1:
            self.unflushed = False
        return cursor.rowcount == 1

    def remove_session(self) -> None:
        """Delete every row of the session in one transaction, the fence checked in it (the
        lease is still this one's, so no writer holds the session); then the lease ends."""
        try:
            self._remove_rows()
        finally:
            self.release()

    def _remove_rows(self) -> None:
        self.send_held()
        try:
            with self.io, self.conn.transaction():
                if self.conn.execute(FENCE, (self.session_id, self.token)).fetchone() is None:
                    raise self.fenced()
                for table in (
                    "records",
                    "artifacts",
                    "heads",
                    "quarantine",
                    "requests",
                    "leases",
                    "sessions",
                ):
                    self.conn.execute(
                        f"DELETE FROM handshake.{table} WHERE session_id = %s", (self.session_id,)
                    )
        except psycopg.Error as exc:
            raise self.failed(exc, "remove the session") from None

    def drop_artifacts(self, artifact_ids: Collection[str]) -> int:
        """Delete these artifacts' rows in one transaction, the fence checked in it."""
        self.send_held()
        try:
            with self.io, self.conn.transaction():
                if self.conn.execute(FENCE, (self.session_id, self.token)).fetchone() is None:
                    raise self.fenced()
                row = self.conn.execute(
                    "WITH gone AS (DELETE FROM handshake.artifacts WHERE session_id = %s "
                    "AND artifact_id = ANY(%s) RETURNING octet_length(data) AS size) "
                    "SELECT coalesce(sum(size), 0) FROM gone",
                    (self.session_id, sorted(set(artifact_ids))),
                ).fetchone()
        except psycopg.Error as exc:
            raise self.failed(exc, "drop unnamed artifacts") from None
        return int(row[0]) if row else 0

    def release(self) -> None:
        """The row first, then the connection (whose end drops the lock); never raises."""
        self.stopping.set()  # the courier: its statement in flight ends before this one starts
        with self.io:
            if self.released:
                return
            self.released = True
            try:
                if not self.broken:
                    self.send_held()  # a process that lets go keeps what it appended, as a file does
                    self.conn.execute(
                        "DELETE FROM handshake.leases WHERE session_id = %s AND token = %s",
                        (self.session_id, self.token),
                    )
            except (psycopg.Error, DurabilityError):
                pass
            finally:
                self.conn.close()

    def __enter__(self) -> PostgresLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PostgresAppender(JournalAppender):
    """Appends rows to one session's journal through its lease's connection."""

    def __init__(
        self,
        lease: PostgresLease,
        clock: Clock,
        *,
        last_seq: int,
        last_sum: str,
        segment: int | None,
        size: int,
        segment_bytes: int,
    ) -> None:
        self.lease = lease
        self.clock = clock
        self._last_seq = last_seq
        self.last_sum = last_sum
        self.segment = segment
        self.size = size
        self.segment_bytes = segment_bytes
        self.artifacts_pending = False
        self.known: set[str] = set()  # artifacts this appender already sent
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def append(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        durability: Durability = Durability.NOW,
        encoded: bytes | None = None,
    ) -> Record:
        self._check()
        seq, prev = self._last_seq + 1, self.last_sum
        ts = self.clock()
        line, digest = codec.encode(seq, ts, type_, data, prev, encoded)
        records.refuse_beyond_limits(line, type_, data)
        segment, offset = self.segment, self.size
        if segment is None or (offset and offset + len(line) > self.segment_bytes):
            segment, offset = seq, 0  # a new segment, named after its first record
        row = Row(segment, offset, seq, type_, line)
        if durability is Durability.NOW:
            # One statement: the held rows and this one, committed; its flush carries every
            # asynchronous commit before it (artifacts included).
            self.lease.commit([row], f"append record {seq}")
            self.artifacts_pending = False
        else:
            self.lease.hold(row)
        self.segment, self.size = segment, offset + len(line)
        self._last_seq, self.last_sum = seq, digest
        return Record(seq, ts, type_, data, prev, digest, segment_name(segment), offset)

    def add_artifact(self, data: bytes) -> str:
        self._check()
        ident = artifact_id(data)
        if ident in self.known:
            return ident
        params = {"session": self.lease.session_id, "token": self.lease.token, "id": ident, "data": data}
        # Ahead of the held records, which cannot name it (they were appended before it):
        # committed first, it is durable before any of them, and any record after them.
        row = self.lease.run(
            INSERT_ARTIFACT, params, durable=False, doing="add an artifact", after_held=False
        ).fetchone()
        if row is None or row[0] != 1:
            raise self.lease.fenced()
        self.known.add(ident)
        self.artifacts_pending = True
        return ident

    def sync(self) -> None:
        self._check()
        if self.lease.unflushed:
            self.lease.flush(self._last_seq)
        self.artifacts_pending = False

    def sync_artifacts(self) -> None:
        self._check()
        if self.artifacts_pending:
            self.lease.flush(self._last_seq)
            self.artifacts_pending = False

    def close(self) -> None:
        self.closed = True

    def _check(self) -> None:
        if self.closed:
            raise DurabilityError(f"session {self.lease.session_id}: the journal appender was closed")
        self.lease.check()
