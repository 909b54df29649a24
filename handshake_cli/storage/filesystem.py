"""The filesystem store: the session-store contract (`storage.contract`) over the files of
DESIGN section 2, `<root>/sessions/<id>/`.

An adapter: what each operation does on disk is written once, in the modules it calls
(`store` for making and opening sessions, `journal` for scans and appends, `artifacts`,
`lock`, `head`, `trash`). What lives here is what had no home in storage before: cutting a
torn tail with its bytes kept in `quarantine/`, and removing a session whole.

"Durable" here is fsynced: a file's data, and the directory of a new name. The lease is the
session's flock, which the kernel drops when its process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from handshake_cli import faults
from handshake_cli.errors import IntegrityError, NotFound, SessionExists
from handshake_cli.paths import Paths
from handshake_cli.storage import durable, head, lock, requests, session_files
from handshake_cli.storage.artifacts import HEADER_BYTES, PackWriter
from handshake_cli.storage.contract import (
    ArtifactCheck,
    CheckpointRequest,
    Durability,
    HeadFor,
    JournalAppender,
    Lease,
    SessionFile,
    SessionStore,
    TailRepair,
)
from handshake_cli.storage.journal import backwards
from handshake_cli.storage.journal.codec import DEFAULT_SEGMENT_BYTES, Clock, Record, segment_name, utc_now
from handshake_cli.storage.journal.scan import (
    Damage,
    ScanResult,
    Start,
    list_segments,
    read_last_record,
    read_line_at,
    read_record_at,
    scan,
)
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.lock import LockHolder, SessionLock
from handshake_cli.storage.store import SessionDir, Store, validate_session_id

# Where a removed session goes before it is deleted; gc empties what a crash leaves there.
QUARANTINE = "quarantine/"
TORN = ".torn"


class FilesystemStore(SessionStore):
    """Sessions as directories under one root."""

    request_poll: float | None = None  # a holder reads `requests/` when signalled (DECISIONS.md)

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.store = Store(paths)
        self._checked: dict[str, tuple[SessionDir, int, int]] = {}  # with the directory's (dev, ino)

    def session(self, session_id: str) -> SessionDir:
        """An existing session's directory, checked (`Store.session`: no link, the files in
        their places). Checked whole the first time this store is asked for it; after that one
        lstat says it is still the same directory (a session read through ten operations
        costs one check, not ten), and anything else is checked whole again, so a session
        moved away meanwhile is NotFound as before."""
        found = self._checked.get(session_id)
        if found is not None:
            session, dev, ino = found
            try:
                st = os.lstat(session.path)
                if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == (dev, ino):
                    return session
            except OSError:
                pass
            del self._checked[session_id]
        session = self.store.session(session_id)
        try:
            st = os.lstat(session.path)
        except OSError:
            return session  # moved away just now: the read that follows says so
        self._checked[session_id] = (session, st.st_dev, st.st_ino)
        return session

    # -- sessions -------------------------------------------------------------------------

    def session_ids(self) -> list[str]:
        return self.store.session_ids()

    def create_session(
        self,
        config: dict[str, Any],
        created_data: dict[str, Any],
        *,
        head_for: HeadFor,
        session_id: str | None = None,
        clock: Clock | None = None,
    ) -> str:
        made = self.store.create_session(
            config, created_data, head_for=head_for, session_id=session_id, clock=clock or utc_now
        )
        return made.session_id

    def remove_session(self, session_id: str) -> None:
        """Under the lease, one rename into `<root>/trash/` (made durable), then the tree is
        deleted: a crash leaves the session whole in `sessions/` or out of it."""
        self.session(session_id)
        with self.acquire(session_id, command=f"remove session {session_id}") as lease:
            lease.remove_session()

    def remove_unchanged(self, session_id: str, last: Record) -> int | None:
        with self.acquire(session_id, command="handshake gc") as lease:
            found = self.last_record(session_id)
            if found is None or (found.seq, found.sum) != (last.seq, last.sum):
                return None
            size = self.session_bytes(session_id)
            lease.remove_session()
        return size

    def read_config(self, session_id: str, *, check_job: bool = True) -> dict[str, Any]:
        return self.session(session_id).read_config(check_job=check_job)

    def location(self, session_id: str) -> str:
        return str(self.paths.sessions / session_id)

    def session_bytes(self, session_id: str) -> int:
        return directory_size(self.session(session_id).path)

    # -- the journal ----------------------------------------------------------------------

    def scan(
        self, session_id: str, *, start: Start | None = None, decode: bool | frozenset[str] = True
    ) -> ScanResult:
        return scan(self.session(session_id).journal, session_id, decode=decode, start=start)

    def last_record(self, session_id: str) -> Record | None:
        return read_last_record(self.session(session_id).journal)

    def record_at(self, session_id: str, segment: str, offset: int) -> Record | None:
        return read_record_at(self.session(session_id).journal, segment, offset)

    def record_line_at(self, session_id: str, segment: str, offset: int) -> tuple[Record, bytes] | None:
        return read_line_at(self.session(session_id).journal, segment, offset)

    def first_record(self, session_id: str) -> Record | None:
        return read_record_at(self.session(session_id).journal, segment_name(1), 0)

    def start_near(self, session_id: str, seq: int) -> Start | None:
        """The first record of the segment holding `seq` (segments are named after their first)."""
        journal = self.session(session_id).journal
        names = [n for n in list_segments(journal) if int(n.split(".")[0]) <= seq]
        first = read_record_at(journal, names[-1], 0) if names else None
        return Start(first.segment, 0, first.seq, first.prev) if first is not None else None

    def find_backwards(
        self, session_id: str, type_: str, *, at_most: int | None = None
    ) -> Iterator[tuple[Record, bytes]]:
        return backwards.find_backwards(self.session(session_id).journal, session_id, type_, at_most=at_most)

    def journal_bytes(self, session_id: str) -> int:
        try:
            entries = os.scandir(self.session(session_id).journal)
            return sum(e.stat(follow_symlinks=False).st_size for e in entries)
        except FileNotFoundError:
            return 0

    # -- artifacts, the head cache, quarantine --------------------------------------------

    def get_artifact(self, session_id: str, artifact_id: str) -> bytes:
        return self.session(session_id).artifact_store().get(artifact_id)

    def read_head(self, session_id: str) -> dict[str, Any] | None:
        return head.read(self.session(session_id).path)

    def quarantined(self, session_id: str) -> list[str]:
        folder = self.session(session_id).quarantine
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        return sorted(
            QUARANTINE + e.name
            for e in entries
            if e.name.endswith(TORN)
            and not e.name.startswith(durable.TEMP_PREFIX)
            and e.is_file(follow_symlinks=False)
        )

    def read_quarantined(self, session_id: str, name: str) -> bytes:
        session = self.session(session_id)
        stem = name.removeprefix(QUARANTINE)
        if not name.startswith(QUARANTINE) or "/" in stem or not stem.endswith(TORN):
            raise NotFound(f"{name!r} is not a name quarantine gives")
        try:
            return durable.read_bytes(session.quarantine / stem)
        except FileNotFoundError:
            raise NotFound(f"session {session_id} keeps nothing under {name}") from None

    def artifact_sizes(self, session_id: str) -> dict[str, int]:
        artifacts = self.session(session_id).artifact_store()
        sizes: dict[str, int] = {}
        for ident in artifacts.loose_ids():
            with contextlib.suppress(FileNotFoundError):
                sizes[ident] = os.lstat(artifacts.objects / ident).st_size
        for frame in artifacts.frames():
            sizes.setdefault(frame.artifact_id, frame.length)
        return sizes

    def check_artifacts(self, session_id: str) -> ArtifactCheck:
        artifacts = self.session(session_id).artifact_store()
        checked, problems = artifacts.verify()
        present = set(artifacts.loose_ids()) | {frame.artifact_id for frame in artifacts.frames()}
        return {"checked": checked, "problems": problems, "present": present}

    # -- bundles ----------------------------------------------------------------------------

    def session_files(self, session_id: str, skipped: list[dict[str, str]]) -> Iterator[str | SessionFile]:
        return session_files.session_files(self.session(session_id).path, skipped)

    def staging_area(self, session_id: str) -> Path:
        """Under `<root>/staging/`, on the filesystem of `sessions/`: landing is one rename,
        and what a crash leaves there is gc's to sweep."""
        validate_session_id(session_id)
        durable.ensure_root(self.paths.root)
        durable.ensure_subdir(self.paths.sessions)
        durable.ensure_subdir(self.paths.staging)
        staging = self.paths.staging / f"{session_id}.{os.urandom(4).hex()}"
        durable.make_dir(staging)
        return staging

    def import_session(self, session_id: str, staged: Path) -> None:
        """One rename of `staged/sessions/<id>` into `sessions/`, made durable."""
        target = self.paths.sessions / validate_session_id(session_id)
        if os.path.lexists(target):
            raise SessionExists(f"session {session_id} appeared under {self.paths.root} during the import")
        self._checked.pop(session_id, None)
        with durable.environment("move the imported session into", target):
            os.rename(staged / "sessions" / session_id, target)
        durable.fsync_dir(self.paths.sessions)

    # -- the lease ------------------------------------------------------------------------

    def acquire(self, session_id: str, *, command: str | None = None) -> FilesystemLease:
        session = self.session(session_id)
        held = SessionLock(session.path, session_id)
        # Who holds it is what `acquire` wrote to owner.json: not read back, where a failed
        # read (a full disk, an I/O error) would pass for a file that vanished.
        me = held.acquire(command)
        return FilesystemLease(session, held, me, store=self)

    def holder(self, session_id: str) -> LockHolder | None:
        return lock.holder(self.session(session_id).path)

    # -- asking a running session for a checkpoint: files in requests/ (`storage.requests`) --

    def submit_request(self, session_id: str, reason: str | None) -> CheckpointRequest:
        return requests.submit(self.session(session_id).path, reason)

    def wait_for_answer(
        self,
        session_id: str,
        request: CheckpointRequest,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any] | None:
        return requests.wait_for_answer(self.session(session_id).path, request, timeout, alive)

    def withdraw_request(self, session_id: str, request: CheckpointRequest) -> None:
        requests.withdraw(self.paths.sessions / session_id, request)


