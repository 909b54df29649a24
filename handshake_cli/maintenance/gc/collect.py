"""The collection: one pass over a root that applies a gc policy, session by session.

First the root's own debris (what a killed gc left in the trash, half-built sessions in
`staging/`), then each session: look at it without its lock (state, age, holder), decide
(kept, skipped and why, or a candidate), and for a candidate take its lock without waiting,
check that the journal did not move, and rename it into `<root>/trash/`. Renames are made
durable a batch at a time before a `trash.Deleter` deletes the trees. A session that stays
has its debris swept and, with `keep_checkpoints`, its unnamed artifacts pruned.

On a store that is not a directory (PostgreSQL) the decisions are the same; a candidate is
removed under its lease (`SessionStore.remove_unchanged`, whole, in one step), there is no trash,
staging or file debris, and pruning goes through `artifact_sizes` and `Lease.drop_artifacts`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from handshake_cli import faults
from handshake_cli.errors import (
    DurabilityError,
    EnvironmentFailure,
    HandshakeError,
    IntegrityError,
    NotFound,
    SessionLocked,
)
from handshake_cli.maintenance.gc.debris import Clock, Debris, entries, older, session_debris
from handshake_cli.maintenance.gc.policy import CONFIG_FILE, Policy
from handshake_cli.maintenance.gc.reachability import has_artifacts, unnamed_artifacts, unnamed_in_store
from handshake_cli.maintenance.gc.report import Removed, Report, Skipped
from handshake_cli.session.langgraph_thread import SESSION_PREFIX, thread_id_of, thread_state
from handshake_cli.session.state import ACTIVE, BLOCKED, CREATED, PAUSED, TERMINAL
from handshake_cli.session.status import (
    UNREADABLE,
    ErrorObject,
    effective_state,
    head_or_fold,
    session_problem,
)
from handshake_cli.storage import durable
from handshake_cli.storage import lock as session_lock
from handshake_cli.storage.contract import Lease, SessionStore
from handshake_cli.storage.filesystem import FilesystemStore, directory_size
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.scan import read_last_record
from handshake_cli.storage.store import SessionDir
from handshake_cli.storage.trash import Deleter, measure_and_delete

# Sessions renamed into the trash between two fsyncs of `sessions/`.
BATCH = 256
# What --include-unfinished may take, besides finished sessions (ACTIVE here means nobody
# holds the lock: interrupted).
_UNFINISHED_TAKEN = frozenset({PAUSED, BLOCKED, ACTIVE, CREATED})

Progress = Callable[[int, int], None]


@dataclass
class _Look:
    """What gc learnt about one session from its store, without its lease."""

    session_id: str
    session: SessionDir | None = None  # its directory, in a filesystem store
    stored_state: str | None = None
    last_record: Record | None = None
    age: float | None = None
    holder: session_lock.LockHolder | None = None
    thread_id: str | None = None  # a LangGraph thread's session: its thread id
    # Why its files cannot be trusted: the `error` of its skipped entry ({code, exit_code, message}).
    error: ErrorObject | None = None

    @property
    def problem(self) -> str | None:
        return self.error["message"] if self.error else None

    @property
    def state(self) -> str:
        if self.stored_state is None:
            return UNREADABLE
        if self.thread_id is not None:
            return thread_state(self.stored_state)
        return effective_state(self.stored_state, self.holder)

    @property
    def last_record_at(self) -> str | None:
        return self.last_record.ts if self.last_record else None


def collect(
    store: SessionStore,
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
        where = (
            ""
            if store.paths.url
            else f", or older_than in the [gc] table of {store.paths.root / CONFIG_FILE}"
        )
        report.notes.append(
            f"no age given (--older-than{where}): no session was considered for removal; "
            "only debris was swept"
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
    def __init__(
        self, store: SessionStore, policy: Policy, now: Clock, report: Report, deleter: Deleter
    ) -> None:
        self.store = store
        # A directory root keeps its own way of removing (batched renames into the trash,
        # helper processes deleting) and its debris; any other store removes under its lease.
        self.files = store if isinstance(store, FilesystemStore) else None
        self.paths = store.paths
        self.policy = policy
        self.now = now
        self.report = report
        self.trash = self.paths.trash
        self._trash_ready = False
        self._batch: list[tuple[Removed, Path]] = []
        self._skipped: set[str] = set()
        self.deleter = deleter

    # -- the root's own debris -------------------------------------------------------------

    def empty_trash(self) -> None:
        """What a killed gc left in the trash: already out of `sessions/`, so no grace."""
        if self.files is None:
            return  # a store that removes in one transaction leaves no trash
        for entry in entries(self.trash):
            if self.policy.dry_run:
                self._sweep("trash", Path(entry.path), entry)
            else:
                path = Path(entry.path)
                self.deleter.delete(path, partial(self._swept, "trash", path))

    def sweep_staging(self) -> None:
        """Half-built sessions of crashed creations (a creation in progress is younger than the grace)."""
        if self.files is None:
            return  # a store that creates in one transaction leaves nothing half built
        for entry in entries(self.paths.staging):
            if older(entry, self.policy.grace, self.now):
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
        look = _Look(session_id)
        if self.files is not None:
            look.session = SessionDir(session_id, self.paths.sessions / session_id)
        try:
            if self.files is not None:
                look.session = self.files.session(session_id)
            stored = head_or_fold(self.store, session_id, refuse_corruption=True)
            look.stored_state, look.last_record = stored.record.state, stored.last_record
            look.age = self.now() - _timestamp(look.last_record)
            look.holder = (
                session_lock.holder(look.session.path) if look.session else self.store.holder(session_id)
            )
            if session_id.startswith(SESSION_PREFIX):  # only a thread's session has that prefix
                look.thread_id = thread_id_of(self.store.read_config(session_id, check_job=False))
        except Exception as exc:  # one broken session must never be removed, nor hide the others
            if isinstance(exc, NotFound | FileNotFoundError) and self._gone(look):
                return None  # gone since the listing (another gc)
            if isinstance(exc, EnvironmentFailure | DurabilityError) and self.files is None:
                raise  # the database, not the session: stop and say so (exit 74)
            look.error = session_problem(exc)
        return look

    def _gone(self, look: _Look) -> bool:
        if look.session is not None:
            return not os.path.lexists(look.session.path)
        return look.session_id not in self.store.session_ids()

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
        if look.session_id in self._skipped:
            return
        self._skipped.add(look.session_id)
        entry: Skipped = {
            "session_id": look.session_id,
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
            command = f"handshake inspect {look.session_id} --verify {root_args}".strip()
            return f"{look.problem}; see: {command}"
        if reason == "locked":
            holder = look.holder or self._holder(look)
            return f"held by {holder.describe()}" if holder else "another process holds its lock"
        if look.thread_id is not None:
            return self._unfinished_thread(look)
        if look.stored_state == CREATED and self.policy.include_unfinished:
            return "created moments ago; a run takes it next"
        return (
            f"{look.state} is not finished: resume it with `handshake recover {look.session_id}"
            f"{' ' + root_args if root_args else ''}`, or pass --include-unfinished to remove it"
        )

    def _unfinished_thread(self, look: _Look) -> str:
        """A thread goes on until its program says otherwise: `recover` would not move it on."""
        thread = repr(look.thread_id)
        if self.policy.include_unfinished:  # only the grace kept it
            return f"LangGraph thread {thread} was written to moments ago; a saver may hold it next"
        return (
            f"LangGraph thread {thread} is not finished: its program ends it with "
            f"HandshakeSaver.finish_thread({thread}) (then gc removes it at --older-than), or pass "
            "--include-unfinished to remove it at --older-than as it is"
        )

    def _holder(self, look: _Look) -> session_lock.LockHolder | None:
        try:
            if look.session is not None:
                return session_lock.holder(look.session.path)
            return self.store.holder(look.session_id)
        except NotFound:
            return None

    # -- removal -----------------------------------------------------------------------------

    def _remove(self, look: _Look) -> None:
        entry: Removed = {
            "session_id": look.session_id,
            "state": look.state,
            "last_record_at": look.last_record_at,
            "age_seconds": round(look.age or 0.0, 3),
            "bytes": 0,
        }
        if look.session is None:
            self._remove_leased(look, entry)
            return
        session = look.session
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

    def _remove_leased(self, look: _Look, entry: Removed) -> None:
        """Any store but a directory: `remove_unchanged`, which under the session's lease
        checks the journal did not move and removes the session whole in one step."""
        try:
            if self.policy.dry_run:
                entry["bytes"] = self.store.session_bytes(look.session_id)
            else:
                assert look.last_record is not None
                size = self.store.remove_unchanged(look.session_id, look.last_record)
                if size is None:
                    self._skip(
                        look,
                        "changed",
                        "a record was appended before gc held its lease; left for the next gc",
                    )
                    return
                entry["bytes"] = size
        except NotFound:
            return  # removed since gc looked (another gc)
        except SessionLocked:
            self._skip(look, "locked")
            return
        self.report.removed.append(entry)

    def _lease(self, look: _Look) -> Lease | None:
        """The session's lease, without waiting; None (and the reason reported) when held or gone."""
        try:
            return self.store.acquire(look.session_id, command="handshake gc")
        except NotFound:
            return None  # removed since gc looked (another gc)
        except SessionLocked:
            self._skip(look, "locked")
            return None

    def _lock(self, look: _Look) -> int | None:
        """The session's flock, without waiting; None (and the reason reported) when busy or gone."""
        assert look.session is not None
        try:
            fd = session_lock.try_lock(look.session.path)
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

    def _removed(self, entry: Removed, target: Path, size: int, error: str | None) -> None:
        if error is not None:
            self.report.errors.append({"path": self._rel(target), "error": error})
            return
        entry["bytes"] = size
        self.report.removed.append(entry)

    # -- debris inside a session that stays --------------------------------------------------

    def _maintain(self, look: _Look) -> None:
        if look.session is None:
            self._maintain_leased(look)
            return
        session = look.session
        debris = session_debris(session, self.policy, self.now)
        prune = self.policy.keep_checkpoints is not None and look.stored_state in TERMINAL
        if prune and not has_artifacts(session):
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
                    stored = head_or_fold(self.store, session.session_id, refuse_corruption=True)
                except Exception as exc:
                    self._damaged(look, exc)
                    return
                if stored.record.state in TERMINAL:
                    self._prune(look)
        finally:
            os.close(fd)

    def _maintain_leased(self, look: _Look) -> None:
        """Any store but a directory has no debris of its own (what it does is one
        transaction); with `keep_checkpoints`, a finished session's unnamed artifacts go."""
        if self.policy.keep_checkpoints is None or look.stored_state not in TERMINAL:
            return
        try:
            if not self.store.artifact_sizes(look.session_id):
                return
        except NotFound:
            return
        if look.holder is not None:
            self._skip(look, "locked", "its unnamed artifacts wait for a gc that finds it free")
            return
        if self.policy.dry_run:
            self._prune_leased(look, None)
            return
        lease = self._lease(look)
        if lease is None:
            return
        with lease:
            try:
                stored = head_or_fold(self.store, look.session_id, refuse_corruption=True)
            except (EnvironmentFailure, DurabilityError):
                raise
            except Exception as exc:
                self._damaged(look, exc)
                return
            if stored.record.state in TERMINAL:
                self._prune_leased(look, lease)

    def _prune_leased(self, look: _Look, lease: Lease | None) -> None:
        """Drop (under `lease`; with None, only report) the artifacts no record names."""
        try:
            unnamed = unnamed_in_store(self.store, look.session_id)
        except (EnvironmentFailure, DurabilityError):
            raise
        except Exception as exc:
            self._damaged(look, exc, "artifacts left as they are: ")
            return
        if isinstance(unnamed, HandshakeError):
            self._damaged(look, unnamed)
            return
        if not unnamed:
            return
        if lease is not None:
            lease.drop_artifacts(list(unnamed))
        # Named as a bundle names it (FORMAT.md, "Bundles"): relative to the root, as on files.
        for ident, size in sorted(unnamed.items()):
            path = f"sessions/{look.session_id}/artifacts/objects/{ident}"
            self.report.swept.append({"kind": "artifact", "path": path, "bytes": size})

    def _prune(self, look: _Look) -> None:
        session = look.session
        assert session is not None
        try:
            unnamed = unnamed_artifacts(session)
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

    def _sweep_items(self, items: list[Debris]) -> None:
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

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.paths.root))
        except ValueError:
            return str(path)


def _timestamp(record: Record) -> float:
    return datetime.fromisoformat(record.ts).timestamp()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, HandshakeError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"
