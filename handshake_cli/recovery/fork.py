"""`recover --fork`: a new session that starts where a checkpoint of another one stood.

For debugging (time travel) and for the way out of a damaged journal: the new session
gets the original's job and workspace, and a journal holding the original's records up to
the checkpoint (or, when no checkpoint is intact, every intact record), plus the artifacts
those records name; checkpoint records themselves are re-taken, since their bodies name the
original session. The original is only read, never
locked or changed. The fork is left as the checkpoint found things, INTERRUPTED if a run
was going on; `handshake recover NEW_ID` resumes it, tools and all, in the same workspace.
"""

from __future__ import annotations

from typing import Any

from handshake_cli.engine.writer import SessionWriter, open_writer
from handshake_cli.errors import NotFound
from handshake_cli.session.checkpoints import CheckpointInvalid, CheckpointRef, load
from handshake_cli.session.state import initial_head
from handshake_cli.session.status import no_intact_record
from handshake_cli.session.thread import named_artifacts
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.journal.codec import Record

STORE_KEYS = ("format_version", "session_id", "created_at")


def fork(
    store: SessionStore, source_id: str, new_id: str, checkpoint_id: str | None = None
) -> dict[str, Any]:
    config = store.read_config(source_id)
    result = store.scan(source_id)  # the intact prefix, also of a damaged journal
    if not result.records:  # not even record 1: there is nothing to fork from
        raise no_intact_record(store, source_id)
    base = _pick(store, source_id, result.records, checkpoint_id)
    # Without a checkpoint to start from, the fork takes every intact record there is.
    covers = base.covers_seq if base else result.last_seq
    origin: dict[str, Any] = {"session_id": source_id, "covers_seq": covers}
    if base:
        origin["checkpoint_id"] = base.checkpoint_id
    first = result.records[0]
    created = {k: v for k, v in first.data.items() if k not in ("session_id", "format_version")}
    new_config = {k: v for k, v in config.items() if k not in STORE_KEYS}
    store.create_session(
        {**new_config, "forked_from": origin},
        {**created, "forked_from": origin},
        head_for=initial_head,
        session_id=new_id,
    )
    # Not the original's server processes (`mcp.process`): recovering the fork must never
    # stop a server of the session it came from.
    copied = [r for r in result.records[1:] if r.seq <= covers and r.type not in NOT_COPIED]
    command = " ".join(["handshake", "recover", source_id, "--fork", new_id])
    try:
        with open_writer(store, new_id, command=command) as writer:
            filled = _fill(store, source_id, writer, copied, base, covers)
    except BaseException:
        # Half a fork helps nobody: it was made by this call and nobody else knows it yet.
        _remove_quietly(store, new_id)
        raise
    return {"session_id": new_id, "forked_from": origin, **filled}


def _remove_quietly(store: SessionStore, session_id: str) -> None:
    try:
        store.remove_session(session_id)
    except Exception:
        pass


def _fill(
    store: SessionStore,
    source_id: str,
    writer: SessionWriter,
    copied: list[Record],
    base: CheckpointRef | None,
    covers: int,
) -> dict[str, Any]:
    """Copy the records and the artifacts they name, then take the fork's first checkpoint."""
    for record in copied:
        for ident in _named_artifacts(record):
            writer.put_artifact(store.get_artifact(source_id, ident))
        writer.append(record.type, record.data, sync=False)
    at = base.checkpoint_id if base else f"seq {covers}"
    ref = writer.checkpoint(f"forked from {source_id} {at}")
    writer.write_head()
    return {"state": writer.record.state, "records_copied": len(copied), "checkpoint": ref.as_json()}


def _pick(
    store: SessionStore, session_id: str, records: list[Record], checkpoint_id: str | None
) -> CheckpointRef | None:
    checkpoints = [r for r in records if r.type == "checkpoint.created"]
    if checkpoint_id is not None:
        chosen = [r for r in checkpoints if r.data.get("checkpoint_id") == checkpoint_id]
        if not chosen:
            known = ", ".join(str(r.data.get("checkpoint_id")) for r in checkpoints) or "none"
            raise NotFound(f"session {session_id} has no intact checkpoint {checkpoint_id} (it has: {known})")
        ref = CheckpointRef.from_record(chosen[-1])
        load(store, ref, session_id)  # refuses a checkpoint that fails validation
        return ref
    for record in reversed(checkpoints):
        ref = CheckpointRef.from_record(record)
        try:
            load(store, ref, session_id)
        except CheckpointInvalid:
            continue
        return ref
    return None


# Records that name artifacts the fork must have too: a tool's large output, an MCP server's
# stderr (kept when it stopped or failed). The MCP servers' listings (`mcp.tools`, written
# before the first checkpoint) are copied like any record, so recovering the fork compares
# what the servers offer then with what the original session started with.
ARTIFACT_RECORDS = ("tool.result", "mcp.stopped", "mcp.server_failed")
NOT_COPIED = ("checkpoint.created", "mcp.process")


def _named_artifacts(record: Record) -> list[str]:
    return named_artifacts(record.data) if record.type in ARTIFACT_RECORDS else []
