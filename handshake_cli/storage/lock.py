"""One writer per session: an flock on `<session>/lock` plus `owner.json` for diagnostics.

The lock itself is an flock on `lock`, held by the writing process, so the kernel drops it when that
process dies, however it dies. `owner.json` says who holds it (pid, host, start time,
command); it is written after the lock is taken and removed before it is released. A
crash leaves it behind, which is why `holder()` checks that the process is still the one
that wrote it before calling a session locked. Readers use `holder()` and never touch the
lock, so they can never block a writer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from handshake_cli.errors import EnvironmentFailure, IntegrityError, NotFound, SessionLocked
from handshake_cli.storage import durable

LOCK_FILE = "lock"
OWNER_FILE = "owner.json"


class LockHolderJson(TypedDict):
    """`owner.json`, and a holder as the JSON output shows it (`lock_holder`)."""

    pid: int
    host: str
    started_at: str
    command: str
    pid_start: int | None


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started_at: str
    command: str
    # Process start time in clock ticks since boot (Linux), to tell a live holder from a
    # recycled pid after a crash.
    pid_start: int | None = None

    def as_json(self) -> LockHolderJson:
        return {
            "pid": self.pid,
            "host": self.host,
            "started_at": self.started_at,
            "command": self.command,
            "pid_start": self.pid_start,
        }

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command}), since {self.started_at}"

    def is_alive(self) -> bool | None:
        """True/False when this host can tell; None for a holder on another host."""
        if self.host != _hostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        fields = _proc_stat(self.pid)
        if fields is None:
            return True  # no /proc here: a live pid is the best evidence there is
        if fields[0] == b"Z":
            return False  # exited, not yet reaped: its flock is already gone
        return self.pid_start is None or int(fields[19]) == self.pid_start


def _proc_stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parens: count from its last paren.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields if len(fields) > 19 else None


def _process_start(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def holder(session_dir: Path) -> LockHolder | None:
    """Who holds the session's lock, if a live process does. Never takes the lock."""
    try:
        raw = durable.read_bytes(session_dir / OWNER_FILE)
        info = json.loads(raw)
        found = LockHolder(
            int(info["pid"]),
            str(info["host"]),
            str(info["started_at"]),
            str(info["command"]),
            info.get("pid_start"),
        )
    except (OSError, EnvironmentFailure, ValueError, KeyError, TypeError):
        return None  # diagnostics only: the flock, not this file, is what excludes a writer
    return None if found.is_alive() is False else found


def try_lock(session_dir: Path) -> int | None:
    """Take the session's writer lock without waiting: the flock SessionLock takes on the
    same file, so each excludes the other. Returns the descriptor that holds it (close it to
    let go), or None when another process holds it. FileNotFoundError: the session is gone.

    Not SessionLock itself: gc holds a lock for about a millisecond, and SessionLock's
    owner.json (an atomic write, then an unlink) costs ~0.9 ms per session, most of what gc
    spends on one. A writer that meets gc in that instant is refused as by any holder that
    has not said who it is yet.
    """
    import fcntl

    path = session_dir / LOCK_FILE
    flags = os.O_RDWR | durable.NOFOLLOW | durable.CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        try:
            fd = durable.create_file(path)  # 0600, O_EXCL; raises FileNotFoundError if the session went
            os.close(fd)
        except FileExistsError:
            pass
        fd = os.open(path, flags)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class SessionLock:
    """Exclusive, non-blocking. `acquire` raises `SessionLocked` naming the holder.

    An flock on `<session>/lock`, taken directly (as `try_lock` does on the same file): the
    lock file is created in the session directory but never the directory itself, so a writer
    that loses a race with gc (which renames the session away) finds nothing, instead of
    making an empty session directory that readers would take for a damaged session."""

    def __init__(self, session_dir: Path, session_id: str) -> None:
        self.session_dir = session_dir
        self.session_id = session_id
        self._fd: int | None = None

    def acquire(self, command: str | None = None) -> LockHolder:
        """Take the lock and say who holds it in owner.json; returns what owner.json says."""
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | durable.NOFOLLOW | durable.CLOEXEC
        try:
            fd = os.open(self.session_dir / LOCK_FILE, flags, durable.FILE_MODE)
        except FileNotFoundError:
            raise NotFound(f"session {self.session_id} was removed (by gc) just now") from None
        except OSError as exc:  # e.g. ELOOP: a symlink planted at the lock path
            if durable.is_environment(exc):
                raise durable.environment_failure(exc, "lock", self.session_dir / LOCK_FILE) from exc
            raise IntegrityError(
                f"cannot lock session {self.session_id}: {self.session_dir / LOCK_FILE}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            found = holder(self.session_dir)
            who = found.describe() if found else "another process (it has not said who yet)"
            raise SessionLocked(
                f"session {self.session_id} is locked by {who}",
                details={"lock_holder": found.as_json() if found else None},
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if not os.path.lexists(self.session_dir / "session.toml"):
            # gc moved the session away between our look and our lock: say the session is gone.
            os.close(fd)
            raise NotFound(f"session {self.session_id} was removed (by gc) just now")
        self._fd = fd
        self._shield()
        me = LockHolder(
            pid=os.getpid(),
            host=_hostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            command=command or " ".join(["handshake", *sys.argv[1:]]),
            pid_start=_process_start(os.getpid()),
        )
        try:
            durable.atomic_write(
                self.session_dir / OWNER_FILE,
                json.dumps(me.as_json(), sort_keys=True).encode(),
                durable=False,
            )
        except BaseException:
            self.release()  # nothing was written under it: let the next writer have it
            raise
        return me

    def release(self) -> None:
        """Never raises (it runs on the way out of every writer, an error's way included): an
        owner.json that cannot be removed names a process that is about to end, which
        `holder()` tells from a live one."""
        try:
            os.unlink(self.session_dir / OWNER_FILE)
        except OSError:
            pass
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def _shield(self) -> None:
        """owner.json names this process, and `handshake checkpoint` sends SIGUSR1 to whoever
        it names. A holder that serves requests (the runner) installs its own handler; until
        then, and in holders that never serve them (a recovery that only blocks, a checkpoint
        of a stopped session), the default action would kill the writer. Ignore it instead:
        the asker waits, and takes the checkpoint itself once the lock is free.

        For the rest of the process's life, not only while the lock is held: an asker that
        read owner.json just before the release sends its signal just after, and a run that
        had completed its session would then die of it (exit -10) on its way out."""
        try:
            if signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        except ValueError:  # not the main thread: signals are the main thread's business
            pass

    def __enter__(self) -> SessionLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def this_process() -> dict[str, str | int]:
    """Who is writing: the host name and pid that a record opening a process carries as
    `process` (`session.created`, `recovery.started`, the `checkpoint` command's checkpoint;
    docs/FORMAT.md section 5), so that a session's history can name each process that wrote it."""
    return {"host": _hostname(), "pid": os.getpid()}


def _hostname() -> str:
    import socket  # a few ms of start-up (its enums) that only taking or judging a lock needs

    return socket.gethostname()
