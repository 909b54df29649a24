"""`handshake import`: land a checked bundle's session under a root in one rename.

Once checks.py has read every byte of the bundle, the members are streamed into `staging/`
(hashed again: the bundle file could change under us), given the store's modes, fsynced,
verified as a session and renamed into `sessions/`. A refusal or a crash at any point leaves
no session behind, and nothing under the root changes but debris in `staging/` (which a
refusal removes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handshake_cli.errors import EnvironmentFailure, HandshakeError, InvalidBundle, SessionExists
from handshake_cli.maintenance.bundle.checks import (
    Layout,
    check_contents,
    check_members,
    check_sha,
    member_chunks,
    open_bundle,
    read_headers,
    read_manifest,
)
from handshake_cli.maintenance.bundle.manifest import SESSIONS
from handshake_cli.paths import Paths
from handshake_cli.storage import durable
from handshake_cli.storage.contract import SessionStore
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.store import MADE_WITH_SESSION
from handshake_cli.vocabulary import SessionState, Verdict

# A session that was stopped, not finished: an import says how to move it on.
_STOPPED = (SessionState.INTERRUPTED, SessionState.PAUSED, SessionState.BLOCKED)

if TYPE_CHECKING:
    from handshake_cli.readers.verify import Verification, VerificationJson


@dataclass
class ImportReport:
    session_id: str
    path: str  # where the store keeps it (`SessionStore.location`)
    files: int
    session_bytes: int
    state: str
    verdict: str
    integrity: VerificationJson | dict[str, str]  # or {error} when it could not be verified
    workspace: str | None
    workspace_exists: bool
    workspace_note: str
    exported_at: str | None
    tool_version: str | None
    guidance: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "path": self.path,
            "file_count": self.files,
            "session_bytes": self.session_bytes,
            "state": self.state,
            "verdict": self.verdict,
            "integrity": self.integrity,
            "workspace": self.workspace,
            "workspace_exists": self.workspace_exists,
            "workspace_note": self.workspace_note,
            "exported_at": self.exported_at,
            "exported_by": self.tool_version,
        }


def import_bundle(store: SessionStore, bundle: Path) -> ImportReport:
    """Check every byte of `bundle`, then land its session in the store whole."""
    existing = store.session_ids()  # (the filesystem's: before anything looks through a link there)
    with open_bundle(bundle) as tar, durable.environment("import", bundle):
        layout = check_members(read_headers(tar, bundle))
        manifest = read_manifest(tar, layout)
        if layout.session_id in existing:
            raise SessionExists(
                f"session {layout.session_id} already exists under {store.paths.shown_root}; "
                "import does not overwrite a session",
                guidance=[" ".join(["handshake", "inspect", layout.session_id, *store.paths.root_args()])],
            )
        config = check_contents(tar, layout, manifest)
        landed, verification = _land(store, tar, layout, manifest)
    return _report(store, layout, landed, config, manifest, verification)


def _land(
    store: SessionStore, tar: tarfile.TarFile, layout: Layout, manifest: dict[str, Any]
) -> tuple[str, Verification | HandshakeError]:
    """Stream every member into the store's staging area (hashing it again: the bundle file
    could change under us), make it look like a session the store created, verify it there,
    and hand it to the store to land whole (on the filesystem: one rename)."""
    from handshake_cli.readers.verify import verify

    staging = store.staging_area(layout.session_id)
    try:
        with durable.environment("extract the bundle into", staging):
            _extract(tar, staging, layout, manifest["files"])
        staged = staging / SESSIONS / layout.session_id
        for sub in MADE_WITH_SESSION:  # tar drops an empty directory; the store makes this one
            if not os.path.lexists(staged / sub):
                durable.make_dir(staged / sub)
        _seal(staged)
        try:
            staged_store = FilesystemStore(Paths(staging))  # the session as the store will hold it
            verification: Verification | HandshakeError = verify(staged_store, layout.session_id)
        except EnvironmentFailure:
            raise  # the disk failed, not the bundle: nothing lands
        except HandshakeError as exc:
            verification = exc
        store.import_session(layout.session_id, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return store.location(layout.session_id), verification


def _extract(tar: tarfile.TarFile, staging: Path, layout: Layout, listed: dict[str, dict[str, Any]]) -> None:
    """Write the checked members below `staging`, each streamed and hashed, and refuse one
    whose bytes are not those the manifest lists. The names are already known to be plain
    relative paths of safe components, files and directories never in each other's place."""
    for member in layout.members:
        destination = staging / member.name
        _make_dirs(staging, destination if member.isdir() else destination.parent)
        if member.isdir():
            continue
        sha = hashlib.sha256()
        fd = durable.create_file(destination)
        try:
            for chunk in member_chunks(tar, member):
                sha.update(chunk)
                durable.write_all(fd, chunk)
        finally:
            os.close(fd)
        check_sha(member.name, sha.hexdigest(), listed)


