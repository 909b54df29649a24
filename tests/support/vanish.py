"""A TCP connection that vanishes without a word, as when its machine loses power or a cloud
instance is preempted: the peer is sent neither FIN nor RST, and only its own timers
(keepalives) can tell it the other end is gone.

A test cannot pull a machine's plug, but it can make the kernel forget one socket silently:
it takes a copy of the process's socket (`pidfd_getfd`), acknowledges what the socket has
received (so the peer retransmits nothing, which would draw a RST), puts it in repair mode
(`TCP_REPAIR`: a socket in repair mode is closed without sending anything), kills the
process and closes the copy. Linux only; repair mode needs CAP_NET_ADMIN, and taking another
process's descriptor needs the right to trace it (a test's own child, as root here): a
machine without them skips the test that asks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket

import pytest

_PIDFD_GETFD = 438  # the syscall's number, the same on every Linux architecture
_TCP_REPAIR = 19  # linux/tcp.h


def _copy_fd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copied = int(libc.syscall(_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if copied < 0:
        code = ctypes.get_errno()
        if code in (errno.EPERM, errno.ENOSYS):
            pytest.skip(f"cannot take another process's socket here ({os.strerror(code)})")
        raise OSError(code, os.strerror(code))
    return copied


def _connection_from(pid: int, local_port: int) -> socket.socket:
    """A copy of process `pid`'s TCP socket whose local port is `local_port`."""
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
        except FileNotFoundError:
            continue
        copy = socket.socket(fileno=_copy_fd(pid, int(name)))
        if copy.family in (socket.AF_INET, socket.AF_INET6) and copy.getsockname()[1] == local_port:
            return copy
        copy.close()  # a copy: closing it leaves the process's own socket as it was
    raise AssertionError(f"process {pid} has no TCP connection from port {local_port}")


def vanish(pid: int, local_port: int) -> None:
    """Kill process `pid` so that its TCP connection from `local_port` ends without a word."""
    connection = _connection_from(pid, local_port)
    try:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # any delayed ACK goes now
        try:
            connection.setsockopt(socket.IPPROTO_TCP, _TCP_REPAIR, 1)
        except PermissionError:
            pytest.skip("TCP repair mode needs CAP_NET_ADMIN")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    finally:
        connection.close()  # the last reference: dropped in repair mode, nothing is sent
