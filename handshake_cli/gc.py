"""Retention and sweeping: which sessions may go, how they go, and the debris crashes leave.

gc removes finished sessions (COMPLETED, FAILED, CANCELLED) past an age, and with
`include_unfinished` stopped ones too (PAUSED, BLOCKED, interrupted), never one a live
process holds. It decides from head.json checked against the journal's last record (the
whole journal is folded only when the two disagree), so a root of many sessions costs a few
small reads per session. It takes each session's lock without waiting, checks the state
again under it, and moves the session out of `sessions/` with one rename into
`<root>/trash/` before deleting anything: a gc killed at any instant leaves each session
either whole in `sessions/` or in the trash, which the next gc empties first. Once a batch
of renames is durable, its trees go to a `trash.Deleter`, whose helper processes delete them
while gc decides on the next sessions; gc returns only when all of it is deleted.

Debris is swept from sessions gc can lock: `.tmp-*` files of interrupted atomic writes,
checkpoint requests nobody will answer or read, quarantine files past their own age, and
with `keep_checkpoints` the pack segments and loose artifacts no record names (checkpoint
bodies live in journal records and are never dropped). `staging/` leftovers of crashed
creations go too. Everything younger than `GRACE_SECONDS` stays: it may be in use.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from . import documents, durable, faults
from . import lock as session_lock
from .artifacts import HEADER_BYTES
from .errors import (
    HandshakeError,
    IntegrityError,
    InvalidConfig,
    JournalNeedsRepair,
    NotFound,
    UsageError,
    worst_exit_code,
)
from .inspection import UNREADABLE, directory_size, effective_state, named_artifacts, session_problem
from .journal import Record, read_last_record, scan
from .model import ACTIVE, BLOCKED, CREATED, PAUSED, STATES, TERMINAL, fold, read_head
from .paths import Paths
from .store import SessionDir, Store
from .trash import Deleter, measure_and_delete

CONFIG_FILE = "handshake.toml"
CONFIG_MAX_BYTES = 1 << 20  # a [gc] table of four keys; anything near this is not a config
TRASH_DIR = "trash"
# Debris younger than this may belong to a write or a creation still in progress.
GRACE_SECONDS = 3600.0
# Sessions renamed into the trash between two fsyncs of `sessions/`.
BATCH = 256

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]+)([smhdw])", re.ASCII)
_REQUEST = re.compile(r"[A-Za-z0-9]+(\.done)?\.json", re.ASCII)
_CONFIG_KEYS = ("older_than", "keep_checkpoints", "quarantine_older_than")
# What --include-unfinished may take, besides finished sessions (ACTIVE here means nobody
# holds the lock: interrupted).
_UNFINISHED_TAKEN = frozenset({PAUSED, BLOCKED, ACTIVE, CREATED})

Clock = Callable[[], float]
Progress = Callable[[int, int], None]


def parse_duration(text: str, what: str = "--older-than") -> float:
    """`30s`, `15m`, `12h`, `7d`, `2w` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise UsageError(
            f"{what} {text!r} is not a duration: use a whole number and one of s, m, h, d, w (e.g. 7d)"
        )
    return float(int(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True)
class Policy:
    older_than: float | None = None  # seconds; None: no session is removed
    keep_checkpoints: int | None = None  # None: artifacts are not pruned
    quarantine_older_than: float | None = None  # None: quarantine is never swept
    include_unfinished: bool = False
    dry_run: bool = False
    grace: float = GRACE_SECONDS
    config_file: str | None = None  # the handshake.toml that contributed, if any

    def as_json(self) -> dict[str, Any]:
        return {
            "older_than_seconds": self.older_than,
            "keep_checkpoints": self.keep_checkpoints,
            "quarantine_older_than_seconds": self.quarantine_older_than,
            "include_unfinished": self.include_unfinished,
            "grace_seconds": self.grace,
            "config_file": self.config_file,
        }


def load_policy(
    paths: Paths,
    *,
    older_than: str | None = None,
    keep_checkpoints: int | None = None,
    include_unfinished: bool = False,
    dry_run: bool = False,
) -> Policy:
    """The `[gc]` table of `<root>/handshake.toml`, overridden by whatever the flags give."""
    table, config_file = _read_config(paths.root / CONFIG_FILE)

    def config_duration(key: str) -> float | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _bad(config_file, key, f'must be a duration string such as "7d", not {value!r}')
        try:
            return parse_duration(value, f"[gc] {key}")
        except UsageError as exc:
            raise _bad(config_file, key, exc.message) from None

    config_keep = table.get("keep_checkpoints")
    if config_keep is not None and (type(config_keep) is not int or config_keep < 0):
        raise _bad(config_file, "keep_checkpoints", f"must be a whole number >= 0, not {config_keep!r}")
    if keep_checkpoints is not None and keep_checkpoints < 0:
        raise UsageError(f"--keep-checkpoints {keep_checkpoints}: must be 0 or more")
    # Every key of the file is checked, even one a flag overrides: a broken file is reported now.
    config_age, config_quarantine = config_duration("older_than"), config_duration("quarantine_older_than")
    return Policy(
        older_than=parse_duration(older_than) if older_than is not None else config_age,
        keep_checkpoints=keep_checkpoints if keep_checkpoints is not None else config_keep,
        quarantine_older_than=config_quarantine,
        include_unfinished=include_unfinished,
        dry_run=dry_run,
        config_file=config_file,
    )


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    def refuse(problem: str) -> InvalidConfig:
        return InvalidConfig(f"{path}: {problem}", details={"file": str(path), "key": None})

    try:
        fd = documents.open_regular(path, follow_symlinks=False)
    except FileNotFoundError:
        return {}, None
    except documents.DocumentError as exc:
        raise refuse(exc.problem) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse("is a symbolic link; handshake does not follow it") from None
        if isinstance(exc, PermissionError):
            raise refuse(f"cannot be read: {exc.strerror}") from None
        raise
    try:
        doc = documents.parse_toml(documents.read_limited(fd, CONFIG_MAX_BYTES))
    except documents.DocumentError as exc:
        raise refuse(exc.problem) from None
    finally:
        os.close(fd)
    table = doc.get("gc", {})
    if not isinstance(table, dict):
        raise _bad(str(path), None, "must be a table ([gc])")
    for key in table:
        if key not in _CONFIG_KEYS:
            raise _bad(str(path), key, f"is not a gc setting (known: {', '.join(_CONFIG_KEYS)})")
    return table, str(path)


def _bad(file: str | None, key: str | None, problem: str) -> InvalidConfig:
    where = f"[gc] {key}" if key else "[gc]"
    return InvalidConfig(
        f"{file}: {where} {problem}", details={"file": file, "key": f"gc.{key}" if key else "gc"}
    )


@dataclass
class Report:
    policy: Policy
    removed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    swept: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    kept: int = 0  # sessions left alone for their age (or because no age was given)
    notes: list[str] = field(default_factory=list)

    @property
    def reclaimed_bytes(self) -> int:
        return sum(item["bytes"] for item in [*self.removed, *self.swept])

    @property
    def exit_code(self) -> int:
        """The worst error among the sessions skipped as damaged; 0 when there is none."""
        return worst_exit_code(item["error"]["exit_code"] for item in self.skipped if item.get("error"))

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.policy.dry_run,
            "removed": self.removed,
            "skipped": self.skipped,
            "swept": self.swept,
            "reclaimed_bytes": self.reclaimed_bytes,
            "kept": self.kept,
            "errors": self.errors,
            "policy": self.policy.as_json(),
            "notes": self.notes,
        }


