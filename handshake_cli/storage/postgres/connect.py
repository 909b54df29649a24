"""Connecting to the PostgreSQL store's database, and what a failure to connect means to a user.

A root URL is checked before any connection: one libpq cannot parse (or with a port that is
not one) is bad input, exit 2. A connection that fails says why, with the URL shown without
its password:

- the server answered and turned handshake away (a wrong password, no such database or role,
  no pg_hba.conf entry): the root is wrong, exit 2 (`UsageError`); running again will not
  help until the URL or the credentials change;
- the server could not be reached, refused the connection, is starting or stopping, or has
  no connection slot free: the environment, exit 74 (`EnvironmentFailure`); nothing
  acknowledged is lost, and the same command works once the database is back.

docs/DECISIONS.md says why. Every connection is autocommit with synchronous_commit on,
whatever the server's or the role's default, so that "committed" means durable, has TCP
keepalives at both ends, so that a writer's vanished machine lets go of its lease in seconds,
and is never ended for being idle, so that a writer waiting on a model keeps its lease.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from handshake_cli.errors import EnvironmentFailure, UsageError
from handshake_cli.paths import is_url, without_password

Connection = psycopg.Connection[tuple[Any, ...]]

CONNECT_TIMEOUT = 10  # seconds, unless the URL sets connect_timeout
APPLICATION_NAME = "handshake"
# A machine that vanishes (a preempted CI runner) sends no FIN: without keepalives the server
# would keep its writer's session, and with it the lease, for the OS's two hours. With these,
# both ends notice a silent peer within about 25 s (10 s idle, then 3 probes 5 s apart), and a
# write the peer never acknowledges fails after 30 s. Each is left alone when the URL sets it.
CLIENT_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
SERVER_KEEPALIVE = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
# A lease lives exactly as long as its connection, and a writer's connection sits idle for as
# long as a model answers or a tool runs: a server, database or role that ends idle sessions
# (idle_session_timeout, PostgreSQL 14 and later) would end a healthy run's lease. Keepalives,
# not idleness, tell a vanished writer. Set where the server knows the setting, unless the URL
# sets it.
SERVER_IF_KNOWN = {"idle_session_timeout": "0"}

# The oldest server handshake connects to: the first with `tcp_user_timeout`, which every
# connection sets (the tests run 18). An older one is the wrong root, said before anything is
# written, not a lost connection to try again.
OLDEST_SERVER = 120000  # server_version_num of 12.0

# What a server says when it is there but cannot take a connection now: transient, so exit 74.
_NOT_NOW = (
    "the database system is",  # starting up, shutting down, in recovery mode, not yet accepting
    "too many clients",
    "connection slots are reserved",
    "too many connections",
)
# What libpq says when the server turned these credentials away, or the client had none to give.
_TURNED_AWAY = ("FATAL:", "no password supplied", "password authentication failed")


def check_url(url: str, shown: str) -> dict[str, Any]:
    """The URL's connection parameters, or `UsageError` naming the root (without its password)."""
    if not is_url(url):
        raise UsageError(f"the root {shown} is not a PostgreSQL URL (postgresql://user@host:port/database)")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # libpq's message may quote a piece of the password: it is not repeated.
        raise UsageError(
            f"the root {shown} is not a URL libpq can read: use postgresql://user@host:port/database "
            "(percent-encode reserved characters)"
        ) from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(f"the root {shown} names port {port!r}, which is not a TCP port number")
    return params


def connect(url: str, shown: str) -> Connection:
    """A new connection to the root's database: autocommit, synchronous_commit on."""
    params = check_url(url, shown)
    options: dict[str, Any] = {}
    if "connect_timeout" not in params:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in params:
        options["application_name"] = APPLICATION_NAME
    options |= {key: value for key, value in CLIENT_KEEPALIVE.items() if key not in params}
    given = str(params.get("options", ""))
    settings = {"synchronous_commit": "on"}
    settings |= {k: v for k, v in SERVER_KEEPALIVE.items() if k not in given}
    if_known = {k: v for k, v in SERVER_IF_KNOWN.items() if k not in given}
    try:
        conn = psycopg.connect(url, autocommit=True, **options)
    except psycopg.OperationalError as exc:
        raise connect_failure(exc, shown) from None
    try:
        check_server(conn.info.server_version, shown)
    except UsageError:
        conn.close()
        raise
    try:
        calls = ["set_config(%s, %s, false)" for _ in settings]
        calls += ["(SELECT set_config(name, %s, false) FROM pg_settings WHERE name = %s)" for _ in if_known]
        values = [x for pair in settings.items() for x in pair]
        values += [x for name, value in if_known.items() for x in (value, name)]
        conn.execute(f"SELECT {', '.join(calls)}", values)
    except psycopg.Error as exc:
        conn.close()
        raise lost(exc, shown, "set up the connection") from None
    return conn


