"""Forensic bundles: one session's files in a gzip tar with a manifest, and back.

`export` (export.py) reads a session without its lock, in an order that keeps the bundle
consistent while a run appends. `import` trusts nothing in a bundle: checks.py reads every
header and every byte against the limits and the manifest before anything is written, and
import_.py lands the session under the root in one rename. manifest.py holds what both sides
agree on: member names, manifest entries and limits.
"""

from handshake_cli.maintenance.bundle.export import ExportReport, export_session
from handshake_cli.maintenance.bundle.import_ import ImportReport, import_bundle
from handshake_cli.maintenance.bundle.manifest import (
    ARTIFACT_MAX_BYTES,
    MANIFEST_MAX_BYTES,
    MAX_MEMBERS,
    MAX_TOTAL_BYTES,
    PACK_MAX_BYTES,
    SEGMENT_MAX_BYTES,
    SMALL_FILE_MAX_BYTES,
    member_limit,
)

__all__ = [
    "ARTIFACT_MAX_BYTES",
    "MANIFEST_MAX_BYTES",
    "MAX_MEMBERS",
    "MAX_TOTAL_BYTES",
    "PACK_MAX_BYTES",
    "SEGMENT_MAX_BYTES",
    "SMALL_FILE_MAX_BYTES",
    "ExportReport",
    "ImportReport",
    "export_session",
    "import_bundle",
    "member_limit",
]