@dataclass
class _Look:
    """What gc learnt about one session from its files, without its lock."""

    session: SessionDir
    stored_state: str | None = None
    last_record: Record | None = None
    age: float | None = None
    holder: session_lock.LockHolder | None = None
    # Why its files cannot be trusted: the `error` of its skipped entry ({code, exit_code, message}).
    error: dict[str, Any] | None = None

    @property
    def problem(self) -> str | None:
        return self.error["message"] if self.error else None

    @property
    def state(self) -> str:
        if self.stored_state is None:
            return UNREADABLE
        return effective_state(self.stored_state, self.holder)

    @property
    def last_record_at(self) -> str | None:
        return self.last_record.ts if self.last_record else None


def collect(
    store: Store,
    policy: Policy,
    *,
    now: Clock = time.time,
    progress: Progress | None = None,
    deleter: Deleter | None = None,
) -> Report:
    """Apply `policy` to every session under the store's root (or say what it would do).

    What goes is deleted by `deleter` (by default a `trash.Deleter`, whose helper processes
    delete while gc decides); it returns once all of it is deleted."""
    report = Report(policy)
    deleter = deleter if deleter is not None else Deleter()
    run = _Run(store, policy, now, report, deleter)
    try:
        run.empty_trash()
        run.sweep_staging()
        session_ids = store.session_ids()
        for done, session_id in enumerate(session_ids, 1):
            run.session(session_id)
            if progress is not None:
                progress(done, len(session_ids))
        run.flush()
        deleter.finish()
    finally:
        deleter.close()
    report.notes.extend(deleter.notes)
    if policy.older_than is None:
        report.notes.append(
            "no age given (--older-than, or older_than in the [gc] table of "
            f"{store.paths.root / CONFIG_FILE}): no session was considered for removal; only debris was swept"
        )
    if policy.keep_checkpoints is not None:
        report.notes.append(
            "checkpoints live in their journal records, which are append-only: every checkpoint is kept "
            f"(at least the last {policy.keep_checkpoints}); --keep-checkpoints drops only pack segments "
            "and loose artifacts that no record of a finished session names"
        )
    if policy.dry_run:
        report.notes.append("dry run: nothing was removed")
    return report


