"""The session store: where each session's files are, how a session comes into being, and
which names are allowed.

A session is built whole in `<root>/staging/` and renamed into `<root>/sessions/<id>`, so a
crash during creation leaves either no session or a complete one. Session ids are checked
against one pattern before any path is built from them, and nothing below the root is
reached through a symbolic link.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handshake_cli import documents
from handshake_cli.errors import (
    IntegrityError,
    InvalidSessionId,
    JobChanged,
    NotFound,
    SessionExists,
    UnsupportedFormat,
)
from handshake_cli.paths import Paths
from handshake_cli.storage import durable, head
from handshake_cli.storage.journal.codec import Clock, Record, segment_name, utc_now

if TYPE_CHECKING:
    from handshake_cli.storage.artifacts import ArtifactStore

FORMAT_VERSION = 1
# session.toml holds the resolved job (jobs.STORED_JOB_MAX_BYTES, refused at load beyond it)
# and a few keys beside it; the job sits two tables deeper than in the job file.
SESSION_TOML_MAX_BYTES = 32 << 20
SESSION_TOML_NESTING = documents.MAX_NESTING + 8
# Every directory a session may hold, checked for links when a session is opened. Only the
# journal's is made with the session; the others are made by their first writer (artifacts,
# recovery's quarantine, `handshake checkpoint`'s requests), so a session that never needs
# them is three files in two directories, and cheaper to create and to delete.
SUBDIRS = ("journal", "artifacts", "artifacts/objects", "artifacts/packs", "quarantine", "requests")
MADE_WITH_SESSION = ("journal",)
# The session's own files, each a regular file when present: a link (or a directory) in place
# of one was not written by handshake, and no reader follows it nor writer replaces it.
FILES = ("session.toml", "head.json", "owner.json", "lock")
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def validate_session_id(value: str) -> str:
    if not SESSION_ID.fullmatch(value):
        shown = value if value.isprintable() and len(value) <= 80 else repr(value[:80])
        raise InvalidSessionId(
            f"invalid session id {shown!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


_last_uuid7 = [0]


def new_session_id() -> str:
    """A UUIDv7 (RFC 9562): sorts by creation time, random below the millisecond.

    Ids made by one process are strictly increasing even within one millisecond (the
    random part is bumped instead, as RFC 9562 section 6.2 allows).
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    if value <= _last_uuid7[0] and (_last_uuid7[0] >> 80) == (value >> 80):
        value = _last_uuid7[0] + 1
    _last_uuid7[0] = value
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True)
class SessionDir:
    """The files of one session."""

    session_id: str
    path: Path

    @property
    def session_toml(self) -> Path:
        return self.path / "session.toml"

    @property
    def journal(self) -> Path:
        return self.path / "journal"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @property
    def quarantine(self) -> Path:
        return self.path / "quarantine"

    def artifact_store(self) -> ArtifactStore:
        from handshake_cli.storage.artifacts import ArtifactStore

        return ArtifactStore(self.artifacts)

    def missing(self, what: str) -> NotFound | IntegrityError:
        """A file of the session is not there: the session was moved away (by gc) while it
        was being read, or, when its directory is still here, it is damaged."""
        if not os.path.lexists(self.path):
            return NotFound(f"session {self.session_id} was removed (by gc) while it was being read")
        return IntegrityError(f"session {self.session_id} has no {what}")

    def read_config(self, *, check_job: bool = True) -> dict[str, Any]:
        """session.toml, with a clear refusal for a format newer than this tool, and (unless
        asked not to: `export` copies a session whatever its state) for a `[job]` that is not
        the one the session was created with."""
        try:
            raw = durable.read_bytes(self.session_toml)
        except FileNotFoundError as exc:
            raise self.missing("session.toml") from exc
        config = parse_config(raw, self.session_id)
        if check_job and self.job_binding(config) == JOB_CHANGED:
            raise job_changed(self.session_id, str(self.session_toml))
        return config

    def job_binding(self, config: dict[str, Any]) -> str:
        """Whether session.toml's `[job]` is the one record 1 was written with: JOB_BOUND,
        JOB_CHANGED, or JOB_UNBOUND for a session made before the binding existed (its record
        1 has no `job_sha256`) or whose record 1 cannot be read (the journal scan reports that)."""
        from handshake_cli.storage.journal.scan import read_record_at

        return job_binding(config, read_record_at(self.journal, segment_name(1), 0))

    def check_identity(self) -> None:
        """That session.toml is this session's, in a format this version reads, without
        parsing the job: gc checks this for every session it removes, and a job with a long
        prompt takes milliseconds to parse. Top-level keys come
        before the first table in TOML, so the lines before the first `[` at the start of a
        line hold format_version and session_id; they are parsed alone, and the whole file
        must be UTF-8. Anything that prefix cannot settle is parsed whole, to raise what
        `read_config` would. (A syntax error inside the job tables passes here.)"""
        try:
            raw = durable.read_bytes(self.session_toml)
        except FileNotFoundError as exc:
            raise self.missing("session.toml") from exc
        try:
            text = raw.decode("utf-8")
            end = text.find("\n[")
            top = documents.parse_toml(
                text[: end + 1] if end >= 0 else text, max_nesting=SESSION_TOML_NESTING
            )
        except (UnicodeDecodeError, documents.DocumentError):
            top = {}
        found = top.get("format_version")
        if type(found) is not int or found != FORMAT_VERSION or top.get("session_id") != self.session_id:
            parse_config(raw, self.session_id)


