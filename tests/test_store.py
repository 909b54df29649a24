"""The session store (DESIGN section 2, "On disk"): ids, layout, permissions, atomic creation.

Session ids are checked before any path is built from them; generated ids are UUIDv7 and
sort by creation time; a session appears whole (built in staging, renamed into place) with
directories 0700 and files 0600 whatever the umask; nothing is read through a symbolic link.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.errors import (
    DurabilityError,
    EnvironmentFailure,
    ExitCode,
    IntegrityError,
    InvalidSessionId,
    NotFound,
    SessionExists,
    UnsupportedFormat,
)
from handshake_cli.paths import Paths
from handshake_cli.session.state import initial_head, read_head
from handshake_cli.storage import durable
from handshake_cli.storage.journal.scan import read_last_record, scan
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.store import (
    FORMAT_VERSION,
    SessionDir,
    Store,
    job_digest,
    new_session_id,
    validate_session_id,
)

CONFIG: dict[str, Any] = {
    "workspace": "/tmp/somewhere",
    "job": {
        "model": {"id": "scripted-1", "provider": "scripted"},
        "prompt": "hello ✓",
        "tools": ["read_file", "write_file"],
        "limits": {"max_turns": 4},
    },
}
CREATED: dict[str, Any] = {"model": {"id": "scripted-1", "provider": "scripted"}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root: Path) -> Store:
    return Store(Paths(root))


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set a umask for one test and always put the old one back."""
    old = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    try:
        yield set_umask
    finally:
        os.umask(old)


def create(store: Store, session_id: str | None = None) -> SessionDir:
    return store.create_session(CONFIG, CREATED, head_for=initial_head, session_id=session_id)


# -- session ids ---------------------------------------------------------------------------------

HOSTILE = [
    "..",
    ".",
    "a/b",
    "/etc",
    "../../etc",
    "a\x00b",
    "a" * 65,
    ".hidden",
    "-rf",
    "_x",
    "sessión",
    "\uff46\uff55\uff4c\uff4c",  # fullwidth letters
    "abc\n",
    "a b",
    "a\\b",
    "",
]


@pytest.mark.parametrize("session_id", HOSTILE, ids=repr)
def test_hostile_ids_are_refused_before_any_path_is_built(store: Store, root: Path, session_id: str) -> None:
    # "..", "." and "/etc" would name real directories if a path were built first.
    with pytest.raises(InvalidSessionId) as raised:
        store.session(session_id)
    assert int(raised.value.exit_code) == 2  # ExitCode.USAGE
    with pytest.raises(InvalidSessionId):
        validate_session_id(session_id)
    assert not root.exists()


@pytest.mark.parametrize("session_id", [s for s in HOSTILE if s], ids=repr)
def test_run_with_a_hostile_id_creates_nothing(store: Store, root: Path, session_id: str) -> None:
    with pytest.raises(InvalidSessionId):
        create(store, session_id)
    assert not root.exists()


def test_run_with_an_empty_id_is_refused(store: Store, root: Path) -> None:
    with pytest.raises(InvalidSessionId):
        create(store, "")
    assert store.session_ids() == []


@pytest.mark.parametrize("session_id", ["a", "Z", "0", "a" * 64, "run-2025.01.02_x", "A.b_c-1", "a..b"])
def test_valid_ids_are_accepted(store: Store, session_id: str) -> None:
    assert validate_session_id(session_id) == session_id
    with pytest.raises(NotFound) as raised:
        store.session(session_id)
    assert raised.value.exit_code == ExitCode.NOT_FOUND

    created = create(store, session_id)

    assert created.session_id == session_id
    assert store.session(session_id) == created
    assert store.session_ids() == [session_id]


def test_generated_ids_are_uuidv7_with_the_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    generated = new_session_id()
    after = time.time_ns() // 1_000_000

    parsed = uuid.UUID(generated)
    assert str(parsed) == generated  # canonical, lowercase, hyphenated
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after
    assert validate_session_id(generated) == generated
    assert len({new_session_id() for _ in range(2000)}) == 2000