class _Run:
    def __init__(self, store: Store, policy: Policy, now: Clock, report: Report, deleter: Deleter) -> None:
        self.store = store
        self.paths = store.paths
        self.policy = policy
        self.now = now
        self.report = report
        self.trash = self.paths.root / TRASH_DIR
        self._trash_ready = False
        self._batch: list[tuple[dict[str, Any], Path]] = []
        self._skipped: set[str] = set()
        self.deleter = deleter

    # -- the root's own debris -------------------------------------------------------------

    def empty_trash(self) -> None:
        """What a killed gc left in the trash: already out of `sessions/`, so no grace."""
        for entry in _entries(self.trash):
            if self.policy.dry_run:
                self._sweep("trash", Path(entry.path), entry)
            else:
                path = Path(entry.path)
                self.deleter.delete(path, partial(self._swept, "trash", path))

    def sweep_staging(self) -> None:
        """Half-built sessions of crashed creations (a creation in progress is younger than the grace)."""
        for entry in _entries(self.paths.staging):
            if self._older(entry, self.policy.grace):
                self._sweep("staging", Path(entry.path), entry)

    # -- one session -------------------------------------------------------------------------

    def session(self, session_id: str) -> None:
        look = self._look(session_id)
        if look is None:
            return  # gone since the listing (another gc)
        reason = self._removal_verdict(look)
        if reason == "candidate":
            self._remove(look)
            return
        if reason is not None:
            self._skip(look, reason)
        else:
            self.report.kept += 1
        if look.problem is None:
            self._maintain(look)

    def _look(self, session_id: str) -> _Look | None:
        look = _Look(SessionDir(session_id, self.paths.sessions / session_id))
        try:
            look.session = self.store.session(session_id)
            look.stored_state, look.last_record = _stored_state(look.session)
            look.age = self.now() - _timestamp(look.last_record)
            look.holder = session_lock.holder(look.session.path)
        except Exception as exc:  # one broken session must never be removed, nor hide the others
            if isinstance(exc, NotFound | FileNotFoundError) and not os.path.lexists(look.session.path):
                return None  # gone since the listing (another gc)
            look.error = session_problem(exc)
        return look

    def _removal_verdict(self, look: _Look) -> str | None:
        """None: kept for its age; "candidate"; or why it is skipped."""
        if look.problem is not None:
            return "damaged"
        if self.policy.older_than is None or look.age is None or look.age < self.policy.older_than:
            return None
        return self._eligibility(look.stored_state, look.holder, look.age)

    def _eligibility(self, stored: str | None, holder: session_lock.LockHolder | None, age: float) -> str:
        if holder is not None:
            return "locked"
        if stored in TERMINAL:
            return "candidate"
        if not self.policy.include_unfinished or stored not in _UNFINISHED_TAKEN:
            return "unfinished"
        if stored == CREATED and age < self.policy.grace:
            return "unfinished"  # `run` takes the lock right after creating it: leave that instant alone
        return "candidate"

    def _damaged(self, look: _Look, exc: Exception, prefix: str = "") -> None:
        """Skip a session whose files cannot be trusted, with the error that says why."""
        error = session_problem(exc)
        look.error = {**error, "message": prefix + error["message"]}
        self._skip(look, "damaged")

    def _skip(self, look: _Look, reason: str, detail: str | None = None) -> None:
        if look.session.session_id in self._skipped:
            return
        self._skipped.add(look.session.session_id)
        entry: dict[str, Any] = {
            "session_id": look.session.session_id,
            "state": look.state,
            "reason": reason,
            "detail": detail or self._detail(look, reason),
            "last_record_at": look.last_record_at,
        }
        if reason == "damaged" and look.error is not None:
            entry["error"] = look.error
        self.report.skipped.append(entry)

    def _detail(self, look: _Look, reason: str) -> str:
        root_args = " ".join(self.paths.root_args())
        if reason == "damaged":
            command = f"handshake inspect {look.session.session_id} --verify {root_args}".strip()
            return f"{look.problem}; see: {command}"
        if reason == "locked":
            holder = look.holder or session_lock.holder(look.session.path)
            return f"held by {holder.describe()}" if holder else "another process holds its lock"
        if look.stored_state == CREATED and self.policy.include_unfinished:
            return "created moments ago; a run takes it next"
        return (
            f"{look.state} is not finished: resume it with `handshake recover {look.session.session_id}"
            f"{' ' + root_args if root_args else ''}`, or pass --include-unfinished to remove it"
        )

    # -- removal -----------------------------------------------------------------------------

    def _remove(self, look: _Look) -> None:
        session = look.session
        entry = {
            "session_id": session.session_id,
            "state": look.state,
            "last_record_at": look.last_record_at,
            "age_seconds": round(look.age or 0.0, 3),
            "bytes": 0,
        }
        if self.policy.dry_run:
            entry["bytes"] = directory_size(session.path)
            self.report.removed.append(entry)
            return
        fd = self._lock(look)
        if fd is None:
            return
        try:
            # Under the lock nobody writes: what was decided holds if the journal did not move.
            # session.toml must still say whose files these are (not the whole job: see
            # SessionDir.check_identity).
            try:
                session.check_identity()
                last = read_last_record(session.journal)
            except Exception as exc:
                self._damaged(look, exc)
                return
            assert look.last_record is not None
            if last is None or (last.seq, last.sum) != (look.last_record.seq, look.last_record.sum):
                self._skip(
                    look, "changed", "a record was appended before gc held its lock; left for the next gc"
                )
                return
            if not self._trash_ready:
                durable.ensure_subdir(self.trash)
                self._trash_ready = True
            target = self.trash / f"{session.session_id}.{secrets.token_hex(4)}"
            try:
                os.rename(session.path, target)
            except OSError as exc:
                if durable.is_environment(exc):  # a full disk or a failing one: stop, say which
                    raise durable.environment_failure(exc, "move into the trash", session.path) from exc
                self.report.errors.append({"path": self._rel(session.path), "error": _describe(exc)})
                return
            faults.crash_point("gc_after_trash")
        finally:
            os.close(fd)  # drops the flock; the directory is out of sessions/ already
        self._batch.append((entry, target))
        if len(self._batch) >= BATCH:
            self.flush()

    def _lock(self, look: _Look) -> int | None:
        """The session's flock, without waiting; None (and the reason reported) when busy or gone."""
        try:
            fd = _try_flock(look.session.path)
        except FileNotFoundError:
            return None  # moved away since gc looked (another gc)
        except OSError as exc:
            if durable.is_environment(exc):  # a full disk, an I/O error: the machine, not the files
                self._damaged(look, durable.environment_failure(exc, "lock", look.session.path / "lock"))
            else:  # e.g. ELOOP: a link planted at the lock path
                self._damaged(look, IntegrityError(f"cannot lock it: {_describe(exc)}"))
            return None
        if fd is None:
            self._skip(look, "locked")
        return fd

    def flush(self) -> None:
        """Make the renames durable, then delete: a half-deleted session is only ever in the trash."""
        if not self._batch:
            return
        durable.fsync_dir(self.paths.sessions)
        durable.fsync_dir(self.trash)
        faults.crash_point("gc_before_delete")
        for entry, target in self._batch:
            self.deleter.delete(target, partial(self._removed, entry, target))
        self._batch.clear()
        faults.crash_point("gc_deleting")  # helpers may be deleting the batch (trash.Deleter)

    def _removed(self, entry: dict[str, Any], target: Path, size: int, error: str | None) -> None:
        if error is not None:
            self.report.errors.append({"path": self._rel(target), "error": error})
            return
        entry["bytes"] = size
        self.report.removed.append(entry)

    # -- debris inside a session that stays --------------------------------------------------

    def _maintain(self, look: _Look) -> None:
        session = look.session
        debris = self._debris(session)
        prune = self.policy.keep_checkpoints is not None and look.stored_state in TERMINAL
        if prune and not _has_artifacts(session):
            prune = False
        if not debris and not prune:
            return
        if look.holder is not None:
            self._skip(look, "locked", "its debris waits for a gc that finds it free")
            return
        if self.policy.dry_run:
            self._sweep_items(debris)
            if prune:
                self._prune(look)
            return
        fd = self._lock(look)
        if fd is None:
            return
        try:
            self._sweep_items(debris)
            if prune:
                try:
                    stored, _last = _stored_state(session)
                except Exception as exc:
                    self._damaged(look, exc)
                    return
                if stored in TERMINAL:
                    self._prune(look)
        finally:
            os.close(fd)

    def _debris(self, session: SessionDir) -> list[tuple[str, Path, os.DirEntry[str]]]:
        """(kind, path, entry) of what may go from a session that stays."""
        found: list[tuple[str, Path, os.DirEntry[str]]] = []
        grace = self.policy.grace
        for directory in (session.path, session.path / "artifacts" / "objects"):
            for entry in _entries(directory):
                if entry.name.startswith(durable.TEMP_PREFIX) and self._older(entry, grace):
                    found.append(("temp", Path(entry.path), entry))
        for entry in _entries(session.path / "requests"):
            temp = entry.name.startswith(durable.TEMP_PREFIX)
            if (temp or _REQUEST.fullmatch(entry.name)) and self._older(entry, grace):
                found.append(("temp" if temp else "request", Path(entry.path), entry))
        if self.policy.quarantine_older_than is not None:
            for entry in _entries(session.quarantine):
                if entry.is_file(follow_symlinks=False) and self._older(
                    entry, self.policy.quarantine_older_than
                ):
                    found.append(("quarantine", Path(entry.path), entry))
        return found

    def _prune(self, look: _Look) -> None:
        session = look.session
        try:
            unnamed = _unnamed_artifacts(session)
        except Exception as exc:
            self._damaged(look, exc, "artifacts left as they are: ")
            return
        if isinstance(unnamed, HandshakeError):
            self._damaged(look, unnamed)
            return
        for kind, path, size in unnamed:
            if not self.policy.dry_run:
                size, error = measure_and_delete(path)
                if error is not None:
                    self.report.errors.append({"path": self._rel(path), "error": error})
                    continue
            self.report.swept.append({"kind": kind, "path": self._rel(path), "bytes": size})

    # -- removing files ----------------------------------------------------------------------

    def _sweep_items(self, items: list[tuple[str, Path, os.DirEntry[str]]]) -> None:
        for kind, path, entry in items:
            self._sweep(kind, path, entry)

    def _sweep(self, kind: str, path: Path, entry: os.DirEntry[str]) -> None:
        """Remove one piece of debris (a file, or a whole tree from the trash or staging)."""
        if self.policy.dry_run:
            try:
                is_tree = entry.is_dir(follow_symlinks=False)
                size = directory_size(path) if is_tree else entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                return
            self.report.swept.append({"kind": kind, "path": self._rel(path), "bytes": size})
        else:
            self._swept(kind, path, *measure_and_delete(path))

    def _swept(self, kind: str, path: Path, size: int, error: str | None) -> None:
        if error is not None:
            self.report.errors.append({"path": self._rel(path), "error": error})
            return
        self.report.swept.append({"kind": kind, "path": self._rel(path), "bytes": size})

    def _older(self, entry: os.DirEntry[str], seconds: float) -> bool:
        try:
            return self.now() - entry.stat(follow_symlinks=False).st_mtime >= seconds
        except FileNotFoundError:
            return False

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.paths.root))
        except ValueError:
            return str(path)


