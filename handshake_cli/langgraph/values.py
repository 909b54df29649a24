"""How a LangGraph value (its serde's `(type, bytes)`) is kept in a record: small ones inline,
base64 in the record; large ones as a content-addressed artifact the record names (on the
filesystem with the pack location it was written at, read without a search; a store without
packs gives no location), so the same bytes are stored once.

The artifact is added to the session's store before the record that names it is appended,
and is durable before it (DESIGN section 2, rule 2).
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

# Values up to this many bytes travel inside their record; larger ones become artifacts.
INLINE_MAX_BYTES = 2048


class ArtifactSink(Protocol):
    def add(self, data: bytes) -> tuple[str, Any]:
        """Keep `data`; its content id and its location (None when the store has none)."""
        ...


class ArtifactSource(Protocol):
    def get(self, ident: str, location: Any = None) -> bytes: ...


def encode_value(typed: tuple[str, bytes], pack: ArtifactSink) -> dict[str, Any]:
    """A value reference for a record: inline, or an artifact added to `pack` (not yet durable)."""
    type_, data = typed
    if len(data) <= INLINE_MAX_BYTES:
        return {"type": type_, "b64": base64.b64encode(data).decode("ascii")}
    ident, location = pack.add(bytes(data))
    if location is None:
        return {"type": type_, "artifact": ident, "bytes": len(data)}
    return {
        "type": type_,
        "artifact": ident,
        "pack": location.pack,
        "offset": location.offset,
        "bytes": len(data),
    }


def decode_value(ref: dict[str, Any], artifacts: ArtifactSource) -> tuple[str, bytes]:
    """The `(type, bytes)` a reference names; an artifact's bytes are checked against its id."""
    from handshake_cli.storage.artifacts import Location

    if "b64" in ref:
        return str(ref["type"]), base64.b64decode(ref["b64"])
    location = Location(str(ref["pack"]), int(ref["offset"])) if "pack" in ref else None
    return str(ref["type"]), artifacts.get(str(ref["artifact"]), location)


def artifact_of(ref: dict[str, Any]) -> str | None:
    ident = ref.get("artifact")
    return ident if isinstance(ident, str) else None
