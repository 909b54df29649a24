"""The journal writer: appends records to one session's journal, each with a durability level.

Appends happen under the session lock (the caller holds it) as one `os.write` per record;
`sync=True` makes the record, and every unsynced one before it, durable before `append`
returns. Segments are rotated by size, each new name made durable before any record in it.
`open` verifies the journal first and refuses one that is corrupt or ends in a torn tail.

The writer never writes a record readers would call damage: one whose content is not what
handshake writes, or beyond the limits, is refused with `RecordRefused` before any byte is
written (`records.refuse_beyond_limits`, the rule every store applies). A failed write is
cut back to the last whole record; a failed fsync leaves the writer unusable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from handshake_cli.errors import DurabilityError, IntegrityError, JournalNeedsRepair
from handshake_cli.storage import durable
from handshake_cli.storage.journal import records
from handshake_cli.storage.journal.codec import (
    DEFAULT_SEGMENT_BYTES,
    Clock,
    Record,
    encode,
    genesis,
    segment_name,
    utc_now,
)
from handshake_cli.storage.journal.scan import Start, list_segments, scan


class JournalWriter:
    """Appends records to one session's journal. The caller holds the session lock."""

    def __init__(
        self,
        journal_dir: Path,
        session_id: str,
        *,
        last_seq: int,
        last_sum: str,
        segment: str | None,
        segment_size: int,
        segment_bytes: int,
        clock: Clock,
    ) -> None:
        self.journal_dir = journal_dir
        self.session_id = session_id
        self.last_seq = last_seq
        self.last_sum = last_sum
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.unsynced = 0
        self._segment = segment
        self._path = journal_dir / segment if segment else journal_dir  # for messages
        self._size = segment_size
        self._fd: int | None = None
        self._broken: str | None = None
        if segment is not None:
            with durable.environment("open for appending", journal_dir / segment):
                self._fd = os.open(
                    journal_dir / segment, os.O_WRONLY | os.O_APPEND | durable.NOFOLLOW | durable.CLOEXEC
                )

    @classmethod
    def create(
        cls,
        journal_dir: Path,
        session_id: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Clock = utc_now,
    ) -> JournalWriter:
        return cls(
            journal_dir,
            session_id,
            last_seq=0,
            last_sum=genesis(session_id),
            segment=None,
            segment_size=0,
            segment_bytes=segment_bytes,
            clock=clock,
        )

    @classmethod
    def open(
        cls,
        journal_dir: Path,
        session_id: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Clock = utc_now,
        start: Start | None = None,
    ) -> JournalWriter:
        """Open for appending after verifying the journal (all of it, or from `start`, a
        record the caller has already checked); refuses a journal that needs repair."""
        result = scan(journal_dir, session_id, decode=False, start=start)
        if result.corruption:
            damage = result.corruption
            raise IntegrityError(
                f"journal is corrupt at {damage.segment} offset {damage.offset}: {damage.detail}"
            )
        if result.torn_tail:
            damage = result.torn_tail
            raise JournalNeedsRepair(
                f"journal ends in a torn tail at {damage.segment} offset {damage.offset}; "
                "recovery must cut it off before anything is appended",
                guidance=[f"handshake recover {session_id}"],
            )
        segments = list_segments(journal_dir)
        segment = segments[-1] if segments else None
        size = result.valid_ends.get(segment, 0) if segment else 0
        return cls(
            journal_dir,
            session_id,
            last_seq=result.last_seq,
            last_sum=result.last_sum,
            segment=segment,
            segment_size=size,
            segment_bytes=segment_bytes,
            clock=clock,
        )

    def append(
        self, type_: str, data: dict[str, Any], *, sync: bool = True, encoded: bytes | None = None
    ) -> Record:
        if self._broken:
            raise DurabilityError(f"journal writer is unusable after an earlier failure: {self._broken}")
        seq, prev = self.last_seq + 1, self.last_sum
        ts = self.clock()
        line, digest = encode(seq, ts, type_, data, prev, encoded)
        records.refuse_beyond_limits(line, type_, data)
        if self._fd is None or (self._size and self._size + len(line) > self.segment_bytes):
            self._rotate(seq)
        assert self._fd is not None and self._segment is not None
        offset = self._size
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._undo_write()
            where = self.journal_dir / self._segment
            raise durable.durability_error(exc, "write to", where, "the record was not written") from exc
        self._size += len(line)
        self.last_seq = seq
        self.last_sum = digest
        self.unsynced += 1
        if sync:
            self.sync()
        return Record(seq, ts, type_, data, prev, digest, self._segment, offset)

    def sync(self) -> None:
        if self._broken:
            raise DurabilityError(f"journal writer is unusable after an earlier failure: {self._broken}")
        if self._fd is None or not self.unsynced:
            return
        try:
            durable.fsync_fd(self._fd, data_only=True, path=self._path)
        except DurabilityError as exc:
            self._broken = exc.message
            raise
        self.unsynced = 0

    def sync_handle(self) -> tuple[int, int] | None:
        """For a group commit that syncs outside the caller's lock, so that appends of other
        threads go on meanwhile: a duplicate of the open segment's descriptor and the seq of
        the last record written to it (every record of an older segment was synced when the
        segment rotated), or None when no segment is open. Syncing the descriptor makes those
        records durable; the caller closes it, and a failed sync is fatal to it as to `sync`."""
        if self._broken:
            raise DurabilityError(f"journal writer is unusable after an earlier failure: {self._broken}")
        if self._fd is None:
            return None
        with durable.environment("duplicate the descriptor of", self._path):
            return os.dup(self._fd), self.last_seq

    def close(self) -> None:
        """Let go of the segment. Never raises: what had to be durable was synced (and a
        failed close, reported by some filesystems, changes nothing already acknowledged)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _undo_write(self) -> None:
        """Cut a failed or partial write back to the last whole record."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            self._broken = f"a failed write could not be undone: {exc}"

    def _rotate(self, first_seq: int) -> None:
        if self._fd is not None:
            self.sync()  # everything in the old segment is durable before the new one takes over
            self.close()
        name = segment_name(first_seq)
        self._fd = durable.create_file(self.journal_dir / name, append=True)
        durable.fsync_dir(self.journal_dir)  # the new name is durable before any record in it
        self._segment = name
        self._path = self.journal_dir / name
        self._size = 0

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