def check_server(version: int, shown: str) -> None:
    """UsageError for a server older than OLDEST_SERVER (`version` as server_version_num)."""
    if version < OLDEST_SERVER:
        # 10 and later number majors alone (110005: 11.5); before, two parts did (90624: 9.6.24)
        major = str(version // 10000) if version >= 100000 else f"{version // 10000}.{version // 100 % 100}"
        raise UsageError(
            f"the PostgreSQL server of root {shown} runs version {major}; handshake needs "
            f"PostgreSQL {OLDEST_SERVER // 10000} or later. Nothing was changed",
            details={"root": shown, "server_version": version, "oldest": OLDEST_SERVER},
        )


def connect_failure(exc: psycopg.OperationalError, shown: str) -> UsageError | EnvironmentFailure:
    cause = _cause(exc)
    if any(marker in cause for marker in _TURNED_AWAY) and not any(m in cause for m in _NOT_NOW):
        return UsageError(
            f"the PostgreSQL server of root {shown} refused handshake: {cause}. Check the user, the "
            "database and the password (from PGPASSWORD, ~/.pgpass or the URL)",
            details={"root": shown},
        )
    return EnvironmentFailure(
        f"cannot connect to the PostgreSQL server of root {shown}: {cause}. Nothing acknowledged "
        "is lost; run the command again once the database can be reached",
        details={"root": shown, "operation": "connect"},
    )


# SQLSTATEs of a statement the server cut short while the connection lived: query_canceled
# (a statement_timeout, or someone's pg_cancel_backend) and lock_not_available (a lock_timeout).
CANCELLED = frozenset({"57014", "55P03"})


def was_cancelled(exc: BaseException) -> bool:
    """Whether the server cut the statement short (CANCELLED), the connection still there."""
    return getattr(exc, "sqlstate", None) in CANCELLED


def lost(exc: psycopg.Error, shown: str, doing: str) -> EnvironmentFailure:
    """The error for a connection that failed, or a statement the server cut short, while
    handshake used it to read or to set up a lease: exit 74 either way, worded for which."""
    if was_cancelled(exc):
        return EnvironmentFailure(
            f"the PostgreSQL server of root {shown} cut short a statement while handshake was trying "
            f"to {doing}: {_cause(exc)}. A statement_timeout or lock_timeout (the server's, the "
            "database's or the user's) is shorter than it needed, or someone cancelled it. Nothing "
            "acknowledged is lost; run the command again when the database is less busy, or give "
            "handshake's user a longer limit (`options=-c statement_timeout=...` in the URL)",
            details={"root": shown, "operation": doing},
        )
    return EnvironmentFailure(
        f"lost the connection to the PostgreSQL server of root {shown} while trying to {doing}: "
        f"{_cause(exc)}. Nothing acknowledged is lost; run the command again once the database "
        "is back",
        details={"root": shown, "operation": doing},
    )


# What a server says to a statement this root may never make: the user has no right to it, or
# the database takes no writes (a hot standby, default_transaction_read_only). `denied` words it.
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


def denied(exc: psycopg.Error, shown: str, doing: str) -> UsageError:
    """The error for a statement the root may never make (one of REFUSED): the root is wrong
    for what was asked (a read-only role, or a read-only database, asked to write), which
    running again will not fix."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return UsageError(
            f"the database of root {shown} takes no writes, so handshake may not {doing} there: "
            f"{_cause(exc)}. A hot standby, or a database or user with default_transaction_read_only "
            "on, serves inspect and export but not run, recover, checkpoint, import or gc; use the primary "
            "server's URL",
            details={"root": shown, "operation": doing},
        )
    return UsageError(
        f"the database user of root {shown} may not {doing}: {_cause(exc)}. Use a user with the "
        "rights handshake needs (docs/FORMAT.md section 11)",
        details={"root": shown, "operation": doing},
    )


def is_lost(exc: BaseException) -> bool:
    """Whether `exc` is the connection failing (as opposed to a statement handshake got wrong)."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _cause(exc: psycopg.Error) -> str:
    """libpq's message on one line, without the "connection failed:" psycopg puts first."""
    text = " ".join(str(exc).split())
    return text.removeprefix("connection failed: ") or type(exc).__name__


def shown_url(url: str) -> str:
    return without_password(url)
