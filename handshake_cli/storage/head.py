"""head.json: a cache of a session's folded state, next to its journal.

The store keeps it without knowing what it says: the session layer decides its fields
(`handshake_cli.session.state`). It is replaced atomically and never fsynced, because the
journal can always rebuild it; whoever reads it checks it against the journal's last record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handshake_cli.errors import EnvironmentFailure, IntegrityError
from handshake_cli.storage import durable

HEAD_FILE = "head.json"
HEAD_FORMAT = 1


def write(session_dir: Path, fields: dict[str, Any]) -> bool:
    """Replace head.json atomically; whether it was written. A full disk or an I/O error here
    never stops a session (the old head.json stays, readers see it lag the journal and fold
    instead, and recovery rewrites it), so that failure is swallowed."""
    payload = {"format_version": HEAD_FORMAT, **fields}
    data = json.dumps(payload, indent=2, sort_keys=True).encode() + b"\n"
    try:
        durable.atomic_write(session_dir / HEAD_FILE, data, durable=False)
    except EnvironmentFailure:
        return False
    return True


def read(session_dir: Path) -> dict[str, Any] | None:
    """The cached head, or None when it is missing or unreadable (it is only a cache)."""
    try:
        head = json.loads(durable.read_bytes(session_dir / HEAD_FILE))
    except FileNotFoundError:
        return None
    except IntegrityError:
        raise
    except (OSError, EnvironmentFailure, ValueError):
        return None
    # A head from another format version is a cache we cannot trust: rebuild instead.
    return head if isinstance(head, dict) and head.get("format_version") == HEAD_FORMAT else None
