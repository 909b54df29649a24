"""The story of a session whose checkpoints do not carry it, without a full scan.

Checkpoints written before the story was kept in their bodies (FORMAT, "Checkpoints") leave
a reader of a long session only the records after the newest one. The records before it that
the story needs (openings, endings, state changes, what a recovery did with its calls in
doubt) are rare, so they are found by their bytes (`storage/journal/find`), each proving
itself by its checksum: a few milliseconds per ten megabytes of journal, against a second per
hundred thousand records for a scan that verifies and decodes every one. `inspect` does this
for such a session at every call; the writer of a `recover` does it once, and the
checkpoints it writes carry the story from then on.
"""

from __future__ import annotations

from handshake_cli.session.story import OPENING_TYPES, STORY_PATTERN, StoryFold, calls_pattern, in_doubt_ids
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.find import find_records


def fold_found(store: SessionStore, session_id: str, tail: list[Record]) -> tuple[StoryFold, int]:
    """The fold of the story records found before `tail` (the intact records read from a
    checkpoint on), then of `tail`; and how many matching lines failed their checksum.

    Finding by bytes is the filesystem's (its segments are files to search); any other store
    folds its verified journal whole, which only a session imported from before the story was
    kept in checkpoints ever asks of it."""
    if not isinstance(store, FilesystemStore):
        fold = StoryFold()
        for record in store.scan(session_id).records:
            fold.apply(record)
        return fold, 0
    journal_dir = store.session(session_id).journal
    first = tail[0].seq if tail else None
    found = find_records(journal_dir, STORY_PATTERN, before=OPENING_TYPES)
    # A match is a candidate (a tool's arguments may hold the words the pattern looks for),
    # but every line found is an intact record of the session, which the fold uses or passes over.
    earlier = [r for r in found.records if first is None or r.seq < first]
    unreadable = found.unreadable
    pattern = calls_pattern(in_doubt_ids(earlier))
    if pattern is not None:
        segment = next(r.segment for r in earlier if r.type == "recovery.started")
        calls = find_records(journal_dir, pattern, from_segment=segment)
        seqs = {r.seq for r in earlier}
        earlier += [r for r in calls.records if (first is None or r.seq < first) and r.seq not in seqs]
        earlier.sort(key=lambda r: r.seq)
        unreadable += calls.unreadable
    fold = StoryFold()
    for record in [*earlier, *tail]:
        fold.apply(record)
    return fold, unreadable
