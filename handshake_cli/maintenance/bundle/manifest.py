"""What a bundle is, for export and import alike: the names of its members, its manifest's
entries, and the limits on what it may hold (docs/FORMAT.md, "Limits")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handshake_cli.storage import session_files
from handshake_cli.storage.artifacts import DEFAULT_PACK_BYTES
from handshake_cli.storage.journal.codec import MAX_SEGMENT_BYTES
from handshake_cli.storage.store import SESSION_TOML_MAX_BYTES

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
SESSIONS = "sessions"
# What never travels (a writer's process) and every name a bundle may hold below
# sessions/<id>/: the store's rules (`storage.session_files`), which import checks too.
NOT_EXPORTED = session_files.NOT_EXPORTED
NAME = session_files.NAME
# Import streams a member this much at a time; no single read of a header may be larger.
CHUNK = 1 << 20

# Limits on what a bundle may hold, all checked from the tar headers before a member is read.
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 4 << 30  # the session's files together
MANIFEST_MAX_BYTES = 4 << 20  # a manifest lists at most MAX_MEMBERS files, ~250 bytes each
HEADER_MAX_BYTES = CHUNK  # one pax or GNU long-name header: tarfile reads it whole
# A segment is rotated before the record that would take it past its size, so it holds at most
# that plus one record of the largest size the journal writes: the journal's own limit.
SEGMENT_MAX_BYTES = MAX_SEGMENT_BYTES
ARTIFACT_MAX_BYTES = 64 << 20
PACK_MAX_BYTES = DEFAULT_PACK_BYTES + ARTIFACT_MAX_BYTES  # rotated the same way as a segment
SMALL_FILE_MAX_BYTES = 1 << 20  # head.json, requests/, anything else


@dataclass(frozen=True)
class BundledFile:
    """One entry of the manifest's `files`: what export read of one file."""

    path: str  # the member name: sessions/<id>/...
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def member_limit(name: str) -> tuple[int, str]:
    """The largest a bundle member named `name` (sessions/<id>/...) may be, and what it is."""
    relative = name.split("/", 2)[2] if name.count("/") >= 2 else name
    if name == MANIFEST:
        return MANIFEST_MAX_BYTES, "manifest.json"
    if relative == "session.toml":
        return SESSION_TOML_MAX_BYTES, "session.toml"
    if relative.startswith(("journal/", "quarantine/")):
        return SEGMENT_MAX_BYTES, "a journal segment (or bytes quarantined from one)"
    if relative.startswith("artifacts/packs/"):
        return PACK_MAX_BYTES, "an artifact pack"
    if relative.startswith("artifacts/objects/"):
        return ARTIFACT_MAX_BYTES, "an artifact"
    return SMALL_FILE_MAX_BYTES, "this file"