def test_generated_ids_sort_by_creation_time(store: Store) -> None:
    ids = []
    for _ in range(12):
        ids.append(new_session_id())
        time.sleep(0.002)
    assert sorted(ids) == ids

    created = []
    for _ in range(4):
        created.append(create(store).session_id)
        time.sleep(0.002)
    assert store.session_ids() == created


# -- what a new session holds -------------------------------------------------------------------------


def test_a_new_session_is_whole(store: Store, root: Path) -> None:
    session = create(store, "whole-1")

    config = session.read_config()
    assert config["format_version"] == FORMAT_VERSION
    assert config["session_id"] == "whole-1"
    assert config["job"] == CONFIG["job"] and config["workspace"] == CONFIG["workspace"]
    assert isinstance(config["created_at"], str)

    result = scan(session.journal, "whole-1")
    assert result.damage is None
    [record] = result.records
    assert (record.seq, record.type) == (1, "session.created")
    assert record.data == {
        "session_id": "whole-1",
        "format_version": FORMAT_VERSION,
        "job_sha256": job_digest(CONFIG["job"]),
        **CREATED,
    }

    head = read_head(session.path)
    assert head is not None
    assert (head["state"], head["last_seq"], head["checkpoint_count"]) == ("CREATED", 1, 0)
    assert os.listdir(root / "staging") == []


def test_creating_an_id_that_exists_is_refused(store: Store, root: Path) -> None:
    first = create(store, "taken")
    toml_before = first.session_toml.read_bytes()
    journal_before = (first.journal / "00000001.jsonl").read_bytes()

    with pytest.raises(SessionExists) as raised:
        create(store, "taken")

    assert int(raised.value.exit_code) == 2  # ExitCode.USAGE
    assert first.session_toml.read_bytes() == toml_before
    assert (first.journal / "00000001.jsonl").read_bytes() == journal_before
    assert store.session_ids() == ["taken"]
    assert os.listdir(root / "staging") == []


# -- permissions ------------------------------------------------------------------------------------------


def _modes(top: Path) -> dict[str, int]:
    modes = {".": stat.S_IMODE(os.lstat(top).st_mode)}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            modes[str(path.relative_to(top))] = os.lstat(path).st_mode
    return modes


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o777], ids=["umask-000", "umask-022", "umask-777"])
def test_directories_0700_and_files_0600_whatever_the_umask(
    store: Store, root: Path, umask: Any, mask: int
) -> None:
    umask(mask)
    session = create(store, "perm")
    umask(0o022)

    modes = _modes(session.path)
    dirs = {name for name, mode in modes.items() if name != "." and stat.S_ISDIR(mode)}
    files = {name for name, mode in modes.items() if name != "." and stat.S_ISREG(mode)}
    assert dirs == {"journal"}  # artifacts/, quarantine/, requests/: made by their first writer
    assert files == {"session.toml", "head.json", "journal/00000001.jsonl"}
    assert len(modes) == 1 + len(dirs) + len(files)  # nothing else: no links, no temp files
    assert modes["."] == 0o700
    for name in dirs:
        assert stat.S_IMODE(modes[name]) == 0o700, name
    for name in files:
        assert stat.S_IMODE(modes[name]) == 0o600, name
    for made in (root, root / "sessions", root / "staging"):
        assert stat.S_IMODE(os.lstat(made).st_mode) == 0o700, made


def test_files_written_later_are_0600_too(store: Store, umask: Any) -> None:
    session = create(store, "later")
    umask(0)
    with JournalWriter.open(session.journal, "later", segment_bytes=300) as writer:
        for i in range(5):
            writer.append("model.chunk", {"i": i, "pad": "x" * 100})
    store_ = session.artifact_store()
    loose = store_.put_loose(b"loose")
    packs = store_.pack_writer()
    packs.add(b"packed")
    packs.sync()
    packs.close()
    umask(0o022)

    written = [*session.journal.iterdir(), store_.objects / loose, *store_.packs.iterdir()]
    assert len(written) > 4
    for path in written:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600, path
    for made in (store_.root, store_.objects, store_.packs):
        assert stat.S_IMODE(os.lstat(made).st_mode) == 0o700, made


