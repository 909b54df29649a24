"""One writer per session (DESIGN section 2, rule 6), proven with real processes.

A second process that wants a held session is refused with exit 4 and told who holds it
(pid and command). The kernel drops the lock when its holder dies, however it dies, and a
dead holder's leftover owner.json is not mistaken for a live one. Readers (`holder()`) never
take the lock, so they can never block a writer.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.errors import ExitCode, IntegrityError, SessionLocked
from handshake_cli.paths import Paths
from handshake_cli.session.state import initial_head
from handshake_cli.storage import lock
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.lock import LockHolder, SessionLock
from handshake_cli.storage.store import SessionDir, Store

SID = "locked-session"
HOLDER_COMMAND = "handshake run job.toml --session-id locked-session"

# Takes the lock, appends a synced record under it, says so, then obeys stdin.
HOLDER = """
import os, sys
from pathlib import Path
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.lock import SessionLock

session_dir, session_id, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = SessionLock(session_dir, session_id)
lock.acquire(command)
writer = JournalWriter.open(session_dir / "journal", session_id)
writer.append("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run"})
print("locked", os.getpid(), flush=True)
for line in sys.stdin:
    if line.strip() == "append":
        record = writer.append("model.chunk", {"text": "still writing"})
        print("appended", record.seq, flush=True)
    elif line.strip() == "release":
        break
writer.close()
lock.release()
print("released", flush=True)
"""

# Tries to take the lock once; reports what happened as JSON and exits with the error's code.
CONTENDER = """
import json, sys
from pathlib import Path
from handshake_cli.errors import SessionLocked
from handshake_cli.storage.lock import SessionLock

try:
    SessionLock(Path(sys.argv[1]), sys.argv[2]).acquire("handshake recover " + sys.argv[2])
except SessionLocked as exc:
    print(json.dumps({"message": exc.message, "details": exc.details}))
    sys.exit(int(exc.exit_code))
print(json.dumps({"acquired": True}))
"""

# Calls holder() in a loop for a while, as `inspect` would, and reports what it saw.
READER = """
import json, sys, time
from pathlib import Path
from handshake_cli.storage.lock import holder

session_dir, seconds = Path(sys.argv[1]), float(sys.argv[2])
print("reading", flush=True)
seen, calls, deadline = set(), 0, time.monotonic() + seconds
while time.monotonic() < deadline:
    found = holder(session_dir)
    seen.add(found.pid if found else None)
    calls += 1
print(json.dumps({"calls": calls, "seen": sorted(seen, key=str)}), flush=True)
"""

TIMEOUT = 30.0


@pytest.fixture
def session(tmp_path: Path) -> SessionDir:
    return Store(Paths(tmp_path / "root")).create_session({}, {}, head_for=initial_head, session_id=SID)


def read_line(proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> str:
    """One line from a child's stdout, failing (not hanging) when it does not come."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"child {proc.pid} said nothing for {timeout}s (so far {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"child {proc.pid} exited before a full line ({line!r}): {stderr}")
        line += chunk
    return line.decode().strip()


def spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        cwd=Path(__file__).parent,
    )


def contend(session: SessionDir) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", CONTENDER, str(session.path), SID],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def tell(proc: subprocess.Popen[bytes], command: str) -> str:
    assert proc.stdin is not None
    proc.stdin.write(command.encode() + b"\n")
    proc.stdin.flush()
    return read_line(proc)


@pytest.fixture
def start_holder(session: SessionDir) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start a process that holds the session's lock; it is killed after the test if still alive."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = spawn(HOLDER, str(session.path), SID, HOLDER_COMMAND)
        started.append(proc)
        assert read_line(proc) == f"locked {proc.pid}"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()


# -- a second writer -----------------------------------------------------------------------------


def test_a_second_process_is_refused_and_told_who_holds_the_session(
    session: SessionDir, start_holder: Callable[[], subprocess.Popen[bytes]]
) -> None:
    first = start_holder()

    code, refused = contend(session)

    assert code == ExitCode.LOCKED  # exit 4
    assert f"pid {first.pid}" in refused["message"]
    assert HOLDER_COMMAND in refused["message"]
    assert SID in refused["message"]
    assert refused["details"]["lock_holder"]["pid"] == first.pid
    assert refused["details"]["lock_holder"]["command"] == HOLDER_COMMAND

    # The refused attempt did not disturb the holder, which goes on writing and lets go.
    assert tell(first, "append") == "appended 3"
    assert tell(first, "release") == "released"
    assert first.wait(timeout=TIMEOUT) == 0

    assert lock.holder(session.path) is None
    assert not (session.path / lock.OWNER_FILE).exists()
    assert contend(session) == (0, {"acquired": True})
    result = scan(session.journal, SID)
    assert result.damage is None
    assert [r.type for r in result.records] == ["session.created", "session.state_change", "model.chunk"]


