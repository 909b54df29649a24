"""The stores the session-store suite runs against, each with the few powers a test needs
that the contract rightly does not give: damaging bytes as a failing disk would, reopening
the store as a new process (or, for memory, a restarted machine) would, and holding a lease
from somewhere else.

Adding a store to the suite is adding a class here and a name to `STORES`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from handshake_cli.paths import Paths
from handshake_cli.storage.artifacts import HEADER_BYTES, ArtifactStore
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.lock import LockHolder
from handshake_cli.storage.memory import Memory, MemoryStore

STORES = ("memory", "filesystem", "postgres")
TIMEOUT = 30


class Harness(Protocol):
    store: SessionStore

    def reopen(self) -> SessionStore:
        """The store as the next process sees it (memory: after a crash of the machine)."""
        ...

    def stored_line(self, session_id: str, record: Record) -> bytes:
        """The bytes the store keeps for `record`."""
        ...

    def flip_bit(self, session_id: str, record: Record, at: int, bit: int = 0) -> None:
        """Flip one bit of byte `at` of the record's stored line, as a failing disk would."""
        ...

    def tear(self, session_id: str, data: bytes) -> None:
        """Leave `data` at the journal's end, as a write a crash cut short does."""
        ...

    def damage_artifact(self, session_id: str, artifact_id: str) -> None:
        """Flip a bit of the artifact's stored bytes."""
        ...

    def hold_elsewhere(self, session_id: str, command: str) -> AbstractContextManager[LockHolder]:
        """Hold the session's lease from another holder (for files, another process) while
        the `with` lasts; it ends, the way a killed process does, on the way out."""
        ...


class MemoryHarness:
    def __init__(self) -> None:
        self.memory = Memory()
        self.store: SessionStore = MemoryStore(self.memory)

    def reopen(self) -> SessionStore:
        self.memory.crash()
        return MemoryStore(self.memory)

    def stored_line(self, session_id: str, record: Record) -> bytes:
        return self.memory.sessions[session_id].lines[record.offset]

    def flip_bit(self, session_id: str, record: Record, at: int, bit: int = 0) -> None:
        lines = self.memory.sessions[session_id].lines
        line = bytearray(lines[record.offset])
        line[at] ^= 1 << bit
        lines[record.offset] = bytes(line)

    def tear(self, session_id: str, data: bytes) -> None:
        self.memory.sessions[session_id].lines.append(data)

    def damage_artifact(self, session_id: str, artifact_id: str) -> None:
        artifacts = self.memory.sessions[session_id].artifacts
        data = bytearray(artifacts[artifact_id])
        data[-1] ^= 1
        artifacts[artifact_id] = bytes(data)

    @contextmanager
    def hold_elsewhere(self, session_id: str, command: str) -> Iterator[LockHolder]:
        lease = MemoryStore(self.memory).acquire(session_id, command=command)
        try:
            yield lease.holder
        finally:
            lease.release()


# Takes the lease in a process of its own, says who holds it, and waits to be killed.
_HOLDER = """
import sys
from pathlib import Path
from handshake_cli.paths import Paths
from handshake_cli.storage.filesystem import FilesystemStore

lease = FilesystemStore(Paths(Path(sys.argv[1]))).acquire(sys.argv[2], command=sys.argv[3])
print(lease.holder.pid, flush=True)
sys.stdin.read()
"""


class FilesystemHarness:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store: SessionStore = FilesystemStore(Paths(root))

    def reopen(self) -> SessionStore:
        return FilesystemStore(Paths(self.root))  # nothing cached: every read opens the files

    def _session(self, session_id: str) -> Path:
        return self.root / "sessions" / session_id

    def stored_line(self, session_id: str, record: Record) -> bytes:
        data = (self._session(session_id) / "journal" / record.segment).read_bytes()
        return data[record.offset : data.index(b"\n", record.offset) + 1]

    def flip_bit(self, session_id: str, record: Record, at: int, bit: int = 0) -> None:
        path = self._session(session_id) / "journal" / record.segment
        data = bytearray(path.read_bytes())
        data[record.offset + at] ^= 1 << bit
        path.write_bytes(bytes(data))

    def tear(self, session_id: str, data: bytes) -> None:
        journal = self._session(session_id) / "journal"
        newest = max(journal.iterdir(), key=lambda path: int(path.name.split(".")[0]))
        with newest.open("ab") as segment:
            segment.write(data)

    def damage_artifact(self, session_id: str, artifact_id: str) -> None:
        artifacts = ArtifactStore(self._session(session_id) / "artifacts")
        loose = artifacts.objects / artifact_id
        if loose.exists():
            path, at = loose, loose.stat().st_size - 1
        else:
            frame = next(f for f in artifacts.frames() if f.artifact_id == artifact_id)
            path = artifacts.packs / frame.location.pack
            at = frame.location.offset + HEADER_BYTES + frame.length - 1
        data = bytearray(path.read_bytes())
        data[at] ^= 1
        path.write_bytes(bytes(data))

    @contextmanager
    def hold_elsewhere(self, session_id: str, command: str) -> Iterator[LockHolder]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.root), session_id, command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            pid = int(proc.stdout.readline())
            holder = self.store.holder(session_id)
            assert holder is not None and holder.pid == pid
            yield holder
        finally:
            proc.kill()  # as a crash would: the kernel drops the flock, owner.json stays behind
            proc.wait(timeout=TIMEOUT)
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    stream.close()