def _stored_state(session: SessionDir) -> tuple[str, Record]:
    """The stored state and the journal's last record: the state from head.json when it agrees
    with that record, else from a fold of the journal. Damage a fold cannot get past raises."""
    last = read_last_record(session.journal)
    if last is None:
        raise IntegrityError(f"session {session.session_id}: the journal holds no intact record")
    head = read_head(session.path)
    if head and head.get("last_seq") == last.seq and head.get("state") in STATES:
        return str(head["state"]), last
    result = scan(session.journal, session.session_id)
    if result.corruption:
        damage = result.corruption
        raise IntegrityError(
            f"journal is corrupt at {damage.segment} offset {damage.offset}: {damage.detail}"
        )
    if not result.records:
        raise IntegrityError(f"session {session.session_id}: the journal holds no intact record")
    return fold(session.session_id, result.records).state, result.records[-1]


def _timestamp(record: Record) -> float:
    return datetime.fromisoformat(record.ts).timestamp()


def _try_flock(session_path: Path) -> int | None:
    """Take the session's writer lock without waiting: the flock SessionLock takes
    on the same file, so each excludes the other. Returns the descriptor that holds it (close
    it to let go), or None when another process holds it.

    Not SessionLock itself: gc holds a lock for about a millisecond, and SessionLock's
    owner.json (an atomic write, then an unlink) and (then) filelock's bookkeeping cost ~0.9 ms per
    session here, most of what gc spends on one. A writer that meets gc in that instant is
    refused as by any holder that has not said who it is yet.
    """
    path = session_path / session_lock.LOCK_FILE
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


