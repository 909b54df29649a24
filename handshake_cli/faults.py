"""Named crash points, for the tests that prove the durability rules.

`HANDSHAKE_CRASH_AT=after_intent` (or `after_intent:3` for the third time that point is
reached) makes the process SIGKILL itself there: no cleanup, no flush, exactly what a crash
leaves. Unset, `crash_point` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

ENV = "HANDSHAKE_CRASH_AT"
POINTS = (
    "mid_stream",  # after a chunk record was appended (not synced)
    "before_intent",  # a tool call is next; its intent is not journaled
    "after_intent",  # the intent is durable; the tool has not started
    "before_result",  # the tool returned; its result is not journaled
    "after_result",  # the result is appended but not yet synced with its checkpoint
    "mid_checkpoint",  # the checkpoint frame is written and synced; its record is not
    "after_checkpoint",  # the checkpoint record is durable
    "after_ending",  # a session.completed/failed/cancelled or recovery.blocked is durable; head.json is not
    "recovery_after_quarantine",  # a torn tail's bytes are in quarantine/; the journal is not cut yet
    "recovery_started",  # recovery.started is appended, nothing else
    "recovery_after_probe",  # a probe answered; its answer is not journaled
)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.partition(":")
    return point, int(count) if count else 1


_target = _parse(os.environ.get(ENV))
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    if _target is None or _target[0] != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)


# -- injected I/O faults ------------------------------------------------------------------
#
# `HANDSHAKE_FAULT=fdatasync:3:EIO` makes the third `os.fdatasync` that handshake's own I/O
# layer makes fail with EIO, the way the kernel would report it; `write:5:short` makes the
# fifth `os.write` write only half its bytes; `write:5+:ENOSPC` fails the fifth and every
# later one (a disk that stays full); `replace:1+:ENOSPC@head.json` counts only the calls
# whose file's path contains `head.json`. Several faults are separated by commas. Calls the
# standard library makes for itself (imports, pipes, a tool's own files) are not counted:
# only those whose caller is one of `SITES` (through `durable`, which is the I/O layer and is
# attributed to its caller). With `HANDSHAKE_FAULT_LOG=FILE`, each injected fault, each
# later fsync of a file whose fsync failed, and at exit the count of every call, go to FILE
# as JSON lines, for the suite that sweeps N (tests/test_faults.py). Unset, nothing is
# wrapped: `os` is untouched.

FAULT_ENV = "HANDSHAKE_FAULT"
FAULT_LOG_ENV = "HANDSHAKE_FAULT_LOG"
SYSCALLS = (
    "open",
    "read",
    "pread",
    "write",
    "pwrite",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "replace",
    "link",
    "mkdir",
    "rmdir",
    "unlink",
)
# The modules whose I/O is injected into: the store and its writers, and the library they
# delegate file work to (tarfile, on import).
SITES = (
    "handshake_cli.storage.journal",
    "handshake_cli.storage.artifacts",
    "handshake_cli.storage.head",
    "handshake_cli.storage.lock",
    "handshake_cli.storage.store",
    "handshake_cli.storage.filesystem",
    "handshake_cli.maintenance.gc",
    "handshake_cli.storage.trash",
    "handshake_cli.maintenance.bundle",
    "handshake_cli.recovery",
    "handshake_cli.storage.requests",
    "handshake_cli.session.checkpoints",
    "handshake_cli.engine.launch",
    "handshake_cli.engine.loop",
    "handshake_cli.readers.describe",
    "handshake_cli.readers.verify",
    "tarfile",
)
_LAYER = "handshake_cli.storage.durable"
_FD_CALLS = frozenset({"read", "pread", "write", "pwrite", "fsync", "fdatasync", "ftruncate"})


class _Fault:
    def __init__(self, call: str, nth: int, sticky: bool, kind: str, within: str | None) -> None:
        self.call, self.nth, self.sticky, self.kind, self.within = call, nth, sticky, kind, within
        self.seen = 0  # calls this fault counted (all of `call`, or those on a path with `within`)

    def matches(self, name: str, args: Any) -> bool:
        return self.within is None or self.within in str(_describe_target(name, args).get("path"))

    def fires(self, count: int) -> bool:
        return count == self.nth or (self.sticky and count > self.nth)


def parse_faults(value: str) -> list[_Fault]:
    """`call:N[+]:ERRNO|short[@PATH-PART]`, comma-separated."""
    import errno

    found = []
    for part in value.split(","):
        spec, _, within = part.strip().partition("@")
        call, nth, kind = spec.split(":")
        if call not in SYSCALLS:
            raise ValueError(f"{FAULT_ENV}: {call!r} is not one of {', '.join(SYSCALLS)}")
        if kind != "short" and not hasattr(errno, kind):
            raise ValueError(f"{FAULT_ENV}: {kind!r} is no errno name")
        found.append(_Fault(call, int(nth.rstrip("+")), nth.endswith("+"), kind, within or None))
    return found


class _Injector:
    def __init__(self, faults: list[_Fault], log: str | None) -> None:
        self.faults = faults
        self.log = log
        self.counts: dict[str, int] = {}
        self.failed_files: set[tuple[int, int]] = set()  # (dev, ino) whose fsync failed
        self.real: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        import atexit

        for name in SYSCALLS:
            self.real[name] = getattr(os, name)
            setattr(os, name, self._wrap(name))
        atexit.register(self._write_counts)

    def _wrap(self, name: str) -> Callable[..., Any]:
        real = self.real[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            site = _site()
            if site is None:
                return real(*args, **kwargs)
            self.counts[name] = self.counts.get(name, 0) + 1
            if name in ("fsync", "fdatasync") and self.failed_files:
                self._note_resync(name, args[0], site)
            for fault in self.faults:
                if fault.call != name or not fault.matches(name, args):
                    continue
                fault.seen += 1
                if fault.fires(fault.seen):
                    return self._inject(fault, name, site, real, args, kwargs)
            return real(*args, **kwargs)

        return call

    def _inject(
        self, fault: _Fault, name: str, site: str, real: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        import errno

        entry: dict[str, Any] = {"event": "fault", "call": name, "n": fault.seen, "kind": fault.kind}
        entry.update(site=site, **_describe_target(name, args))
        if fault.kind == "short":
            if name in ("write", "pwrite") and len(args[1]) > 1:
                data = bytes(args[1])
                self._log(entry)
                return real(args[0], data[: len(data) // 2], *args[2:])
            return real(*args, **kwargs)  # nothing to cut short: the call is not counted as a fault
        if name in ("fsync", "fdatasync"):
            try:
                st = os.fstat(args[0])
                self.failed_files.add((st.st_dev, st.st_ino))
            except OSError:
                pass
        self._log(entry)
        code = getattr(errno, fault.kind)
        raise OSError(code, os.strerror(code), None if name in _FD_CALLS else args[0])

    def _note_resync(self, name: str, fd: int, site: str) -> None:
        try:
            st = os.fstat(fd)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in self.failed_files:
            self._log({"event": "resync", "call": name, "site": site, **_describe_target(name, (fd,))})

    def _log(self, entry: dict[str, Any]) -> None:
        if not self.log:
            return
        import json

        line = (json.dumps(entry, default=str) + "\n").encode()
        fd = self.real["open"](self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self.real["write"](fd, line)
        finally:
            os.close(fd)

    def _write_counts(self) -> None:
        self._log({"event": "counts", "counts": self.counts})


def _site() -> str | None:
    """`module:function:line` of the handshake code that made this call, or None for a call
    that is not handshake's own I/O."""
    import sys

    try:
        frame: FrameType | None = sys._getframe(2)
    except ValueError:  # called straight from C (an atexit hook, say): not handshake's I/O
        return None
    while frame is not None and frame.f_globals.get("__name__") == _LAYER:
        frame = frame.f_back
    if frame is None:
        return None
    module = str(frame.f_globals.get("__name__", ""))
    if not any(module == site or module.startswith(site + ".") for site in SITES):
        return None
    return f"{module}:{frame.f_code.co_name}:{frame.f_lineno}"


def _describe_target(name: str, args: Any) -> dict[str, Any]:
    if name not in _FD_CALLS:
        return {"path": os.fspath(args[0]) if args else None}
    fd = args[0]
    try:
        return {"path": os.readlink(f"/proc/self/fd/{fd}"), "size": os.fstat(fd).st_size}
    except OSError:
        return {"path": None}


_fault_spec = os.environ.get(FAULT_ENV)
if _fault_spec:
    _Injector(parse_faults(_fault_spec), os.environ.get(FAULT_LOG_ENV)).install()
