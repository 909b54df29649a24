"""Reading a session's files afterwards, as recovery or a person would: its records, its
directory, the bytes of every file, and the trace the recover_jobs tools leave."""

from __future__ import annotations

from pathlib import Path

from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.scan import scan


def records_of(root: Path, session_id: str) -> list[Record]:
    result = scan(root / "sessions" / session_id / "journal", session_id)
    assert result.corruption is None, result.corruption
    return result.records


def only_session(root: Path) -> str:
    sessions = sorted(p.name for p in (root / "sessions").iterdir())
    assert len(sessions) == 1, sessions
    return sessions[0]


def session_dir(root: Path, session_id: str) -> Path:
    return root / "sessions" / session_id


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a directory and its bytes (mtimes aside)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def files_of(directory: Path) -> dict[str, bytes]:
    """Every regular file below a directory and its bytes (links left out)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def effects(workspace: Path) -> list[str]:
    """The lines tests/data/recover_jobs/effect.py wrote: one per `send` that took effect."""
    log = workspace / "effects.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []
