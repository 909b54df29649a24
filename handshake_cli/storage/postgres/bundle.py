"""A PostgreSQL session as the files of a bundle (`export`), and a bundle's files as one (`import`).

The rows already hold the files' bytes: a segment is its rows in offset order, session.toml
and head.json are kept as written, an artifact is a loose object, a quarantined run of bytes
a file of quarantine/. So an export from this store gives the bundle the filesystem store
would give for the same session, and an import keeps every byte, damage included (a torn
last line stays torn, for recovery to cut; a loose object whose bytes no longer match its
name is kept as it is, for `inspect --verify` to report).
"""

from __future__ import annotations

import time
from pathlib import Path

from handshake_cli.errors import IntegrityError
from handshake_cli.storage import durable
from handshake_cli.storage.artifacts import ARTIFACT_ID, ArtifactStore
from handshake_cli.storage.contract import SessionFile
from handshake_cli.storage.journal.codec import Record, check_content
from handshake_cli.storage.journal.records import RecordInvalid
from handshake_cli.storage.journal.scan import list_segments
from handshake_cli.storage.postgres.connect import Connection

QUARANTINE_NAME = r"quarantine/[A-Za-z0-9][A-Za-z0-9._-]{0,240}\.torn"


class Bytes(SessionFile):
    """A file of the bundle, read from the database whole."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.size, self.mtime = name, len(data), int(time.time())
        self._data = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        part = self._data[: n if n >= 0 else len(self._data)]
        self._data = self._data[len(part) :]
        return bytes(part)


def segment(conn: Connection, session_id: str, number: int) -> bytes:
    """One segment's bytes: its rows in offset order, read in one statement."""
    rows = conn.execute(
        "SELECT line FROM handshake.records WHERE session_id = %s AND segment = %s ORDER BY byte_offset",
        (session_id, number),
    )
    return b"".join(bytes(row[0]) for row in rows)


def insert(conn: Connection, session_id: str, staged: Path, config: bytes, created_at: str) -> None:
    """In the caller's transaction: every file of `staged/sessions/<id>/` as the session's rows."""
    top = staged / "sessions" / session_id
    conn.execute(
        "INSERT INTO handshake.sessions (session_id, config, created_at) VALUES (%s, %b, %s)",
        (session_id, config, created_at),
    )
    with conn.cursor().copy(
        "COPY handshake.records (session_id, segment, byte_offset, seq, type, line) FROM STDIN"
    ) as copy:
        for name in list_segments(top / "journal"):
            number, offset = int(name.split(".")[0]), 0
            for line in durable.read_bytes(top / "journal" / name).splitlines(keepends=True):
                copy.write_row((session_id, number, offset, *_hints(line, name, offset), line))
                offset += len(line)
    for ident, data in _artifacts(top / "artifacts"):
        conn.execute(
            "INSERT INTO handshake.artifacts (session_id, artifact_id, data) VALUES (%s, %s, %b)",
            (session_id, ident, data),
        )
    if (top / "head.json").is_file():
        conn.execute(
            "INSERT INTO handshake.heads (session_id, head) VALUES (%s, %b)",
            (session_id, durable.read_bytes(top / "head.json")),
        )
    if (top / "quarantine").is_dir():
        for path in sorted((top / "quarantine").iterdir()):
            conn.execute(
                "INSERT INTO handshake.quarantine (session_id, name, data) VALUES (%s, %s, %b)",
                (session_id, f"quarantine/{path.name}", durable.read_bytes(path)),
            )


def _hints(line: bytes, name: str, offset: int) -> tuple[int | None, str | None]:
    """The seq and type columns of a line: what its bytes say when they are intact, else none."""
    content = line.removesuffix(b"\n")
    if check_content(content) is None:
        return None, None
    try:
        record = Record.decode(content, name, offset)
    except RecordInvalid:
        return None, None
    return record.seq, record.type


def _artifacts(folder: Path) -> list[tuple[str, bytes]]:
    """Every artifact of a bundle's artifacts/: loose objects as their bytes are (damaged or
    not), then those of pack frames that read back intact."""
    if not folder.is_dir():
        return []
    artifacts = ArtifactStore(folder)
    found: dict[str, bytes] = {}
    for ident in artifacts.loose_ids():
        found[ident] = durable.read_bytes(artifacts.objects / ident)
    for frame in artifacts.frames():
        if frame.artifact_id not in found and ARTIFACT_ID.fullmatch(frame.artifact_id):
            try:
                found[frame.artifact_id] = artifacts.get(frame.artifact_id)
            except IntegrityError:  # a damaged frame: its artifact is missing here, as a reader says
                continue
    return sorted(found.items())


def artifact_ids(conn: Connection, session_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT artifact_id FROM handshake.artifacts WHERE session_id = %s ORDER BY artifact_id",
        (session_id,),
    )
    return [str(row[0]) for row in rows]
