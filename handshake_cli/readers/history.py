"""A session's history for `inspect SESSION`: every process that wrote it, as `session/story` tells it.

`inspect` has either every record (a journal small enough to read whole) or only those from
the newest checkpoint on (`scope: from_checkpoint`). In the second case the records before
that checkpoint that the story needs (openings, endings, state changes, what a recovery did)
are found by their bytes (`storage/journal/find`), each proving itself by its checksum,
rather than by a scan that would verify and decode every record: a few milliseconds per ten
megabytes of journal instead of a second per hundred thousand records. Should a matched line
fail its checksum, the story says it may be partial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handshake_cli.session.story import (
    OPENING_TYPES,
    STORY_PATTERN,
    calls_pattern,
    in_doubt_ids,
    tell,
)
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.find import find_records
from handshake_cli.storage.journal.scan import DamageJson


def history(
    journal_dir: Path,
    records: list[Record],
    *,
    whole: bool,
    last_seq: int,
    running: bool,
    torn_tail: DamageJson | None,
    corruption: DamageJson | None = None,
) -> dict[str, Any]:
    """The history as `inspect --json` shows it (`history`, docs/JSON.md). `records`: the
    intact records read, every one (`whole`) or the tail from the newest checkpoint on."""
    torn = None
    if torn_tail is not None:
        torn = {
            "segment": torn_tail["segment"],
            "offset": torn_tail["offset"],
            "length": torn_tail["length"],
            "quarantined": None,  # not cut yet: `recover` cuts it
        }
    damaged = None
    if corruption is not None:
        damaged = f"{corruption['kind']} in {corruption['segment']} at byte {corruption['offset']}"
    if whole:
        story = tell(records, last_seq=last_seq, running=running, torn_tail=torn, damaged_after=damaged)
        return story.as_json()
    first = records[0].seq if records else last_seq + 1
    found = find_records(journal_dir, STORY_PATTERN, before=OPENING_TYPES)
    # A match is a candidate (a tool's arguments may hold the words the pattern looks for), but
    # every line found is an intact record of the session, which the fold may use or pass over.
    earlier = [r for r in found.records if r.seq < first]
    unreadable = found.unreadable
    pattern = calls_pattern(in_doubt_ids(earlier))
    if pattern is not None:
        segment = next(r.segment for r in earlier if r.type == "recovery.started")
        calls = find_records(journal_dir, pattern, from_segment=segment)
        seqs = {r.seq for r in earlier}
        earlier += [r for r in calls.records if r.seq < first and r.seq not in seqs]
        earlier.sort(key=lambda r: r.seq)
        unreadable += calls.unreadable
    story = tell(
        [*earlier, *records], last_seq=last_seq, running=running, torn_tail=torn, damaged_after=damaged
    )
    if unreadable and story.complete:
        story.complete = False
        story.partial = (
            f"{unreadable} record(s) the history may need failed their checksum; "
            "`inspect --verify` says where"
        )
    return story.as_json()