def test_a_second_lock_in_the_same_process_is_refused_too(session: SessionDir) -> None:
    first = SessionLock(session.path, SID)
    first.acquire("handshake run job.toml")
    try:
        with pytest.raises(SessionLocked) as raised:
            SessionLock(session.path, SID).acquire("handshake checkpoint")
        assert f"pid {os.getpid()}" in raised.value.message
        assert "handshake run job.toml" in raised.value.message
    finally:
        first.release()
    second = SessionLock(session.path, SID)
    second.acquire("handshake checkpoint")
    second.release()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_the_lock_is_free_again_after_the_holder_dies(
    session: SessionDir, start_holder: Callable[[], subprocess.Popen[bytes]], how: str
) -> None:
    first = start_holder()
    first.send_signal(getattr(signal, how))
    first.wait(timeout=TIMEOUT)  # reaped, as the user's shell would

    # It never got to clean up: its owner.json is still there, naming a dead process.
    stale = json.loads((session.path / lock.OWNER_FILE).read_text())
    assert stale["pid"] == first.pid
    assert lock.holder(session.path) is None

    mine = SessionLock(session.path, SID)
    mine.acquire("handshake recover locked-session")
    try:
        found = lock.holder(session.path)
        assert found is not None
        assert (found.pid, found.command) == (os.getpid(), "handshake recover locked-session")
        code, refused = contend(session)
        assert code == 4 and f"pid {os.getpid()}" in refused["message"]
        # What the dead holder synced is all there, and the journal takes more.
        with JournalWriter.open(session.journal, SID) as writer:
            writer.append("recovery.started", {})
        assert [r.seq for r in scan(session.journal, SID).records] == [1, 2, 3]
    finally:
        mine.release()
    assert contend(session) == (0, {"acquired": True})


# -- readers --------------------------------------------------------------------------------------


def test_holder_reports_a_live_holder_without_taking_the_lock(
    session: SessionDir, start_holder: Callable[[], subprocess.Popen[bytes]]
) -> None:
    first = start_holder()

    for _ in range(20):
        found = lock.holder(session.path)
        assert found is not None
        assert (found.pid, found.command, found.host) == (first.pid, HOLDER_COMMAND, socket.gethostname())
        assert found.is_alive() is True

    # Still the first process's lock: others are refused, and it writes on undisturbed.
    code, refused = contend(session)
    assert code == 4 and f"pid {first.pid}" in refused["message"]
    assert tell(first, "append") == "appended 3"
    assert tell(first, "release") == "released"
    assert first.wait(timeout=TIMEOUT) == 0


def test_readers_never_block_a_writer(session: SessionDir) -> None:
    """A reader polling holder() as fast as it can never makes a writer's attempt fail."""
    reader = spawn(READER, str(session.path), "1.0")
    try:
        assert read_line(reader) == "reading"
        attempts = 0
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            writer_lock = SessionLock(session.path, SID)
            writer_lock.acquire("handshake run job.toml")  # raises if a reader held it
            writer_lock.release()
            attempts += 1
        report = json.loads(read_line(reader))
    finally:
        if reader.poll() is None:
            reader.kill()
        reader.wait(timeout=TIMEOUT)
        for stream in (reader.stdin, reader.stdout, reader.stderr):
            if stream:
                stream.close()
    assert attempts > 20 and report["calls"] > 20
    # The reader saw this process holding the session, or nobody: never itself.
    assert set(report["seen"]) <= {os.getpid(), None}


def test_holder_of_a_session_nobody_ever_locked(session: SessionDir) -> None:
    assert lock.holder(session.path) is None
    assert not (session.path / lock.LOCK_FILE).exists()
    assert not (session.path / lock.OWNER_FILE).exists()


def _write_owner(session: SessionDir, **fields: Any) -> None:
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": "2025-01-01T00:00:00Z",
        "command": "handshake run job.toml",
        "pid_start": lock._process_start(os.getpid()),
    }
    (session.path / lock.OWNER_FILE).write_text(json.dumps(me | fields))


def test_a_recycled_pid_is_not_mistaken_for_the_holder(session: SessionDir) -> None:
    # A live process with the recorded pid, but started at another time: not the holder.
    _write_owner(session, pid_start=(lock._process_start(os.getpid()) or 0) + 1)
    assert lock.holder(session.path) is None

    _write_owner(session)
    found = lock.holder(session.path)
    assert found is not None and found.pid == os.getpid()


def test_a_holder_on_another_host_is_reported_as_is(session: SessionDir) -> None:
    _write_owner(session, host="some-other-host", pid=999_999_999)
    found = lock.holder(session.path)
    assert found is not None
    assert found.is_alive() is None
    assert "some-other-host" in found.describe()


@pytest.mark.parametrize("content", ["", "{", "[]", '{"pid": 1}', '{"pid": "x", "host": 1}'])
def test_an_unreadable_owner_file_means_no_known_holder(session: SessionDir, content: str) -> None:
    (session.path / lock.OWNER_FILE).write_text(content)
    assert lock.holder(session.path) is None


def test_lock_and_owner_files_are_private(session: SessionDir) -> None:
    old = os.umask(0)
    try:
        held = SessionLock(session.path, SID)
        held.acquire("handshake run job.toml")
    finally:
        os.umask(old)
    try:
        for name in (lock.LOCK_FILE, lock.OWNER_FILE):
            assert stat.S_IMODE(os.lstat(session.path / name).st_mode) == 0o600, name
        owner = json.loads((session.path / lock.OWNER_FILE).read_text())
        assert LockHolder(**owner) == lock.holder(session.path)
    finally:
        held.release()
    assert not (session.path / lock.OWNER_FILE).exists()


def test_a_planted_lock_link_is_not_followed(session: SessionDir, tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    victim.chmod(0o644)
    os.symlink(victim, session.path / lock.LOCK_FILE)

    with pytest.raises((OSError, IntegrityError)):
        SessionLock(session.path, SID).acquire("handshake run job.toml")

    assert victim.read_text() == "keep me"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not (session.path / lock.OWNER_FILE).exists()


def test_a_planted_lock_link_is_an_integrity_error(session: SessionDir, tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    os.symlink(victim, session.path / lock.LOCK_FILE)

    with pytest.raises(IntegrityError):
        SessionLock(session.path, SID).acquire("handshake run job.toml")