class FilesystemLease(Lease):
    """The session's flock, held by this process, and what only its holder may do."""

    def __init__(
        self, session: SessionDir, held: SessionLock, holder: LockHolder, *, store: FilesystemStore
    ) -> None:
        self.session = session
        self.session_id = session.session_id
        self.holder = holder
        self._lock = held
        self._store = store

    def open_journal(
        self, *, clock: Clock | None = None, start: Start | None = None, segment_bytes: int | None = None
    ) -> FilesystemAppender:
        journal = JournalWriter.open(
            self.session.journal,
            self.session_id,
            clock=clock or utc_now,
            start=start,
            segment_bytes=segment_bytes or DEFAULT_SEGMENT_BYTES,
        )
        try:
            pack = self.session.artifact_store().pack_writer()
        except BaseException:
            journal.close()
            raise
        return FilesystemAppender(journal, pack)

    def put_artifact(self, data: bytes) -> str:
        return self.session.artifact_store().put_loose(data)

    def write_head(self, fields: dict[str, Any]) -> bool:
        return head.write(self.session.path, fields)

    def repair_torn_tail(self, damage: Damage) -> TailRepair:
        if not damage.repairable:
            raise IntegrityError(
                f"session {self.session_id}: the damage at {damage.segment} offset {damage.offset} is "
                f"corruption ({damage.detail}), which is never cut off"
            )
        done = repair_torn_tail(self.session, damage)
        return TailRepair(
            segment=done["segment"],
            offset=done["offset"],
            length=done["length"],
            quarantined=done["quarantined"],
        )

    def pending_requests(self) -> list[CheckpointRequest]:
        return requests.pending_requests(self.session.path)

    def answer_request(self, request: CheckpointRequest, payload: dict[str, Any]) -> bool:
        return requests.answer(self.session.path, request, payload)

    def remove_session(self) -> None:
        """One rename into `<root>/trash/` under the lock, made durable; then the tree is
        deleted (what cannot be, stays in the trash for gc). The lock ends with the rename."""
        session, paths = self.session, self._store.paths
        self._store._checked.pop(self.session_id, None)
        target = paths.trash / f"{self.session_id}.{os.urandom(4).hex()}"
        try:
            durable.ensure_subdir(paths.trash)
            with durable.environment("move into the trash", session.path):
                os.rename(session.path, target)
        finally:
            self.release()
        durable.fsync_dir(paths.sessions)
        durable.fsync_dir(paths.trash)
        from handshake_cli.storage.trash import measure_and_delete  # subprocess: not for readers

        measure_and_delete(target)

    def drop_artifacts(self, artifact_ids: Collection[str]) -> int:
        """Loose artifacts one by one; a pack segment only when every frame in it goes (and
        its frame walk reaches its end: a damaged pack cannot vouch for what it holds)."""
        dropping = set(artifact_ids)
        artifacts = self.session.artifact_store()
        doomed = [artifacts.objects / ident for ident in artifacts.loose_ids() if ident in dropping]
        for name in artifacts.pack_names():
            path = artifacts.packs / name
            frames = list(artifacts.frames(name))
            walked = frames[-1].location.offset + HEADER_BYTES + frames[-1].length if frames else 0
            if frames and walked == os.lstat(path).st_size and all(f.artifact_id in dropping for f in frames):
                doomed.append(path)
        freed = 0
        for path in doomed:
            with durable.environment("drop an unnamed artifact", path):
                freed += os.lstat(path).st_size
                os.unlink(path)
        for directory in {path.parent for path in doomed}:
            durable.fsync_dir(directory)
        return freed

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> FilesystemLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FilesystemAppender(JournalAppender):
    """A journal writer and a pack writer, synced in DESIGN section 2's order: artifacts first."""

    def __init__(self, journal: JournalWriter, pack: PackWriter) -> None:
        self.journal = journal
        self.pack = pack

    @property
    def last_seq(self) -> int:
        return self.journal.last_seq

    def append(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        durability: Durability = Durability.NOW,
        encoded: bytes | None = None,
    ) -> Record:
        now = durability is Durability.NOW
        if now:
            self.pack.sync()  # an artifact a record names is durable before the record
        return self.journal.append(type_, data, sync=now, encoded=encoded)

    def add_artifact(self, data: bytes) -> str:
        return self.pack.add(data)[0]

    def sync(self) -> None:
        self.pack.sync()
        self.journal.sync()

    def sync_artifacts(self) -> None:
        self.pack.sync()

    def close(self) -> None:
        self.journal.close()
        self.pack.close()


