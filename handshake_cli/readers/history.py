"""A session's history for `inspect SESSION`: every process that wrote it, as `session/story` tells it.

`inspect` has either every record (a journal small enough to read whole) or only those from
the newest checkpoint on (`scope: from_checkpoint`). In the second case the story so far is
in that checkpoint's body (`story`, kept by the writer) and the records after it finish it,
so the history of a long session costs what its tail costs. A checkpoint written before
bodies kept the story leaves the records before it to be found by their bytes
(`session/story_found`); should one of those fail its checksum, the history says it may be
partial.
"""

from __future__ import annotations

from typing import Any

from handshake_cli.session.story import StoryFold, tell
from handshake_cli.session.story_found import fold_found
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.codec import Record
from handshake_cli.storage.journal.scan import DamageJson


def history(
    store: SessionStore,
    session_id: str,
    records: list[Record],
    *,
    whole: bool,
    last_seq: int,
    running: bool,
    torn_tail: DamageJson | None,
    corruption: DamageJson | None = None,
    fold: StoryFold | None = None,
    unreadable: int = 0,
) -> dict[str, Any]:
    """The history as `inspect --json` shows it (`history`, docs/JSON.md). `records`: the
    intact records read, every one (`whole`) or the tail from the newest checkpoint on, and
    then `fold` the story as of the end of `records` (recovery's view has it), if known, and
    `unreadable` the records it needed that failed their checksum."""
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
    if fold is None:
        fold, unreadable = fold_found(store, session_id, records)
    story = fold.told(last_seq=last_seq, running=running, torn_tail=torn, damaged_after=damaged)
    if unreadable and story.complete:
        story.complete = False
        story.partial = (
            f"{unreadable} record(s) the history may need failed their checksum; "
            "`inspect --verify` says where"
        )
    return story.as_json()
