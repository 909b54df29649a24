"""What gc sweeps as debris from a session that stays, and when a file is old enough to go.

Debris is what interrupted work leaves and nothing reads again: `.tmp-*` files of atomic
writes (in the session and among its loose artifacts), checkpoint requests nobody will answer
or read, and quarantine files past `quarantine_older_than`. Anything younger than the grace
may still be in use and stays. The collection loop removes it, under the session's lock.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from handshake_cli.maintenance.gc.policy import Policy
from handshake_cli.storage import durable
from handshake_cli.storage.store import SessionDir

Clock = Callable[[], float]
# (kind, path, entry): "temp", "request" or "quarantine" here; "trash" and "staging" in collect.
Debris = tuple[str, Path, os.DirEntry[str]]

_REQUEST = re.compile(r"[A-Za-z0-9]+(\.done)?\.json", re.ASCII)


def session_debris(session: SessionDir, policy: Policy, now: Clock) -> list[Debris]:
    """What may go from a session that stays."""
    found: list[Debris] = []
    grace = policy.grace
    for directory in (session.path, session.path / "artifacts" / "objects"):
        for entry in entries(directory):
            if entry.name.startswith(durable.TEMP_PREFIX) and older(entry, grace, now):
                found.append(("temp", Path(entry.path), entry))
    for entry in entries(session.path / "requests"):
        temp = entry.name.startswith(durable.TEMP_PREFIX)
        if (temp or _REQUEST.fullmatch(entry.name)) and older(entry, grace, now):
            found.append(("temp" if temp else "request", Path(entry.path), entry))
    if policy.quarantine_older_than is not None:
        for entry in entries(session.quarantine):
            if entry.is_file(follow_symlinks=False) and older(entry, policy.quarantine_older_than, now):
                found.append(("quarantine", Path(entry.path), entry))
    return found


def older(entry: os.DirEntry[str], seconds: float, now: Clock) -> bool:
    """Last modified at least `seconds` ago; False for an entry gone since it was listed."""
    try:
        return now() - entry.stat(follow_symlinks=False).st_mtime >= seconds
    except FileNotFoundError:
        return False


def entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of a real directory (not a link); none when it is missing."""
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return []
        with os.scandir(directory) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
