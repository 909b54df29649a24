"""Which artifacts of a session its journal still names: the rest (loose artifacts, and
whole pack segments none of whose frames is named) is what `--keep-checkpoints` may drop.

`unnamed_artifacts` reads a session directory's files (gc on a directory root);
`unnamed_in_store` asks any store through the contract (`scan`, `artifact_sizes`)."""

from __future__ import annotations

import os
from pathlib import Path

from handshake_cli.errors import HandshakeError, IntegrityError, JournalNeedsRepair
from handshake_cli.session.thread import named_artifacts
from handshake_cli.storage.artifacts import HEADER_BYTES
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.store import SessionDir


def has_artifacts(session: SessionDir) -> bool:
    store = session.artifact_store()
    return bool(store.loose_ids() or store.pack_names())


def unnamed_in_store(store: SessionStore, session_id: str) -> dict[str, int] | HandshakeError:
    """The artifacts (id: bytes) that no record of the session's journal names, or the
    problem when the journal cannot be read to its end (then nothing may go)."""
    result = store.scan(session_id)
    if result.damage:
        return _unreadable(
            result.damage.kind, result.damage.segment, result.damage.offset, result.damage.repairable
        )
    named: set[str] = set()
    for record in result.records:
        named.update(named_artifacts(record.data))
    return {ident: size for ident, size in store.artifact_sizes(session_id).items() if ident not in named}


def _unreadable(kind: str, segment: str, offset: int, repairable: bool) -> HandshakeError:
    message = (
        f"artifacts left as they are: the journal has {kind.replace('_', ' ')} at {segment} offset {offset}"
    )
    # A torn tail is what a writer refuses to append after (recover repairs it): the same error.
    return JournalNeedsRepair(message) if repairable else IntegrityError(message)


def unnamed_artifacts(session: SessionDir) -> list[tuple[str, Path, int]] | HandshakeError:
    """Loose artifacts and whole pack segments that no journal record names.

    Returns the problem instead when the journal cannot be read to its end: then nobody can
    say what it names, and nothing is touched.
    """
    result = scan(session.journal, session.session_id)
    if result.damage:
        return _unreadable(
            result.damage.kind, result.damage.segment, result.damage.offset, result.damage.repairable
        )
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
