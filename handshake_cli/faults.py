"""Named crash points, for the tests that prove the durability rules.

`HANDSHAKE_CRASH_AT=after_intent` (or `after_intent:3` for the third time that point is
reached) makes the process SIGKILL itself there: no cleanup, no flush, exactly what a crash
leaves. Unset, `crash_point` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

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