def test_missing_parents_of_the_root_are_not_world_writable(tmp_path: Path, umask: Any) -> None:
    root = tmp_path / "home" / ".local" / "share" / "handshake"
    umask(0)
    Store(Paths(root)).create_session(CONFIG, CREATED, head_for=initial_head, session_id="deep")
    umask(0o022)

    for made in (tmp_path / "home", tmp_path / "home" / ".local", root.parent):
        assert stat.S_IMODE(os.lstat(made).st_mode) & 0o022 == 0, oct(os.lstat(made).st_mode)


# -- symbolic links -----------------------------------------------------------------------------------------


@pytest.fixture
def elsewhere(tmp_path: Path) -> SessionDir:
    """A real, valid session with the id the planted links use, under another root."""
    return Store(Paths(tmp_path / "elsewhere")).create_session(
        CONFIG, CREATED, head_for=initial_head, session_id="planted"
    )


def test_a_linked_session_directory_is_refused_and_not_listed(
    store: Store, root: Path, elsewhere: SessionDir
) -> None:
    create(store, "real")
    os.symlink(elsewhere.path, root / "sessions" / "planted")

    with pytest.raises(IntegrityError) as raised:
        store.session("planted")
    assert raised.value.exit_code == ExitCode.INTEGRITY
    assert "link" in raised.value.message
    assert store.session_ids() == ["real"]

    toml_before = elsewhere.session_toml.read_bytes()
    with pytest.raises(SessionExists):
        create(store, "planted")
    assert elsewhere.session_toml.read_bytes() == toml_before


def test_a_file_in_place_of_a_session_directory_is_refused(store: Store, root: Path) -> None:
    create(store, "real")
    (root / "sessions" / "not-a-dir").write_text("x")
    with pytest.raises(IntegrityError):
        store.session("not-a-dir")
    assert store.session_ids() == ["real"]


def test_a_linked_session_toml_is_refused(store: Store, elsewhere: SessionDir) -> None:
    session = create(store, "planted")
    os.unlink(session.session_toml)
    os.symlink(elsewhere.session_toml, session.session_toml)

    with pytest.raises(IntegrityError):
        durable.open_read(session.session_toml)
    with pytest.raises(IntegrityError):
        store.session("planted").read_config()


def test_a_linked_head_json_is_refused(store: Store, elsewhere: SessionDir) -> None:
    session = create(store, "planted")
    os.unlink(session.path / "head.json")
    os.symlink(elsewhere.path / "head.json", session.path / "head.json")
    with pytest.raises(IntegrityError):
        read_head(session.path)


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-real-segment", "dangling"])
def test_a_linked_journal_segment_is_refused(store: Store, elsewhere: SessionDir, dangling: bool) -> None:
    session = create(store, "planted")
    segment = session.journal / "00000001.jsonl"
    os.unlink(segment)
    target = elsewhere.journal / ("missing.jsonl" if dangling else "00000001.jsonl")
    os.symlink(target, segment)

    with pytest.raises(IntegrityError):
        durable.open_read(segment)
    with pytest.raises(IntegrityError):
        scan(session.journal, "planted")
    with pytest.raises(IntegrityError):
        read_last_record(session.journal)
    with pytest.raises(IntegrityError):
        JournalWriter.open(session.journal, "planted")


@pytest.mark.parametrize("sub", ["journal", "artifacts", "artifacts/packs", "quarantine"])
def test_a_linked_session_subdirectory_is_refused(store: Store, elsewhere: SessionDir, sub: str) -> None:
    """O_NOFOLLOW guards only a path's last component, so the store refuses linked directories."""
    session = create(store, "planted")
    shutil.rmtree(session.path / sub, ignore_errors=True)  # only journal/ is made with the session
    (session.path / sub).parent.mkdir(exist_ok=True)
    os.symlink(elsewhere.path / sub, session.path / sub)

    with pytest.raises(IntegrityError) as raised:
        store.session("planted")
    assert raised.value.exit_code == ExitCode.INTEGRITY