# Takes the lease from a process of its own (another machine, as far as the database can
# tell), says who holds it and which backend holds the lock, and waits to be killed.
_PG_HOLDER = """
import sys
from handshake_cli.storage.postgres import PostgresStore

lease = PostgresStore(sys.argv[1]).acquire(sys.argv[2], command=sys.argv[3])
print(lease.holder.pid, lease.conn.info.backend_pid, flush=True)
sys.stdin.read()
"""


class PostgresHarness:
    """A fresh database on the test run's server (tests/support/postgres.py). Damage is done
    with raw UPDATEs and INSERTs behind the store's back, as a failing disk under the
    database would leave it."""

    def __init__(self) -> None:
        import psycopg

        from handshake_cli.storage.postgres import PostgresStore
        from tests.support.postgres import fresh_database, shared_server

        self.server = shared_server()
        self.url = fresh_database()
        self.store: SessionStore = PostgresStore(self.url)
        self.raw = psycopg.connect(self.url, autocommit=True)

    def reopen(self) -> SessionStore:
        from handshake_cli.storage.postgres import PostgresStore

        return PostgresStore(self.url)  # a new connection: what the next process sees

    def _one(self, query: str, *params: Any) -> Any:
        row = self.raw.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def stored_line(self, session_id: str, record: Record) -> bytes:
        return bytes(
            self._one(
                "SELECT line FROM handshake.records "
                "WHERE session_id = %s AND segment = %s AND byte_offset = %s",
                session_id,
                int(record.segment.split(".")[0]),
                record.offset,
            )
        )

    def flip_bit(self, session_id: str, record: Record, at: int, bit: int = 0) -> None:
        line = bytearray(self.stored_line(session_id, record))
        line[at] ^= 1 << bit
        self.raw.execute(
            "UPDATE handshake.records SET line = %s "
            "WHERE session_id = %s AND segment = %s AND byte_offset = %s",
            (bytes(line), session_id, int(record.segment.split(".")[0]), record.offset),
        )

    def tear(self, session_id: str, data: bytes) -> None:
        segment, end = self.raw.execute(
            "SELECT segment, byte_offset + octet_length(line) FROM handshake.records WHERE session_id = %s "
            "ORDER BY segment DESC, byte_offset DESC LIMIT 1",
            (session_id,),
        ).fetchone() or (1, 0)
        self.raw.execute(
            "INSERT INTO handshake.records (session_id, segment, byte_offset, line) VALUES (%s, %s, %s, %s)",
            (session_id, segment, end, data),
        )

    def damage_artifact(self, session_id: str, artifact_id: str) -> None:
        data = bytearray(
            self._one(
                "SELECT data FROM handshake.artifacts WHERE session_id = %s AND artifact_id = %s",
                session_id,
                artifact_id,
            )
        )
        data[-1] ^= 1
        self.raw.execute(
            "UPDATE handshake.artifacts SET data = %s WHERE session_id = %s AND artifact_id = %s",
            (bytes(data), session_id, artifact_id),
        )

    @contextmanager
    def hold_elsewhere(self, session_id: str, command: str) -> Iterator[LockHolder]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PG_HOLDER, self.url, session_id, command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        backend = 0
        try:
            assert proc.stdout is not None
            pid, backend = map(int, proc.stdout.readline().split())
            holder = self.store.holder(session_id)
            assert holder is not None and holder.pid == pid
            yield holder
        finally:
            proc.kill()  # as a crash would: the server ends its session, and the lock with it
            proc.wait(timeout=TIMEOUT)
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    stream.close()
            if backend:
                self.server.wait_backend_gone(backend)


def make_harness(name: str, tmp_path: Path) -> Harness:
    if name == "memory":
        return MemoryHarness()
    if name == "postgres":
        return PostgresHarness()
    root = tmp_path / f"root-{len(list(tmp_path.iterdir()))}"
    root.mkdir(mode=0o700)
    return FilesystemHarness(root)