# -- cutting a torn tail ------------------------------------------------------------------


def repair_torn_tail(session: SessionDir, damage: Damage) -> TailRepair:
    """Cut a torn tail off the newest segment; its bytes go to quarantine/ first, durably."""
    segment = session.journal / damage.segment
    with durable.environment("open for repair", segment):
        fd = os.open(segment, os.O_RDWR | durable.NOFOLLOW | durable.CLOEXEC)
    try:
        with durable.environment("read the torn tail of", segment):
            size = os.fstat(fd).st_size
            torn = os.pread(fd, size - damage.offset, damage.offset)
        # A preallocated tail's newlines after the torn bytes are no part of them.
        kept = len(torn.rstrip(b"\n"))
        torn = torn[: kept + 1 if kept < len(torn) else kept]
        quarantined = None
        if torn:
            quarantined = quarantine(session, f"{damage.segment}.{damage.offset}", torn)
            faults.crash_point("recovery_after_quarantine")
        # A failure from here leaves the torn tail (safe in quarantine) for the next recovery.
        with durable.environment("cut the torn tail of", segment):
            os.ftruncate(fd, damage.offset)
            if damage.offset and os.pread(fd, 1, damage.offset - 1) != b"\n":
                os.pwrite(fd, b"\n", damage.offset)
        durable.fsync_fd(fd, path=segment)
    finally:
        os.close(fd)
    return {
        "segment": damage.segment,
        "offset": damage.offset,
        "length": damage.length,
        "quarantined": quarantined,
    }