# What `SessionDir.job_binding` finds.
JOB_BOUND = "bound"  # record 1 carries the job's digest, and session.toml's [job] matches it
JOB_CHANGED = "changed"  # it carries one, and [job] no longer matches: damage, exit 5
JOB_UNBOUND = "unbound"  # made before handshake bound the job (or record 1 unreadable)


def job_binding(config: dict[str, Any], first: Record | None) -> str:
    """Whether `config`'s job is the one record 1 (`first`, None when not intact) was written
    with: JOB_BOUND, JOB_CHANGED or JOB_UNBOUND (`SessionDir.job_binding`), for any store."""
    if first is None or not isinstance(first.data, dict) or "job_sha256" not in first.data:
        return JOB_UNBOUND
    return JOB_BOUND if first.data["job_sha256"] == job_digest(config.get("job")) else JOB_CHANGED


def job_changed(session_id: str, where: str) -> JobChanged:
    """The refusal of a session whose stored [job] (at `where`) was edited after it began."""
    return JobChanged(
        f"session {session_id}: the [job] in {where} is not the job the session "
        "was created with (record 1's job_sha256 differs): it was edited after the session "
        "started. Nothing was run. Put the original [job] back (an exported bundle holds it).",
        guidance=[f"handshake inspect {session_id} --verify"],
    )


def check_job_binding(session_id: str, config: dict[str, Any], first: Record | None) -> None:
    """`job_changed` when `config`'s job is not record 1's: what a store's `read_config` checks."""
    if job_binding(config, first) == JOB_CHANGED:
        raise job_changed(session_id, f"session {session_id}'s config")


def job_digest(job: object) -> str:
    """sha256 of the job table in canonical JSON: what record 1's `job_sha256` holds. The
    table goes through TOML and back unchanged (strings, integers, floats by repr, booleans,
    arrays, tables), so the digest of what is read equals the digest of what was written."""
    text = json.dumps(job, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def parse_config(raw: bytes, session_id: str) -> dict[str, Any]:
    """session.toml's bytes, checked: readable, within its limits, a format this version reads,
    this session's."""
    if len(raw) > SESSION_TOML_MAX_BYTES:
        raise IntegrityError(
            f"session {session_id}: session.toml is {len(raw)} bytes; the limit is {SESSION_TOML_MAX_BYTES}"
        )
    try:
        config = documents.parse_toml(raw, max_nesting=SESSION_TOML_NESTING)
    except documents.DocumentError as exc:
        raise IntegrityError(f"session {session_id}: session.toml is unreadable: {exc.problem}") from None
    check_format_version(config.get("format_version"), session_id)
    if config.get("session_id") != session_id:
        raise IntegrityError(
            f"session directory {session_id} holds session.toml of "
            f"{config.get('session_id')!r}: it was renamed or copied by hand"
        )
    return config


def check_format_version(found: object, session_id: str) -> None:
    if type(found) is int and found == FORMAT_VERSION:
        return
    if type(found) is int and found > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"session {session_id} uses format_version {found}; this handshake reads format_version "
            f"{FORMAT_VERSION}. Upgrade handshake to read it."
        )
    raise IntegrityError(f"session {session_id}: format_version {found!r} is not one handshake wrote")


def _check_entries(session_id: str, path: Path) -> None:
    """Each of a session's directories (SUBDIRS) a real directory, each of its FILES a regular
    file, journal/ and session.toml present. One scandir, whose entries carry their types:
    gc opens every session of a big root, and an lstat per name took 12 system calls a
    session where this takes 7."""
    with os.scandir(path) as it:
        found = {entry.name: entry for entry in it if entry.name in _CHECKED}
    for name in FILES:
        entry = found.get(name)
        if entry is None:
            if name == "session.toml":
                raise IntegrityError(f"session {session_id} has no session.toml ({path / name})")
            continue  # the others are made by a writer
        if not entry.is_file(follow_symlinks=False):
            kind = "a symbolic link" if entry.is_symlink() else "not a regular file"
            raise IntegrityError(
                f"{path / name} is {kind}; handshake never writes one there, "
                "and neither reads nor replaces it"
            )
    for sub in SUBDIRS:
        top, _, below = sub.partition("/")
        if below:  # artifacts/objects, artifacts/packs: looked at only when artifacts/ is there
            if top not in found:
                continue
            try:
                is_dir = stat.S_ISDIR(os.lstat(path / sub).st_mode)
            except FileNotFoundError:
                continue
        elif sub in found:
            is_dir = found[sub].is_dir(follow_symlinks=False)
        elif sub in MADE_WITH_SESSION:
            raise IntegrityError(f"session {session_id} has no {sub}/ ({path / sub})")
        else:
            continue  # made by their first writer (and git does not keep empty ones)
        if not is_dir:
            raise IntegrityError(f"{path / sub} is a link or a file; refusing to follow it")


