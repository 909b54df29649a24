"""The channel `handshake checkpoint` uses to ask a running session for a checkpoint.

The asker writes `requests/<nonce>.json` (its reason) into the session directory and sends
SIGUSR1 to the lock holder; the runner, at its next boundary, takes the checkpoint and
answers in `requests/<nonce>.done.json` with the checkpoint's id. Both files are written
atomically, so neither side ever reads half a message. Nothing here takes the lock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handshake_cli.errors import EnvironmentFailure
from handshake_cli.storage import durable
from handshake_cli.storage.contract import CheckpointRequest

REQUESTS_DIR = "requests"
_DONE = ".done.json"


def submit(session_path: Path, reason: str | None) -> CheckpointRequest:
    directory = session_path / REQUESTS_DIR
    durable.ensure_subdir(directory)
    request = CheckpointRequest(os.urandom(8).hex(), reason)
    durable.atomic_write(
        directory / f"{request.nonce}.json", json.dumps({"reason": reason}).encode(), durable=False
    )
    return request


def pending_requests(session_path: Path) -> list[CheckpointRequest]:
    directory = session_path / REQUESTS_DIR
    try:
        names = sorted(
            e.name for e in os.scandir(directory) if e.name.endswith(".json") and not e.name.endswith(_DONE)
        )
    except FileNotFoundError:
        return []
    except OSError as exc:
        if durable.is_environment(exc):
            return []  # a request nobody can read is answered by nobody: its asker times out
        raise
    found = []
    for name in names:
        nonce = name[: -len(".json")]
        if not nonce.isalnum():
            continue
        try:
            reason = json.loads(durable.read_bytes(directory / name)).get("reason")
        except (OSError, EnvironmentFailure, ValueError, AttributeError):
            reason = None
        found.append(CheckpointRequest(nonce, reason if isinstance(reason, str) else None))
    return found


def answer(session_path: Path, request: CheckpointRequest, payload: dict[str, Any]) -> bool:
    """Answer a request; whether the answer was written. A full disk here does not stop the
    running session (its checkpoint is in the journal already): the asker times out instead."""
    directory = session_path / REQUESTS_DIR
    try:
        durable.atomic_write(
            directory / f"{request.nonce}{_DONE}", json.dumps(payload).encode(), durable=False
        )
    except EnvironmentFailure:
        return False
    finally:
        _unlink_quietly(directory / f"{request.nonce}.json")
    return True


def wait_for_answer(
    session_path: Path,
    request: CheckpointRequest,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
) -> dict[str, Any] | None:
    """Poll for the answer; returns None when `timeout` seconds pass without one, or as soon
    as `alive` says the process asked is gone (it can never answer: waiting on would only
    hold the caller up)."""
    path = session_path / REQUESTS_DIR / f"{request.nonce}{_DONE}"
    deadline = time.monotonic() + timeout
    while True:
        payload = _read_answer(path)
        if payload is None and not alive():
            payload = _read_answer(path)  # it may have answered just before it ended
            if payload is None:
                return None
        if payload is not None:
            _unlink_quietly(path)  # the answer is read; one left behind is debris gc sweeps
            return payload if isinstance(payload, dict) else None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _read_answer(path: Path) -> Any:
    try:
        return json.loads(durable.read_bytes(path))
    except FileNotFoundError:
        return None


def withdraw(session_path: Path, request: CheckpointRequest) -> None:
    """An unanswered request is removed, so a later run does not take a checkpoint nobody awaits."""
    _unlink_quietly(session_path / REQUESTS_DIR / f"{request.nonce}.json")


def _unlink_quietly(path: Path) -> None:
    """A request file that cannot be removed costs at most one extra checkpoint (the runner
    answers a request it finds), and gc sweeps it once it is old: never a reason to fail."""
    try:
        os.unlink(path)
    except OSError:
        pass