def _has_artifacts(session: SessionDir) -> bool:
    store = session.artifact_store()
    return bool(store.loose_ids() or store.pack_names())


def _unnamed_artifacts(session: SessionDir) -> list[tuple[str, Path, int]] | HandshakeError:
    """Loose artifacts and whole pack segments that no journal record names.

    Returns the problem instead when the journal cannot be read to its end: then nobody can
    say what it names, and nothing is touched.
    """
    result = scan(session.journal, session.session_id)
    if result.damage:
        damage = result.damage
        message = (
            f"artifacts left as they are: the journal has {damage.kind.replace('_', ' ')} at "
            f"{damage.segment} offset {damage.offset}"
        )
        # A torn tail is what a writer refuses to append after (recover repairs it): the same error.
        return JournalNeedsRepair(message) if damage.repairable else IntegrityError(message)
    named: set[str] = set()
    for record in result.records:
        named.update(named_artifacts(record.data))
    store = session.artifact_store()
    found: list[tuple[str, Path, int]] = []
    for ident in store.loose_ids():
        if ident not in named:
            path = store.objects / ident
            found.append(("artifact", path, os.lstat(path).st_size))
    for name in store.pack_names():
        path = store.packs / name
        size = os.lstat(path).st_size
        frames = list(store.frames(name))
        walked = frames[-1].location.offset + HEADER_BYTES + frames[-1].length if frames else 0
        if walked != size:
            continue  # a frame walk that stops short (damage) cannot vouch for what the pack holds
        if not any(frame.artifact_id in named for frame in frames):
            found.append(("pack", path, size))
    return found


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of a real directory (not a link); none when it is missing."""
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return []
        with os.scandir(directory) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _describe(exc: BaseException) -> str:
    if isinstance(exc, HandshakeError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"