def quarantine(session: SessionDir, stem: str, data: bytes) -> str:
    """Keep `data` under `quarantine/<stem>.torn`, durably, never replacing a file there.

    The same offset can be cut twice (a tail cut at X, records appended at X, power lost,
    another cut at X), so a taken name moves on to `<stem>.2.torn`, `<stem>.3.torn`...; a
    file already holding exactly these bytes (a recovery that died after quarantining them)
    is kept as it is. The bytes reach their name by a hard link, which fails rather than
    replace, and only after they are synced: a name in quarantine/ never holds a part."""
    durable.ensure_subdir(session.quarantine, durable=True)
    tmp = durable.temp_path_for(session.quarantine / f"{stem}{TORN}")
    fd = durable.create_file(tmp)
    try:
        try:
            durable.write_all(fd, data)
            durable.fsync_fd(fd)
        finally:
            os.close(fd)
        number = 1
        while True:
            name = f"{stem}{TORN}" if number == 1 else f"{stem}.{number}{TORN}"
            try:
                with durable.environment("name the quarantined bytes", session.quarantine / name):
                    os.link(tmp, session.quarantine / name)
            except FileExistsError:
                if not _holds(session.quarantine / name, data):
                    number += 1
                    continue
            durable.fsync_dir(session.quarantine)
            return QUARANTINE + name
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # a temporary name gc sweeps; the bytes are kept or the error says why


def directory_size(path: Path) -> int:
    """The bytes of every file under `path` (one that vanishes while it is counted is none)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _holds(path: Path, data: bytes) -> bool:
    try:
        return durable.read_bytes(path) == data
    except (OSError, IntegrityError):
        return False
