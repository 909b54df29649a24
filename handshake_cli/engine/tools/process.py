"""Running a tool's program: argv without a shell, a small environment, and a timeout.

A command tool (and its probe) runs from an argv list, never through a shell, with the
workspace as its current directory, its arguments as JSON on stdin and a small
environment: a few locale and path variables, the ones the job names, and the three
HANDSHAKE_* variables. It ignores SIGINT and SIGTERM and stays in handshake's process
group, so a Ctrl-C lets a running tool finish while killing the whole group still kills it.
The command provider starts its model program with the same signal handling.

This module knows processes, bytes and exit statuses; what a call's outcome means to the
model (capped output, error kinds) is the gate's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Passed through from handshake's environment when present; everything else must be named
# in the tool's `env`, so credentials reach only the tools that were given them.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
ENV_IDEMPOTENCY_KEY = "HANDSHAKE_IDEMPOTENCY_KEY"
ENV_SESSION_ID = "HANDSHAKE_SESSION_ID"
ENV_TOOL_CALL_ID = "HANDSHAKE_TOOL_CALL_ID"


@dataclass(frozen=True)
class Finished:
    """A process that ran to its end (on its own, or killed by a signal: `returncode` < 0)."""

    returncode: int
    stdout: bytes
    stderr: bytes


class NotStarted(Exception):
    """The program could not be started; `reason` says why (the OS's words)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TimedOut(Exception):
    """The program ran past its timeout and was killed."""


def tool_environment(
    environ: Mapping[str, str],
    names: Iterable[str],
    *,
    idempotency_key: str,
    session_id: str,
    tool_call_id: str,
) -> dict[str, str]:
    """The whole environment a command tool or probe sees; nothing else leaks from handshake's."""
    env = {name: environ[name] for name in (*BASE_ENV, *names) if name in environ}
    env[ENV_IDEMPOTENCY_KEY] = idempotency_key
    env[ENV_SESSION_ID] = session_id
    env[ENV_TOOL_CALL_ID] = tool_call_id
    return env


def ignore_stop_signals() -> None:
    # Runs in the child between fork and exec. SIG_IGN survives exec, so a Ctrl-C (or a
    # SIGTERM) sent to handshake's process group lets the tool finish; SIGKILL still works.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stdin_json(args: Any) -> bytes:
    """A call's arguments as the tool reads them on stdin: one line of JSON.

    Raises TypeError or ValueError when they are not JSON."""
    try:
        text = json.dumps(args, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape everything rather than send bad UTF-8
        return (json.dumps(args, allow_nan=False) + "\n").encode("ascii")


def run(argv: tuple[str, ...], *, cwd: Path, env: dict[str, str], stdin: bytes, timeout: float) -> Finished:
    """Run `argv` to completion or to its timeout; NotStarted or TimedOut otherwise.

    Stdin, stdout and stderr are unlinked temporary files, not pipes: the timeout is about
    the tool's own process, not about whoever still holds its output (a daemon it started,
    `cmd &`), and a tool whose handshake has gone away can still write its output and
    finish rather than die of SIGPIPE halfway through its effect.
    """
    with ExitStack() as files:
        try:
            stdin_file, stdout_file, stderr_file = (
                files.enter_context(tempfile.TemporaryFile()) for _ in range(3)
            )
            stdin_file.write(stdin)
            stdin_file.seek(0)
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=stderr_file,
                close_fds=True,
                preexec_fn=ignore_stop_signals,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise NotStarted(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) from exc
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Not killpg: the tool shares handshake's process group. What it started itself
            # is left running.
            proc.kill()
            proc.wait()
            raise TimedOut from None
        return Finished(returncode, _read_from_start(stdout_file), _read_from_start(stderr_file))


def _read_from_start(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- a process left behind by a handshake that died (an MCP server in its own session) -----

STOP_WAIT_SECONDS = 10.0  # for a SIGKILLed process group to go; only an unkillable one (D state) takes it


class StillRunning(Exception):
    """A process group did not go within STOP_WAIT_SECONDS of its SIGKILL."""


def identity(pid: int) -> dict[str, Any] | None:
    """What tells the process `pid` from any later one given its pid: its process group, its
    start time (field 22 of /proc/PID/stat, clock ticks since boot) and the host. None where
    there is no /proc, or when it has already gone."""
    fields = _stat(pid)
    if fields is None or fields[0] == b"Z":
        return None
    return {"pid": pid, "pgid": int(fields[2]), "pid_start": int(fields[19]), "host": _hostname()}


def stop_left_behind(process: Mapping[str, Any]) -> list[int]:
    """SIGKILL the process group of `process` (an `identity()`) when it is still the same
    process, or, its leader gone, members of its group started after it; return once every
    one of them has gone (exited: a zombie nobody reaps counts). Returns the pids killed:
    none when it runs on another host, has gone, or its pid now names another process.
    Raises StillRunning when one does not go."""
    if process.get("host") != _hostname():
        return []
    pid, pgid, started = int(process["pid"]), int(process["pgid"]), int(process["pid_start"])
    leader = _stat(pid)
    if leader is not None and int(leader[19]) != started:
        return []  # the pid names another process now: the group it led has long gone
    # Its group, in the session it led (the SDK starts a server with setsid), started no
    # earlier than it; exited members (zombies) are gone already.
    members = [
        other
        for other, fields in _processes()
        if (int(fields[2]), int(fields[3])) == (pgid, pgid)
        and int(fields[19]) >= started
        and fields[0] != b"Z"
    ]
    if not members:
        return []
    waiters = {other: _pidfd(other) for other in members}
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        for other, fd in waiters.items():
            _wait_gone(other, fd)
    finally:
        for fd in waiters.values():
            if fd is not None:
                os.close(fd)
    return sorted(members)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # an old kernel, or already gone: /proc says when it goes
        return None


def _wait_gone(pid: int, fd: int | None) -> None:
    """Until `pid` has exited: its pidfd becomes readable then; without one, /proc polled."""
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(STOP_WAIT_SECONDS * 1000):
            raise StillRunning(f"pid {pid} did not go within {STOP_WAIT_SECONDS:g} s of its SIGKILL")
        return
    while (fields := _stat(pid)) is not None and fields[0] != b"Z":
        if time.monotonic() > deadline:
            raise StillRunning(f"pid {pid} did not go within {STOP_WAIT_SECONDS:g} s of its SIGKILL")
        time.sleep(0.005)


def _stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, pgrp, session, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parens: count from its last paren.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields if len(fields) > 19 else None


def _processes() -> Iterable[tuple[int, list[bytes]]]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit() and (fields := _stat(int(name))) is not None:
            yield int(name), fields


def _hostname() -> str:
    import socket

    return socket.gethostname()