# -- a crash while creating ------------------------------------------------------------------------------


def _raise_eio(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def _interrupt(*args: Any, **kwargs: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("name", "replacement", "expected"),
    [
        ("rename", _raise_eio, EnvironmentFailure),
        ("rename", _interrupt, KeyboardInterrupt),
        ("fsync", _raise_eio, DurabilityError),
        ("fdatasync", _raise_eio, DurabilityError),
    ],
    ids=["rename-fails", "ctrl-c-at-rename", "fsync-fails", "journal-sync-fails"],
)
def test_a_crash_while_creating_leaves_no_session_and_no_debris(
    store: Store,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    replacement: Any,
    expected: type[BaseException],
) -> None:
    create(store, "earlier")
    monkeypatch.setattr(os, name, replacement)

    with pytest.raises(expected):
        create(store, "doomed")
    monkeypatch.undo()

    assert store.session_ids() == ["earlier"]
    assert sorted(os.listdir(root / "sessions")) == ["earlier"]
    assert os.listdir(root / "staging") == []
    with pytest.raises(NotFound):
        store.session("doomed")
    # Nothing was left half-made: the same id can be created now.
    assert create(store, "doomed").read_config()["session_id"] == "doomed"


def test_the_format_version_is_checked_on_read(store: Store) -> None:
    session = create(store, "future")
    text = session.session_toml.read_text().replace(
        f"format_version = {FORMAT_VERSION}", f"format_version = {FORMAT_VERSION + 1}"
    )
    session.session_toml.write_text(text)

    with pytest.raises(UnsupportedFormat) as raised:
        session.read_config()
    assert str(FORMAT_VERSION) in raised.value.message
    assert str(FORMAT_VERSION + 1) in raised.value.message
    assert tomllib.loads(text)["session_id"] == "future"


# -- session.toml's identity alone (what gc checks) ----------------------------------------------

_PREFIX = 'workspace = "/tmp/somewhere"\nformat_version = 1\nsession_id = "who"\n'
_JOB = '\n[job]\nname = "j"\n\n[job.prompt]\nuser = "hello"\n'


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (_PREFIX + _JOB, None),
        (_PREFIX, None),  # no tables at all
        (_PREFIX.replace('"who"', '"someone-else"') + _JOB, IntegrityError),
        (_PREFIX.replace("= 1", "= 2") + _JOB, UnsupportedFormat),
        (_PREFIX.replace("= 1", '= "1"') + _JOB, IntegrityError),
        ("[job]\nname = 'j'\n", IntegrityError),  # no top-level keys
        ("format_version = [\n", IntegrityError),
        (
            'notes = """a line\n[that looks like a table]"""\n' + _PREFIX + _JOB,
            None,
        ),  # the prefix cannot tell; the whole file is parsed
        (_PREFIX + "\n[job]\nname = 'caf\xe9'\n", None),
    ],
    ids=["whole", "no-tables", "foreign", "newer", "string-version", "no-keys", "broken", "tricky", "latin"],
)
def test_the_identity_check_agrees_with_read_config(tmp_path: Path, text: str, refused: type | None) -> None:
    session = SessionDir("who", tmp_path)
    session.session_toml.write_text(text, encoding="utf-8")
    if refused is None:
        session.check_identity()
        assert session.read_config()["session_id"] == "who"
    else:
        with pytest.raises(refused):
            session.check_identity()
        with pytest.raises(refused):
            session.read_config()


def test_the_identity_check_reads_no_further_than_it_must(tmp_path: Path) -> None:
    session = SessionDir("who", tmp_path)
    session.session_toml.write_bytes((_PREFIX + "\n[job]\nname = = 'broken'\n").encode())
    session.check_identity()  # whose files these are is settled; the job is not gc's business
    with pytest.raises(IntegrityError):
        session.read_config()
    session.session_toml.write_bytes((_PREFIX + _JOB).encode() + b"\xff\n")
    with pytest.raises(IntegrityError):
        session.check_identity()  # but the bytes must all be UTF-8
    session.session_toml.unlink()
    with pytest.raises(IntegrityError):
        session.check_identity()
