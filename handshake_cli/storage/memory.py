"""The in-memory store: the session-store contract's reference implementation.

Nothing here is shaped by files. A journal is a list of appended lines (the codec's exact
bytes), a position is a line's index in it, a lease is an entry in a table, and "durable"
is a mark: `Memory.crash()` keeps what was synced and forgets the rest, as a machine that
loses its power would. It runs the conformance suite in milliseconds, gives tests of the
layers above a store without a disk, and proves that the contract asks for behaviour, not
for the filesystem store's layout.

Lines are verified on every read with the journal codec (`storage.journal.codec`), exactly as
the filesystem store verifies them: checksum, seq and chain, then the record's content.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from handshake_cli.errors import (
    ArtifactCorrupt,
    IntegrityError,
    JournalNeedsRepair,
    NotFound,
    SessionExists,
    SessionLocked,
)
from handshake_cli.paths import Paths
from handshake_cli.storage import durable
from handshake_cli.storage.artifacts import ARTIFACT_ID, ArtifactStore, artifact_id
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
from handshake_cli.storage.head import HEAD_FORMAT
from handshake_cli.storage.journal import codec, records
from handshake_cli.storage.journal.codec import Clock, Record, segment_name, utc_now
from handshake_cli.storage.journal.records import RecordInvalid
from handshake_cli.storage.journal.scan import Damage, ScanResult, Start, list_segments
from handshake_cli.storage.lock import LockHolder
from handshake_cli.storage.store import (
    FORMAT_VERSION,
    check_job_binding,
    job_digest,
    new_session_id,
    parse_config,
    validate_session_id,
)

# Every record's position is (JOURNAL, index of its line).
JOURNAL = "journal"


@dataclass
class _Session:
    config: dict[str, Any]
    lines: list[bytes] = field(default_factory=list)  # one per append, newline included
    synced: int = 0  # how many of `lines` are durable
    artifacts: dict[str, bytes] = field(default_factory=dict)
    unsynced_artifacts: set[str] = field(default_factory=set)
    head: bytes | None = None  # the head cache, as JSON text
    quarantine: dict[str, bytes] = field(default_factory=dict)
    lease: LockHolder | None = None
    requests: dict[str, CheckpointRequest] = field(default_factory=dict)  # by nonce, in order
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)


class Memory:
    """What the sessions live in: shared by every `MemoryStore` made over it, the way a disk
    is shared by the processes that open it."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}

    def crash(self) -> None:
        """The machine stops: what was not synced is lost, and every lease is let go."""
        for session in self.sessions.values():
            del session.lines[session.synced :]
            for ident in session.unsynced_artifacts:
                session.artifacts.pop(ident, None)
            session.unsynced_artifacts.clear()
            session.lease = None


