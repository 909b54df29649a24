"""The fault-injection lab behind tests/test_faults.py: real `handshake` processes run with
`HANDSHAKE_FAULT` (handshake_cli/faults.py), and the checks every injected fault must pass.

A case runs one command with one fault (the Nth call of one syscall fails, or writes short)
and then checks what a user and the store would show:

- the exit code is the clean one, or 74 (environment) with a message that names a file and
  the errno; never 1, never a traceback;
- a failed fsync is never retried on the same file (the seam logs any later fsync of it),
  and after a failed journal fsync nothing more was appended to that segment;
- the journal has no damage in its middle (a torn tail at its end is recovery's to cut);
- once the fault is gone, `recover` brings the session to the crash-free thread, the
  non-idempotent call's effect happened exactly once, and the journal verifies intact.

`sweep` runs N = 1, 2, ... for one syscall and kind until the command completes with no
fault injected (the SQLite way); `Tally` counts what was injected and passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.paths import FIXTURES, REPO

CLEAN = (0,)
ENVIRONMENT = 74
# Which failures each syscall gets: what the kernel can really answer there.
KINDS: dict[str, tuple[str, ...]] = {
    "open": ("ENOSPC", "EIO"),
    "read": ("EIO",),
    "pread": ("EIO",),
    "write": ("ENOSPC", "EIO", "short"),
    "pwrite": ("ENOSPC", "EIO"),
    "fsync": ("EIO",),
    "fdatasync": ("EIO",),
    "ftruncate": ("EIO",),
    "rename": ("ENOSPC", "EIO"),
    "replace": ("ENOSPC", "EIO"),
    "link": ("ENOSPC",),
    "mkdir": ("ENOSPC", "EIO"),
    "rmdir": ("EIO",),
    "unlink": ("EIO",),
}

SCRIPT = {
    "turns": [
        {
            "text": "Writing the notes down first.",
            "tool_calls": [
                {"tool": "write_file", "args": {"path": "notes.txt", "content": "the sky is blue\n"}}
            ],
        },
        {
            "text": "Telling the team, exactly once.",
            "tool_calls": [{"tool": "notify", "args": {"message": "notes are ready"}}],
        },
        {
            # Longer than the tool's max_output_bytes: the whole output goes to a pack artifact.
            "text": "Reading the notes back.",
            "tool_calls": [{"tool": "read_file", "args": {"path": "notes.txt"}}],
        },
        {"text": "Done: the notes are written and the team knows."},
    ]
}


def make_job(directory: Path) -> Path:
    """A quickstart-like job: a write tool, a non_idempotent command tool with a probe, and a
    read whose output is stored as an artifact (a pack frame, synced before its result)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "script.toml").write_text(tomli_w.dumps(SCRIPT))
    notify = [sys.executable, str(FIXTURES / "jobs" / "notify.py")]
    job = {
        "name": "fault-injection",
        "prompt": {"user": "Write the notes, then tell the team."},
        "model": {"provider": "scripted", "script": "script.toml", "chunk_delay_ms": 0},
        "tools": [
            {
                "name": "write_file",
                "builtin": "write_file",
                "side_effect": "write",
                "idempotency": "idempotent",
            },
            {
                "name": "read_file",
                "builtin": "read_file",
                "side_effect": "read",
                "idempotency": "idempotent",
                "max_output_bytes": 8,
            },
            {
                "name": "notify",
                "command": notify,
                "probe": [*notify, "--probe"],
                "side_effect": "execute",
                "idempotency": "non_idempotent",
            },
        ],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


@dataclass
class Outcome:
    args: list[str]
    fault: str | None
    code: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]

    @property
    def injected(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "fault"]

    @property
    def counts(self) -> dict[str, int]:
        found = [e["counts"] for e in self.events if e["event"] == "counts"]
        return found[-1] if found else {}

    def describe(self) -> str:
        return (
            f"handshake {' '.join(self.args)} with {self.fault}: exit {self.code}\n"
            f"stdout: {self.stdout[-1500:]}\nstderr: {self.stderr[-1500:]}\nevents: {self.events}"
        )


