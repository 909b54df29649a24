"""The PostgreSQL store's tables, created and versioned by handshake (docs/FORMAT.md section 11).

Everything lives in one PostgreSQL schema, `handshake`, so the store can share a database
with other applications. `handshake.schema_version` holds one row, the version of these
tables; a handshake that meets a newer one refuses it (exit 2, `unsupported_format`, as for a
newer session.toml) and changes nothing, and one that finds no tables creates them when it
first writes (a reader never creates anything: an empty database simply holds no sessions).
Two processes that create the tables at once are serialised by an advisory
lock, and the second finds them made.
"""

from __future__ import annotations

from handshake_cli.errors import IntegrityError, UnsupportedFormat
from handshake_cli.storage.postgres.connect import Connection

SCHEMA = "handshake"
SCHEMA_VERSION = 1
# The advisory lock that serialises creating the tables (an arbitrary constant: "hshk" "schm").
_CREATE_LOCK = 0x6873686B_7363686D

TABLES = (
    """CREATE TABLE handshake.schema_version (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version integer NOT NULL
    )""",
    # One row per session: session.toml's bytes, exactly as the filesystem store writes them.
    """CREATE TABLE handshake.sessions (
        session_id text PRIMARY KEY,
        config bytea NOT NULL,
        created_at text NOT NULL
    )""",
    # One row per appended line: the codec's bytes (newline included) at (segment, byte_offset),
    # the segment named after the seq it starts at. seq and type are lookup aids written with
    # the line; the line is the truth, verified on every read.
    """CREATE TABLE handshake.records (
        session_id text NOT NULL,
        segment bigint NOT NULL,
        byte_offset bigint NOT NULL,
        seq bigint,
        type text,
        line bytea NOT NULL,
        PRIMARY KEY (session_id, segment, byte_offset)
    )""",
    "CREATE INDEX records_by_type ON handshake.records (session_id, type, seq)",
    """CREATE TABLE handshake.artifacts (
        session_id text NOT NULL,
        artifact_id text NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (session_id, artifact_id)
    )""",
    """CREATE TABLE handshake.heads (
        session_id text PRIMARY KEY,
        head bytea NOT NULL
    )""",
    """CREATE TABLE handshake.quarantine (
        session_id text NOT NULL,
        name text NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (session_id, name)
    )""",
    # Who holds a session's lease. The lease itself is a session-level advisory lock held by
    # the connection named in backend_pid; this row only says who that is, and `token` fences
    # a writer that lost the lock (every write checks it is still the row's).
    """CREATE TABLE handshake.leases (
        session_id text PRIMARY KEY,
        token bigint NOT NULL,
        backend_pid integer NOT NULL,
        pid integer NOT NULL,
        host text NOT NULL,
        started_at text NOT NULL,
        command text NOT NULL,
        synced_seq bigint NOT NULL DEFAULT 0
    )""",
    "CREATE SEQUENCE handshake.lease_tokens",
    # `handshake checkpoint`'s requests to a running session, and the holder's answers.
    """CREATE TABLE handshake.requests (
        session_id text NOT NULL,
        nonce text NOT NULL,
        asked bigint GENERATED ALWAYS AS IDENTITY,
        reason text,
        answer bytea,
        PRIMARY KEY (session_id, nonce)
    )""",
)


def ready(conn: Connection, shown: str, *, create: bool) -> bool:
    """Whether the tables are there in a version this handshake reads; when they are missing
    and `create` is true, they are made first. A newer version is `UnsupportedFormat`."""
    if not _exists(conn):
        if not create:
            return False
        _create(conn)
    row = conn.execute("SELECT version FROM handshake.schema_version").fetchone()
    found = row[0] if row else None
    if found == SCHEMA_VERSION:
        return True
    if isinstance(found, int) and found > SCHEMA_VERSION:
        raise UnsupportedFormat(
            f"the database of root {shown} holds handshake schema version {found}; this handshake "
            f"reads schema version {SCHEMA_VERSION}. Upgrade handshake to use it. Nothing was changed.",
            details={"root": shown, "schema_version": found, "supported": SCHEMA_VERSION},
        )
    raise IntegrityError(
        f"the database of root {shown} has a handshake schema whose version ({found!r}) is not one "
        "handshake wrote",
        details={"root": shown, "schema_version": found},
    )


def _create(conn: Connection) -> None:
    """Make the tables in one transaction, unless another process made them first. The lock
    is the session's, and the second look a transaction of its own: a transaction that waited
    for the lock could still see the catalog as it was before the other one committed."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_CREATE_LOCK,))
    try:
        if _exists(conn):
            return
        with conn.transaction():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            for statement in TABLES:
                conn.execute(statement)
            conn.execute("INSERT INTO handshake.schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_CREATE_LOCK,))


def _exists(conn: Connection) -> bool:
    row = conn.execute("SELECT to_regclass('handshake.schema_version')").fetchone()
    return row is not None and row[0] is not None