class MemoryStore(SessionStore):
    request_poll: float | None = None  # one process: an asker signals, as on files

    def __init__(self, memory: Memory | None = None, paths: Paths | None = None) -> None:
        self.memory = memory if memory is not None else Memory()
        self.paths = paths or Paths(Path("/memory"))  # a name for messages: nothing is written there

    def _session(self, session_id: str) -> _Session:
        validate_session_id(session_id)
        found = self.memory.sessions.get(session_id)
        if found is None:
            raise NotFound(f"no session {session_id} in this memory store")
        return found

    # -- sessions -------------------------------------------------------------------------

    def session_ids(self) -> list[str]:
        return sorted(self.memory.sessions)

    def create_session(
        self,
        config: dict[str, Any],
        created_data: dict[str, Any],
        *,
        head_for: HeadFor,
        session_id: str | None = None,
        clock: Clock | None = None,
    ) -> str:
        session_id = new_session_id() if session_id is None else validate_session_id(session_id)
        if session_id in self.memory.sessions:
            raise SessionExists(f"session {session_id} already exists in this memory store")
        clock = clock or utc_now
        created_at = clock()
        stored = copy.deepcopy(config)
        stored.update(format_version=FORMAT_VERSION, session_id=session_id, created_at=created_at)
        session = _Session(stored)
        first_ts = iter([created_at])  # record 1 carries the config's created_at
        appender = MemoryAppender(session, session_id, lambda: next(first_ts, None) or clock())
        data = {
            **created_data,
            "session_id": session_id,
            "format_version": FORMAT_VERSION,
            "job_sha256": job_digest(config.get("job")),
        }
        record = appender.append("session.created", data)
        session.head = _head_bytes(head_for(record))
        self.memory.sessions[session_id] = session  # whole, in one step
        return session_id

    def remove_session(self, session_id: str) -> None:
        session = self._session(session_id)
        if session.lease is not None:
            raise _locked(session_id, session.lease)
        del self.memory.sessions[session_id]

    def remove_unchanged(self, session_id: str, last: Record) -> int | None:
        with self.acquire(session_id, command="handshake gc") as lease:
            found = self.last_record(session_id)
            if found is None or (found.seq, found.sum) != (last.seq, last.sum):
                return None
            size = self.session_bytes(session_id)
            lease.remove_session()
        return size

    def read_config(self, session_id: str, *, check_job: bool = True) -> dict[str, Any]:
        session = self._session(session_id)
        if check_job:
            first = _intact(session.lines, 0) if session.lines else None
            check_job_binding(session_id, session.config, first)
        return copy.deepcopy(session.config)

    def location(self, session_id: str) -> str:
        return f"memory store, session {session_id}"

    def session_bytes(self, session_id: str) -> int:
        session = self._session(session_id)
        return (
            sum(map(len, session.lines))
            + sum(map(len, session.artifacts.values()))
            + sum(map(len, session.quarantine.values()))
            + len(session.head or b"")
            + len(json.dumps(session.config, default=str))
        )

    # -- the journal ----------------------------------------------------------------------

    def scan(
        self, session_id: str, *, start: Start | None = None, decode: bool | frozenset[str] = True
    ) -> ScanResult:
        return _scan(self._session(session_id).lines, session_id, start, decode)

    def last_record(self, session_id: str) -> Record | None:
        lines = self._session(session_id).lines
        for index in range(len(lines) - 1, -1, -1):
            found = _intact(lines, index)
            if found is not None:
                return found
        return None

    def record_at(self, session_id: str, segment: str, offset: int) -> Record | None:
        found = self.record_line_at(session_id, segment, offset)
        return found[0] if found else None

    def record_line_at(self, session_id: str, segment: str, offset: int) -> tuple[Record, bytes] | None:
        lines = self._session(session_id).lines
        if segment != JOURNAL or not 0 <= offset < len(lines):
            return None
        record = _intact(lines, offset)
        return (record, lines[offset].removesuffix(b"\n")) if record else None

    def first_record(self, session_id: str) -> Record | None:
        lines = self._session(session_id).lines
        return _intact(lines, 0) if lines else None

    def start_near(self, session_id: str, seq: int) -> Start | None:
        lines = self._session(session_id).lines
        if not 1 <= seq <= len(lines):
            return None
        found = _intact(lines, seq - 1)
        return Start(JOURNAL, seq - 1, found.seq, found.prev) if found and found.seq == seq else None

    def find_backwards(
        self, session_id: str, type_: str, *, at_most: int | None = None
    ) -> Iterator[tuple[Record, bytes]]:
        lines = self._session(session_id).lines
        for index in range(len(lines) - 1, -1, -1):
            record = _intact(lines, index)
            if record is None or record.type != type_ or (at_most is not None and record.seq > at_most):
                continue
            before = _intact(lines, index - 1) if index else None
            follows = (
                record.seq == 1 and record.prev == codec.genesis(session_id)
                if index == 0
                else before is not None and (before.seq, before.sum) == (record.seq - 1, record.prev)
            )
            if follows:
                yield record, lines[index].removesuffix(b"\n")

    def journal_bytes(self, session_id: str) -> int:
        return sum(map(len, self._session(session_id).lines))

    # -- artifacts, the head cache, quarantine --------------------------------------------

    def get_artifact(self, session_id: str, ident: str) -> bytes:
        if not ARTIFACT_ID.fullmatch(ident):
            raise ArtifactCorrupt(f"{ident!r} is not an artifact id")
        data = self._session(session_id).artifacts.get(ident)
        if data is None:
            raise NotFound(f"artifact {ident} is not in this session", details={"artifact_id": ident})
        if artifact_id(data) != ident:
            raise ArtifactCorrupt(
                f"artifact {ident} is damaged: its bytes no longer match its id",
                details={"artifact_id": ident},
            )
        return data

    def read_head(self, session_id: str) -> dict[str, Any] | None:
        raw = self._session(session_id).head
        found = json.loads(raw) if raw is not None else None
        return found if isinstance(found, dict) and found.get("format_version") == HEAD_FORMAT else None

    def quarantined(self, session_id: str) -> list[str]:
        return sorted(self._session(session_id).quarantine)

    def read_quarantined(self, session_id: str, name: str) -> bytes:
        found = self._session(session_id).quarantine.get(name)
        if found is None:
            raise NotFound(f"session {session_id} keeps nothing under {name}")
        return found

    def artifact_sizes(self, session_id: str) -> dict[str, int]:
        return {ident: len(data) for ident, data in self._session(session_id).artifacts.items()}

    def check_artifacts(self, session_id: str) -> ArtifactCheck:
        artifacts = self._session(session_id).artifacts
        problems: list[dict[str, Any]] = [
            {"kind": "artifact_corrupt", "artifact_id": ident, "repairable": False}
            for ident, data in sorted(artifacts.items())
            if artifact_id(data) != ident
        ]
        return {"checked": len(artifacts), "problems": problems, "present": set(artifacts)}

    # -- bundles: the session shown in the bundle layout, one segment and loose artifacts --

    def session_files(self, session_id: str, skipped: list[dict[str, str]]) -> Iterator[str | SessionFile]:
        import tomli_w

        session = self._session(session_id)
        if session.head is not None:
            yield _Bytes("head.json", session.head)
        yield _Bytes("session.toml", tomli_w.dumps(session.config).encode("utf-8"))
        yield "journal"
        yield _Bytes(f"journal/{segment_name(1)}", b"".join(session.lines))
        if session.artifacts:
            yield "artifacts"
            yield "artifacts/objects"
            for ident, data in sorted(session.artifacts.items()):
                yield _Bytes(f"artifacts/objects/{ident}", data)
        if session.quarantine:
            yield "quarantine"
            for name, data in sorted(session.quarantine.items()):
                yield _Bytes(name, data)

    def staging_area(self, session_id: str) -> Path:
        validate_session_id(session_id)
        return Path(tempfile.mkdtemp(prefix=f"handshake-import-{session_id}."))

    def import_session(self, session_id: str, staged: Path) -> None:
        validate_session_id(session_id)
        if session_id in self.memory.sessions:
            raise SessionExists(f"session {session_id} already exists in this memory store")
        top = staged / "sessions" / session_id
        session = _Session(parse_config(durable.read_bytes(top / "session.toml"), session_id))
        for name in list_segments(top / "journal"):
            session.lines += durable.read_bytes(top / "journal" / name).splitlines(keepends=True)
        session.synced = len(session.lines)
        artifacts = ArtifactStore(top / "artifacts")
        for ident in {*artifacts.loose_ids(), *(frame.artifact_id for frame in artifacts.frames())}:
            try:
                session.artifacts[ident] = artifacts.get(ident)
            except ArtifactCorrupt:
                pass  # damage is not carried: reading it says it is missing
        if (top / "head.json").is_file():
            session.head = durable.read_bytes(top / "head.json")
        if (top / "quarantine").is_dir():
            for path in sorted((top / "quarantine").iterdir()):
                session.quarantine[f"quarantine/{path.name}"] = durable.read_bytes(path)
        self.memory.sessions[session_id] = session  # whole, in one step

    # -- the lease ------------------------------------------------------------------------

    def acquire(self, session_id: str, *, command: str | None = None) -> MemoryLease:
        session = self._session(session_id)
        if session.lease is not None:
            raise _locked(session_id, session.lease)
        session.lease = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            command=command or "handshake",
        )
        return MemoryLease(self.memory, session, session_id, session.lease)

    def holder(self, session_id: str) -> LockHolder | None:
        return self._session(session_id).lease

    # -- asking a running session for a checkpoint ----------------------------------------

    def submit_request(self, session_id: str, reason: str | None) -> CheckpointRequest:
        request = CheckpointRequest(secrets.token_hex(8), reason)
        self._session(session_id).requests[request.nonce] = request
        return request

    def wait_for_answer(
        self,
        session_id: str,
        request: CheckpointRequest,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any] | None:
        answers = self._session(session_id).answers
        deadline = time.monotonic() + timeout
        while True:
            if request.nonce in answers:
                return answers.pop(request.nonce)
            if not alive() or time.monotonic() >= deadline:
                return answers.pop(request.nonce, None)
            time.sleep(0.02)

    def withdraw_request(self, session_id: str, request: CheckpointRequest) -> None:
        found = self.memory.sessions.get(session_id)
        if found is not None:
            found.requests.pop(request.nonce, None)