def _make_dirs(staging: Path, directory: Path) -> None:
    """`directory` and any parent of it below `staging`, each 0700."""
    missing: list[Path] = []
    while directory != staging and not os.path.isdir(directory):
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        durable.make_dir(path)


def _seal(top: Path) -> None:
    """Modes 0700/0600 whatever the archive said, and everything fsynced, deepest first."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            _seal_one(Path(dirpath) / name, directory=False)
        for name in dirnames:
            _seal_one(Path(dirpath) / name, directory=True)
    _seal_one(top, directory=True)


def _seal_one(path: Path, *, directory: bool) -> None:
    flags = os.O_RDONLY | durable.NOFOLLOW | durable.CLOEXEC | (os.O_DIRECTORY if directory else 0)
    with durable.environment("open", path):
        fd = os.open(path, flags)
    try:
        kind = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(kind) if directory else stat.S_ISREG(kind)):
            raise InvalidBundle(f"{path} is neither a plain file nor a directory after extraction")
        with durable.environment("set the mode of", path):
            os.fchmod(fd, durable.DIR_MODE if directory else durable.FILE_MODE)
        durable.fsync_fd(fd, path=path)
    finally:
        os.close(fd)


def _report(
    store: SessionStore,
    layout: Layout,
    landed: str,
    config: dict[str, Any],
    manifest: dict[str, Any],
    verification: Verification | HandshakeError,
) -> ImportReport:
    from handshake_cli.session.state import fold
    from handshake_cli.session.status import effective_state

    session_id = layout.session_id
    root_args = store.paths.root_args()
    state: str
    integrity: VerificationJson | dict[str, str]
    if isinstance(verification, HandshakeError):
        verdict, integrity, state = Verdict.DAMAGED, {"error": verification.message}, SessionState.UNREADABLE
    else:
        verdict, integrity = verification.verdict, verification.as_json()
        state = effective_state(fold(session_id, verification.journal.records).state, None)
    workspace = config.get("workspace") if isinstance(config.get("workspace"), str) else None
    exists = workspace is not None and os.path.isdir(workspace)
    note = (
        f"recovery runs this session's tools in the workspace recorded in {landed}/session.toml: "
        f"{workspace}"
        + ("" if exists else " (it does not exist on this machine)")
        + "; edit `workspace` there to use another directory"
    )
    guidance: list[str] = []
    if verdict != Verdict.INTACT:
        verify_command = " ".join(["handshake", "inspect", session_id, "--verify", *root_args])
        guidance += ["see what is wrong with:", verify_command]
    if verdict != Verdict.DAMAGED and (state in _STOPPED or verdict == Verdict.REPAIRABLE):
        guidance += [note, "resume it with:", " ".join(["handshake", "recover", session_id, *root_args])]
    files = manifest["files"]
    return ImportReport(
        session_id=session_id,
        path=landed,
        files=len(files),
        session_bytes=sum(entry["size"] for entry in files.values()),
        state=state,
        verdict=verdict,
        integrity=integrity,
        workspace=workspace,
        workspace_exists=exists,
        workspace_note=note,
        exported_at=manifest.get("created_at") if isinstance(manifest.get("created_at"), str) else None,
        tool_version=manifest.get("tool_version") if isinstance(manifest.get("tool_version"), str) else None,
        guidance=guidance,
    )