_CHECKED = frozenset({*FILES, *(sub.partition("/")[0] for sub in SUBDIRS)})


class Store:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def session(self, session_id: str) -> SessionDir:
        """An existing session's directory: validated id, no symlink, inside the root.

        Its journal/ must be there; its subdirectories must be directories and its files
        regular files (FILES), or absent, else IntegrityError names the one that is not."""
        validate_session_id(session_id)
        self.check_sessions_dir()
        path = self.paths.sessions / session_id
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise NotFound(
                f"no session {session_id} under {self.paths.root}", guidance=self.list_hint()
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise IntegrityError(f"{path} is a symbolic link; handshake never follows links in its store")
        if not stat.S_ISDIR(st.st_mode):
            raise IntegrityError(f"{path} is not a session directory")
        try:
            _check_entries(session_id, path)
        except FileNotFoundError:
            raise NotFound(f"session {session_id} was removed (by gc) just now") from None
        return SessionDir(session_id, path)

    def check_sessions_dir(self) -> None:
        """`<root>/sessions` is a real directory (or absent): a link there is never followed."""
        try:
            mode = os.lstat(self.paths.sessions).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
            raise IntegrityError(
                f"{self.paths.sessions} is {kind}; handshake never follows links in its store"
            )

    def list_hint(self) -> list[str]:
        return [" ".join(["handshake", "inspect", *self.paths.root_args()])]

    def session_ids(self) -> list[str]:
        """Every session directory under the root, in id order (time order for generated ids)."""
        self.check_sessions_dir()
        try:
            entries = list(os.scandir(self.paths.sessions))
        except FileNotFoundError:
            return []
        return sorted(
            e.name for e in entries if SESSION_ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        )

    def create_session(
        self,
        config: dict[str, Any],
        created_data: dict[str, Any],
        *,
        head_for: Callable[[Record], dict[str, Any]],
        session_id: str | None = None,
        clock: Clock = utc_now,
    ) -> SessionDir:
        """Build a new session in staging and rename it into place in one step.

        `config` goes into session.toml (format_version, session_id and created_at are
        added); `created_data` is the `session.created` record's data; `head_for` gives the
        first head.json from that record (what a head holds is the session layer's business).
        """
        import tomli_w

        from handshake_cli.storage.journal.writer import JournalWriter

        session_id = new_session_id() if session_id is None else validate_session_id(session_id)
        self.check_sessions_dir()
        if os.path.lexists(self.paths.sessions / session_id):
            raise SessionExists(f"session {session_id} already exists under {self.paths.root}")
        durable.ensure_root(self.paths.root)
        durable.ensure_subdir(self.paths.sessions)
        durable.ensure_subdir(self.paths.staging)
        staging = self.paths.staging / f"{session_id}.{os.urandom(4).hex()}"
        durable.make_dir(staging)
        try:
            created_at = clock()
            toml = {
                **config,
                "format_version": FORMAT_VERSION,
                "session_id": session_id,
                "created_at": created_at,
            }
            fd = durable.create_file(staging / "session.toml")
            try:
                durable.write_all(fd, tomli_w.dumps(toml).encode("utf-8"), staging / "session.toml")
                durable.fsync_fd(fd, path=staging / "session.toml")
            finally:
                os.close(fd)
            for name in MADE_WITH_SESSION:
                durable.make_dir(staging / name)
            # Record 1 carries the same instant as session.toml's created_at.
            first_ts = iter([created_at])
            with JournalWriter.create(
                staging / "journal", session_id, clock=lambda: next(first_ts, None) or clock()
            ) as journal:
                record = journal.append(
                    "session.created",
                    {
                        **created_data,
                        "session_id": session_id,
                        "format_version": FORMAT_VERSION,
                        "job_sha256": job_digest(config.get("job")),
                    },
                )
            head.write(staging, head_for(record))
            for sub in (*MADE_WITH_SESSION, ""):
                durable.fsync_dir(staging / sub if sub else staging)
            try:
                os.rename(staging, self.paths.sessions / session_id)
            except OSError as exc:
                if os.path.lexists(self.paths.sessions / session_id):
                    raise SessionExists(
                        f"session {session_id} already exists under {self.paths.root}"
                    ) from exc
                if durable.is_environment(exc):
                    raise durable.environment_failure(
                        exc, "move the new session into", self.paths.sessions / session_id
                    ) from exc
                raise
            durable.fsync_dir(self.paths.sessions)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return SessionDir(session_id, self.paths.sessions / session_id)