class _Bytes(SessionFile):
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.size, self.mtime = name, len(data), int(time.time())
        self._data = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        part = self._data[: n if n >= 0 else len(self._data)]
        self._data = self._data[len(part) :]
        return bytes(part)


def _locked(session_id: str, holder: LockHolder) -> SessionLocked:
    return SessionLocked(
        f"session {session_id} is locked by {holder.describe()}",
        details={"lock_holder": holder.as_json()},
    )


def _head_bytes(fields: dict[str, Any]) -> bytes:
    return json.dumps({"format_version": HEAD_FORMAT, **fields}, sort_keys=True).encode()


class MemoryLease(Lease):
    def __init__(self, memory: Memory, session: _Session, session_id: str, holder: LockHolder) -> None:
        self.memory = memory
        self.session = session
        self.session_id = session_id
        self.holder = holder

    def open_journal(
        self, *, clock: Clock | None = None, start: Start | None = None, segment_bytes: int | None = None
    ) -> MemoryAppender:
        result = _scan(self.session.lines, self.session_id, start, False)
        if result.corruption:
            damage = result.corruption
            raise IntegrityError(
                f"journal is corrupt at {damage.segment} offset {damage.offset}: {damage.detail}"
            )
        if result.torn_tail:
            raise JournalNeedsRepair(
                f"journal ends in a torn tail at line {result.torn_tail.offset}; "
                "recovery must cut it off before anything is appended"
            )
        return MemoryAppender(
            self.session, self.session_id, clock or utc_now, result.last_seq, result.last_sum
        )

    def put_artifact(self, data: bytes) -> str:
        ident = artifact_id(data)
        self.session.artifacts[ident] = data
        self.session.unsynced_artifacts.discard(ident)
        return ident

    def write_head(self, fields: dict[str, Any]) -> bool:
        self.session.head = _head_bytes(fields)
        return True

    def repair_torn_tail(self, damage: Damage) -> TailRepair:
        lines = self.session.lines
        if not damage.repairable or damage.segment != JOURNAL or not 0 <= damage.offset <= len(lines):
            raise IntegrityError(
                f"session {self.session_id}: the damage at {damage.segment} offset {damage.offset} "
                f"is not a torn tail of this journal ({damage.detail}); it is never cut off"
            )
        torn = b"".join(lines[damage.offset :])
        name = self._quarantine(f"{JOURNAL}.{damage.offset}", torn) if torn else None
        del lines[damage.offset :]
        self.session.synced = len(lines)  # the cut is durable, with everything before it
        return TailRepair(segment=JOURNAL, offset=damage.offset, length=len(torn), quarantined=name)

    def _quarantine(self, stem: str, data: bytes) -> str:
        """Keep `data` under a name no bytes have yet (or the one already holding them)."""
        kept = self.session.quarantine
        number = 1
        while True:
            name = f"quarantine/{stem}.torn" if number == 1 else f"quarantine/{stem}.{number}.torn"
            if kept.setdefault(name, data) == data:
                return name
            number += 1

    def pending_requests(self) -> list[CheckpointRequest]:
        return list(self.session.requests.values())

    def answer_request(self, request: CheckpointRequest, payload: dict[str, Any]) -> bool:
        self.session.requests.pop(request.nonce, None)
        self.session.answers[request.nonce] = copy.deepcopy(payload)
        return True

    def remove_session(self) -> None:
        sessions = self.memory.sessions
        if sessions.get(self.session_id) is self.session and self.session.lease is self.holder:
            del sessions[self.session_id]  # whole, in one step
        self.release()

    def drop_artifacts(self, artifact_ids: Collection[str]) -> int:
        kept = self.session.artifacts
        return sum(len(kept.pop(ident)) for ident in set(artifact_ids) if ident in kept)

    def release(self) -> None:
        if self.session.lease is self.holder:
            self.session.lease = None

    def __enter__(self) -> MemoryLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MemoryAppender(JournalAppender):
    def __init__(
        self,
        session: _Session,
        session_id: str,
        clock: Clock,
        last_seq: int = 0,
        last_sum: str | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self._last_seq = last_seq
        self.last_sum = last_sum if last_sum is not None else codec.genesis(session_id)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def append(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        durability: Durability = Durability.NOW,
        encoded: bytes | None = None,
    ) -> Record:
        seq, prev = self._last_seq + 1, self.last_sum
        ts = self.clock()
        line, digest = codec.encode(seq, ts, type_, data, prev, encoded)
        records.refuse_beyond_limits(line, type_, data)  # the journal's limits, as every store's
        self.session.lines.append(line)
        self._last_seq, self.last_sum = seq, digest
        if durability is Durability.NOW:
            self.sync()
        return Record(seq, ts, type_, data, prev, digest, JOURNAL, len(self.session.lines) - 1)

    def add_artifact(self, data: bytes) -> str:
        ident = artifact_id(data)
        if ident not in self.session.artifacts:
            self.session.artifacts[ident] = data
            self.session.unsynced_artifacts.add(ident)
        return ident

    def sync(self) -> None:
        self.session.unsynced_artifacts.clear()
        self.session.synced = len(self.session.lines)

    def sync_artifacts(self) -> None:
        self.session.unsynced_artifacts.clear()

    def close(self) -> None:
        pass


# -- reading lines back, with the codec ----------------------------------------------------


def _intact(lines: list[bytes], index: int) -> Record | None:
    """The record of line `index` when its bytes are intact (checksum and content)."""
    content = lines[index].removesuffix(b"\n")
    if not lines[index].endswith(b"\n") or codec.check_content(content) is None:
        return None
    try:
        return Record.decode(content, JOURNAL, index)
    except RecordInvalid:
        return None


def _scan(
    lines: list[bytes], session_id: str, start: Start | None, decode: bool | frozenset[str]
) -> ScanResult:
    """Verify every line from `start` (or the first): checksum, seq and chain, then content.

    At the first line that fails: a line whose bytes fail their checksum with no intact line
    after it is a torn tail (a write a crash cut short); anything else is corruption."""
    result = ScanResult(last_sum=codec.genesis(session_id))
    first = 0
    if start is not None:
        if start.segment != JOURNAL or not 0 <= start.offset < len(lines):
            raise IntegrityError(f"journal position {start.segment} {start.offset} is not in the journal")
        first, result.last_seq, result.last_sum = start.offset, start.seq - 1, start.prev
    result.valid_ends[JOURNAL] = first
    for index in range(first, len(lines)):
        problem = _accept(lines[index], index, result, decode)
        if problem is None:
            result.valid_ends[JOURNAL] = index + 1
            continue
        rest = lines[index:]
        torn = problem == _TORN and not any(_intact(lines, i) for i in range(index + 1, len(lines)))
        if torn:
            detail = f"the last {sum(map(len, rest))} bytes are an incomplete or damaged record"
            result.damage = Damage("torn_tail", JOURNAL, index, sum(map(len, rest)), detail)
        else:
            detail = "damaged bytes followed by an intact record" if problem == _TORN else problem
            result.damage = Damage("corrupt", JOURNAL, index, len(lines[index]), detail)
        break
    return result


_TORN = "the record's bytes fail their checksum"


def _accept(line: bytes, index: int, result: ScanResult, decode: bool | frozenset[str]) -> str | None:
    """Take line `index` into `result`; or what is wrong with it."""
    content = line.removesuffix(b"\n")
    parsed = codec.check_content(content) if line.endswith(b"\n") else None
    if parsed is None:
        return _TORN
    seq, prev, digest = parsed
    if seq != result.last_seq + 1 or prev != result.last_sum:
        return f"record seq {seq} does not follow seq {result.last_seq} (chain broken)"
    if decode is not False:
        try:
            record = Record.decode(content, JOURNAL, index)
        except RecordInvalid as exc:
            return f"record seq {seq}: {exc.message.split(': ', 1)[-1]}"
        if decode is True or record.type in decode:
            result.records.append(record)
    result.count += 1
    result.last_seq, result.last_sum = seq, digest
    return None