@dataclass
class Tally:
    """Faults injected and passed, by command and by kind, for the report."""

    injected: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    exits: Counter[tuple[str, int]] = field(default_factory=Counter)
    sites: set[str] = field(default_factory=set)

    def add(self, command: str, outcome: Outcome) -> None:
        for event in outcome.injected:
            self.injected[(command, event["call"], event["kind"])] += 1
            self.sites.add(event["site"].rsplit(":", 1)[0])
        if outcome.injected:
            self.exits[(command, outcome.code)] += 1

    def summary(self) -> dict[str, Any]:
        by_command: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        for (command, call, kind), n in self.injected.items():
            by_command[command] += n
            by_kind[f"{call}:{kind}"] += n
        return {
            "total": sum(self.injected.values()),
            "by_command": dict(sorted(by_command.items())),
            "by_kind": dict(sorted(by_kind.items())),
            "exits": {f"{c} {code}": n for (c, code), n in sorted(self.exits.items())},
            "sites": sorted(self.sites),
        }


class Lab:
    """One base directory: a root, a workspace, the job; reset from templates between cases."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.workspace = base / "ws"
        self.job = make_job(base / "job")
        self.log = base / "faults.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
        self.env.update({"NO_COLOR": "1", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
        self.workspace.mkdir(parents=True, exist_ok=True)

    # -- processes -------------------------------------------------------------------------

    def handshake(
        self, *args: str, fault: str | None = None, crash_at: str | None = None, root: bool = True
    ) -> Outcome:
        env = dict(self.env)
        if fault:
            env.update({"HANDSHAKE_FAULT": fault, "HANDSHAKE_FAULT_LOG": str(self.log)})
        if crash_at:
            env["HANDSHAKE_CRASH_AT"] = crash_at
        full = [*args, *(["--root", str(self.root)] if root else [])]
        self.log.unlink(missing_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "handshake_cli", *full],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.base,
            timeout=120,
            check=False,
        )
        events = [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []
        return Outcome(full, fault, proc.returncode, proc.stdout, proc.stderr, events)

    def run(self, session_id: str, *, fault: str | None = None, crash_at: str | None = None) -> Outcome:
        return self.handshake(
            "run",
            str(self.job),
            "--session-id",
            session_id,
            "--workspace",
            str(self.workspace),
            "--json",
            fault=fault,
            crash_at=crash_at,
        )

    # -- templates ---------------------------------------------------------------------------

    def save(self, name: str) -> None:
        target = self.base / "templates" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.root, target / "root", symlinks=True)
        shutil.copytree(self.workspace, target / "ws", symlinks=True)

    def restore(self, name: str | None) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.workspace, ignore_errors=True)
        if name is None:
            self.workspace.mkdir()
            return
        source = self.base / "templates" / name
        shutil.copytree(source / "root", self.root, symlinks=True)
        shutil.copytree(source / "ws", self.workspace, symlinks=True)

    # -- what the store holds (read in this process: no fault here) ---------------------------

    def session_dir(self, session_id: str) -> Path:
        return self.root / "sessions" / session_id

    def journal_state(self, session_id: str) -> tuple[str | None, list[dict[str, Any]], str | None]:
        """(state, messages, damage kind) of the journal as it stands."""
        from handshake_cli.session.state import fold
        from handshake_cli.session.thread import fold_thread
        from handshake_cli.storage.journal.scan import scan

        result = scan(self.session_dir(session_id) / "journal", session_id)
        damage = result.damage.kind if result.damage else None
        return fold(session_id, result.records).state, fold_thread(result.records).messages, damage

    def verdict(self, session_id: str) -> str:
        from handshake_cli.paths import Paths
        from handshake_cli.readers.verify import verify
        from handshake_cli.storage.filesystem import FilesystemStore

        root = self.session_dir(session_id).parent.parent
        return verify(FilesystemStore(Paths(root)), session_id).verdict

    def notifications(self) -> list[str]:
        log = self.workspace / "quickstart-output" / "notifications.log"
        return log.read_text().splitlines() if log.exists() else []

    def tree_digest(self, path: Path) -> dict[str, str]:
        out = {}
        for item in sorted(path.rglob("*")):
            if item.is_file() and not item.is_symlink():
                out[str(item.relative_to(path))] = hashlib.sha256(item.read_bytes()).hexdigest()
        return out


# -- the checks --------------------------------------------------------------------------------


def check_outcome(outcome: Outcome, clean: Iterable[int] = CLEAN) -> None:
    """The exit code and message a fault must give, and the fsync rule."""
    context = outcome.describe()
    assert "Traceback" not in outcome.stderr and "internal error" not in outcome.stdout + outcome.stderr, (
        context
    )
    assert outcome.code != 1, context
    if not outcome.injected:
        assert outcome.code in tuple(clean), context
        return
    assert outcome.code in (*clean, ENVIRONMENT), context
    if outcome.code == ENVIRONMENT:
        error = None
        if "--json" in outcome.args:
            doc = json.loads(outcome.stdout)
            # A command over a whole root (gc) names the session the fault hit in that session's
            # own entry and goes on with the others: its exit code is the worst it met.
            error = doc.get("error") or next(
                (e for e in _errors_within(doc) if e.get("exit_code") == ENVIRONMENT), None
            )
            assert error is not None, context
        message = error["message"] if error else outcome.stderr
        if error:
            assert error["code"] in ("environment", "durability") and error["exit_code"] == ENVIRONMENT, (
                context
            )
        kinds = {e["kind"] for e in outcome.injected}
        assert any(k in message for k in kinds) or "short write" in message, context  # the cause
        assert "/" in message, context  # a file is named
    assert not [e for e in outcome.events if e["event"] == "resync"], context  # never retried


def _errors_within(value: Any) -> list[dict[str, Any]]:
    """Every `error` object anywhere in a JSON document (the rows of a root-wide report)."""
    if isinstance(value, list):
        return [e for item in value for e in _errors_within(item)]
    if not isinstance(value, dict):
        return []
    own = [value["error"]] if isinstance(value.get("error"), dict) else []
    return own + [e for key, item in value.items() if key != "error" for e in _errors_within(item)]


def check_no_append_after_failed_sync(outcome: Outcome, journal: Path) -> None:
    """After a failed fsync of a journal segment, the process wrote nothing more to it."""
    for event in outcome.injected:
        path = event.get("path") or ""
        if event["call"] in ("fsync", "fdatasync") and path.startswith(str(journal)) and Path(path).exists():
            assert Path(path).stat().st_size == event["size"], outcome.describe()


def finish(lab: Lab, session_id: str, reference: list[dict[str, Any]], context: str) -> None:
    """With the fault gone, `recover` ends the session as a crash-free run would."""
    state, _messages, damage = lab.journal_state(session_id)
    assert damage in (None, "torn_tail"), f"damage in the middle of the journal: {damage}\n{context}"
    history = []
    for _attempt in range(4):
        if state == "COMPLETED" and damage is None:
            break
        outcome = lab.handshake("recover", session_id, "--json")
        history.append(outcome.code)
        assert outcome.code in (0, 75), f"{outcome.describe()}\n{context}"
        state, _messages, damage = lab.journal_state(session_id)
    state, messages, damage = lab.journal_state(session_id)
    assert state == "COMPLETED" and damage is None, f"{state} {damage} after {history}\n{context}"
    assert messages == reference, f"the thread differs from a crash-free run's\n{context}"
    assert len(lab.notifications()) == 1, f"notify ran {len(lab.notifications())} times\n{context}"
    assert (lab.workspace / "notes.txt").read_text() == "the sky is blue\n", context
    assert lab.verdict(session_id) in ("intact", "repairable"), context


Case = Callable[[str], Outcome]


def sweep(
    case: Case, call: str, kind: str, *, within: str | None = None, limit: int = 400, every: int = 1
) -> list[Outcome]:
    """Fail the 1st, then the 2nd, ... call of `call` (on a path containing `within`) with
    `kind` until `case` completes with nothing injected (or, with `every` > 1, every that many)."""
    outcomes = []
    n = 1
    suffix = f"@{within}" if within else ""
    while n <= limit:
        outcome = case(f"{call}:{n}:{kind}{suffix}")
        outcomes.append(outcome)
        if not outcome.injected:
            return outcomes
        n += every
    raise AssertionError(f"{call} still failing after {limit} calls")
