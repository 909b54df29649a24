"""Run the real `handshake` command line, photographing the session at every journal sync.

    python -m tests.support.power_snapshots SNAPDIR WORKSPACE -- run JOB --root ROOT ...

Before each fdatasync of a journal segment of a session in `sessions/`, the whole session
directory and WORKSPACE are copied to `SNAPDIR/<n>/` with `meta.json`: the segment and its
size at that sync. Between two syncs the journal only grows, so the copy taken before sync
k holds every byte any instant since sync k-1 could have had on disk; the size at sync k-1
is what a power failure cannot take away. tests/test_power_loss.py cuts the copies between
the two. Nothing else changes: the process does its real fsyncs and runs its real tools.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from handshake_cli.storage import durable

_real_fsync = durable.fsync_fd


def main() -> None:
    snapdir, workspace = Path(sys.argv[1]), Path(sys.argv[2])
    assert sys.argv[3] == "--"
    snapdir.mkdir(parents=True, exist_ok=True)

    def fsync_fd(fd: int, *, data_only: bool = False, path: object = None) -> None:
        named = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if named.suffix == ".jsonl" and named.parent.name == "journal":
            _photograph(snapdir, named, workspace)
        _real_fsync(fd, data_only=data_only, path=path)

    durable.fsync_fd = fsync_fd
    from handshake_cli.cli.app import main as cli_main

    sys.argv = ["handshake", *sys.argv[4:]]
    cli_main()


def _photograph(snapdir: Path, segment: Path, workspace: Path) -> None:
    session = segment.parent.parent
    number = len(os.listdir(snapdir))
    meta = {"segment": segment.name, "size": segment.stat().st_size, "where": session.parent.name}
    target = snapdir / f"{number:04d}"
    if meta["where"] == "sessions":  # in staging/ the session does not exist yet: only its size counts
        shutil.copytree(session, target / "session", ignore=shutil.ignore_patterns("lock"))
        shutil.copytree(workspace, target / "workspace")
    else:
        target.mkdir()
    (target / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
