"""The journal writer: appends records to one session's journal, each with a durability level.

Appends happen under the session lock (the caller holds it) as one `os.write` per record;
`sync=True` makes the record, and every unsynced one before it, durable before `append`
returns. Segments are rotated by size, each new name made durable before any record in it.
`open` verifies the journal first and refuses one that is corrupt or ends in a torn tail.

A writer asked to `preallocate` keeps the open segment's file up to that many bytes longer
than its records, a tail of newlines (`codec.FILL`) the next records are written over in
place: on ext4 an fdatasync that does not grow the file commits no filesystem metadata, which
is most of what a sync of one small record costs. The tail is written and synced with the
record that runs past it, cut off before the segment is left for the next one, and cut when
the writer closes; a writer opening a segment that still has one (its process died) cuts it
first, so a record always goes where the records end.

The writer never writes a record readers would call damage: one whose content is not what
handshake writes, or beyond the limits, is refused with `RecordRefused` before any byte is
written (`records.refuse_beyond_limits`, the rule every store applies). A failed write is
cut back to the last whole record; a failed fsync leaves the writer unusable.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from handshake_cli.errors import DurabilityError, IntegrityError, JournalNeedsRepair
from handshake_cli.storage import durable
from handshake_cli.storage.journal import records
from handshake_cli.storage.journal.codec import (
    DEFAULT_SEGMENT_BYTES,
    FILL,
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
        self._size = segment_size  # where the records end: the next one goes there
        self._end = segment_size  # the file's size: the records, then the preallocated tail
        self._preallocate = 0  # see `preallocate`
        self._fd: int | None = None
        self._broken: str | None = None
        if segment is not None:
            path = journal_dir / segment
            with durable.environment("open for appending", path):
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | durable.NOFOLLOW | durable.CLOEXEC)
            try:
                with durable.environment("cut the preallocated tail of", path):
                    if os.fstat(self._fd).st_size > segment_size:
                        # A tail left by a writer that died (the scan found only newlines
                        # there): the next record goes where the records end.
                        os.ftruncate(self._fd, segment_size)
            except BaseException:
                self.close()
                raise

    def preallocate(self, nbytes: int) -> None:
        """Keep a tail of up to `nbytes` newlines after the records from the next append on
        (0: append to the end of the file, the default)."""
        self._preallocate = nbytes
        if self._fd is not None:
            with durable.environment("open for appending", self._path):
                self._positioned()

    def _positioned(self) -> None:
        """Write where the records end rather than at the end of the file."""
        assert self._fd is not None
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_APPEND
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags if self._preallocate else flags | os.O_APPEND)
        os.lseek(self._fd, self._size, os.SEEK_SET)

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
        out = line
        if self._preallocate and offset + len(line) > self._end:
            # Past the tail: a new one with the record, never taking the segment past its size.
            room = self.segment_bytes - offset - len(line)
            out = line + FILL * max(0, min(self._preallocate, room))
        try:
            written = os.write(self._fd, out)
            if written != len(out):
                raise OSError(f"short write ({written} of {len(out)} bytes)")
            if out is not line:
                os.lseek(self._fd, offset + len(line), os.SEEK_SET)
        except OSError as exc:
            self._undo_write()
            where = self.journal_dir / self._segment
            raise durable.durability_error(exc, "write to", where, "the record was not written") from exc
        self._size += len(line)
        self._end = max(self._end, offset + len(out))
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
        try:
            return os.dup(self._fd), self.last_seq
        except OSError as exc:  # out of descriptors (a bad one is a bug, and stays an OSError)
            if exc.errno in durable.ENVIRONMENT_ERRNOS:
                raise durable.environment_failure(exc, "duplicate the descriptor of", self._path) from exc
            raise

    def close(self) -> None:
        """Let go of the segment, its preallocated tail cut (not synced: a tail that comes back
        after a crash is still only a tail). Never raises: what had to be durable was synced
        (and a failed close, reported by some filesystems, changes nothing already acknowledged)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._end > self._size:
                    os.ftruncate(fd, self._size)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass

    def _undo_write(self) -> None:
        """Cut a failed or partial write back to the last whole record (and any preallocated
        tail with it: the next append writes a new one)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            os.lseek(self._fd, self._size, os.SEEK_SET)
            self._end = self._size
        except OSError as exc:
            self._broken = f"a failed write could not be undone: {exc}"

    def _rotate(self, first_seq: int) -> None:
        if self._fd is not None:
            if self._end > self._size:
                # Only the last segment may have a tail: cut, and durably so, before the next.
                with durable.environment("cut the preallocated tail of", self._path):
                    os.ftruncate(self._fd, self._size)
                self._end = self._size
                self.unsynced += 1
            self.sync()  # everything in the old segment is durable before the new one takes over
            self.close()
        name = segment_name(first_seq)
        self._fd = durable.create_file(self.journal_dir / name, append=True)
        durable.fsync_dir(self.journal_dir)  # the new name is durable before any record in it
        self._segment = name
        self._path = self.journal_dir / name
        self._size = self._end = 0
        if self._preallocate:
            with durable.environment("open for appending", self._path):
                self._positioned()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
