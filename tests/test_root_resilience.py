"""One bad session never takes the whole root down.

A root holds healthy sessions (an interrupted run, made once per module by the console script
and SIGKILLed; a finished one) beside one that was damaged by hand: a link, a directory or
garbage in place of one of its files, a newer format, a missing journal. The listing, `recover
--all` and `gc` report the bad one (state UNREADABLE and an `error` with code, exit_code and
message), serve the others, and exit with the worst outcome. Nothing in the bad session, nor
anything a link in it points at, changes. A link in place of `sessions/` itself is refused by
every command, and a link planted in a session's directory is refused by writers as by readers.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.paths import Paths
from handshake_cli.session.state import fold, initial_head, write_head
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.store import Store
from tests.support.cli import CliResult, crash_run
from tests.support.jobs import send_job
from tests.support.paths import GOLDEN

Cli = Callable[..., CliResult]
Damage = Callable[[Path, Path], None]  # (session directory, a scratch directory outside the root)


# -- damage, one kind per function --------------------------------------------------------------


def _link_to_copy(name: str) -> Damage:
    """`name` replaced by a link to a copy of it outside the root (a link a reader could follow)."""

    def damage(session: Path, outside: Path) -> None:
        copy = outside / f"{session.name}-{name}"
        if (session / name).is_dir():
            shutil.copytree(session / name, copy)
            shutil.rmtree(session / name)
        elif (session / name).exists():
            shutil.copy(session / name, copy)
            (session / name).unlink()
        elif "." in name:
            copy.write_text('{"pid": 1, "host": "elsewhere", "started_at": "x", "command": "x"}')
        else:
            copy.mkdir()
        (session / name).symlink_to(copy)

    return damage


def _directory_at(name: str) -> Damage:
    def damage(session: Path, outside: Path) -> None:
        if (session / name).exists():
            (session / name).unlink()
        (session / name).mkdir()

    return damage


def _fifo_at(name: str) -> Damage:
    """A named pipe: opening it to read would wait for a writer forever."""

    def damage(session: Path, outside: Path) -> None:
        (session / name).unlink()
        os.mkfifo(session / name)

    return damage


def _file_at(name: str) -> Damage:
    def damage(session: Path, outside: Path) -> None:
        shutil.rmtree(session / name)
        (session / name).write_text("not a directory\n")

    return damage


def _removed(name: str) -> Damage:
    def damage(session: Path, outside: Path) -> None:
        target = session / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


def _toml_garbage(session: Path, outside: Path) -> None:
    (session / "session.toml").write_bytes(b"format_version = = [\n\x00\xff")


def _foreign_toml(session: Path, outside: Path) -> None:
    text = (session / "session.toml").read_text()
    (session / "session.toml").write_text(
        text.replace(f'session_id = "{session.name}"', 'session_id = "other"')
    )


def _newer_format(session: Path, outside: Path) -> None:
    text = (session / "session.toml").read_text()
    (session / "session.toml").write_text(text.replace("format_version = 1", "format_version = 2"))


def _no_segments(session: Path, outside: Path) -> None:
    for segment in (session / "journal").iterdir():
        segment.unlink()


def _segment_link(session: Path, outside: Path) -> None:
    segment = session / "journal" / "00000001.jsonl"
    copy = outside / f"{session.name}-segment"
    shutil.copy(segment, copy)
    segment.unlink()
    segment.symlink_to(copy)


# name -> (damage, error code, a word of the message that names what is wrong)
DAMAGES: dict[str, tuple[Damage, str, str]] = {
    "owner-link": (_link_to_copy("owner.json"), "integrity", "owner.json"),
    "head-link": (_link_to_copy("head.json"), "integrity", "head.json"),
    "head-dir": (_directory_at("head.json"), "integrity", "head.json"),
    "head-fifo": (_fifo_at("head.json"), "integrity", "head.json"),
    "toml-link": (_link_to_copy("session.toml"), "integrity", "session.toml"),
    "toml-dir": (_directory_at("session.toml"), "integrity", "session.toml"),
    "toml-garbage": (_toml_garbage, "integrity", "session.toml"),
    "toml-missing": (_removed("session.toml"), "integrity", "session.toml"),
    "toml-foreign": (_foreign_toml, "integrity", "'other'"),
    "newer-format": (_newer_format, "unsupported_format", "format_version 2"),
    "lock-link": (_link_to_copy("lock"), "integrity", "lock"),
    "journal-link": (_link_to_copy("journal"), "integrity", "journal"),
    "journal-file": (_file_at("journal"), "integrity", "journal"),
    "journal-missing": (_removed("journal"), "integrity", "journal"),
    "journal-empty": (_no_segments, "integrity", "journal"),
    "segment-link": (_segment_link, "integrity", "00000001.jsonl"),
    "requests-link": (_link_to_copy("requests"), "integrity", "requests"),
    "quarantine-link": (_link_to_copy("quarantine"), "integrity", "quarantine"),
    "artifacts-link": (_link_to_copy("artifacts"), "integrity", "artifacts"),
}
EXIT = {"integrity": 5, "unsupported_format": 2}


# -- roots ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session whose `run` was SIGKILLed after a tool result: `recover` completes it."""
    base = tmp_path_factory.mktemp("interrupted")
    root, workspace, home = base / "root", base / "ws", base / "home"
    for directory in (root, workspace, home):
        directory.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update({"HOME": str(home), "NO_COLOR": "1", "HANDSHAKE_HOME": str(root)})
    crash_run(env, send_job(base), "healthy-1", workspace, "after_result")
    return root / "sessions" / "healthy-1"


def snapshot(path: Path) -> dict[str, Any]:
    """Every entry below `path`, links not followed: a file's bytes, a link's target. An empty
    `lock` file is left out: taking a session's lock (which gc does before it reads session.toml
    whole) creates it, and it holds nothing."""
    found: dict[str, Any] = {}
    for entry in sorted(path.rglob("*")):
        key = str(entry.relative_to(path))
        if entry.name == "lock" and not entry.is_symlink() and entry.stat().st_size == 0:
            continue
        if entry.is_symlink():
            found[key] = ("link", os.readlink(entry))
        elif entry.is_file():
            found[key] = entry.read_bytes()
        else:
            found[key] = "dir" if entry.is_dir() else "special"  # a named pipe: never opened here
    return found


def interrupted_like(root: Path, session_id: str, config: dict[str, Any]) -> Path:
    """A session of the same job and workspace as `config`'s, interrupted (ACTIVE, no writer),
    so that `recover --all` and `gc --include-unfinished` reach for it: only its damage stops them."""
    session = Store(Paths(root)).create_session(
        {"job": config["job"], "workspace": config["workspace"]},
        {"model": {"provider": "scripted", "id": "scripted"}},
        head_for=initial_head,
        session_id=session_id,
    )
    with JournalWriter.open(session.journal, session_id) as journal:
        journal.append("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run started"})
    write_head(session.path, fold(session_id, scan(session.journal, session_id).records))
    return session.path


class Root:
    """A root with healthy sessions and damaged ones; `outside` holds what their links point at."""

    def __init__(self, path: Path, interrupted: Path, damages: list[str]) -> None:
        self.path = path
        self.outside = path.parent / "outside"
        self.outside.mkdir()
        sessions = path / "sessions"
        sessions.mkdir(mode=0o700)
        shutil.copytree(interrupted, sessions / interrupted.name)
        shutil.copytree(GOLDEN / "clean", sessions / "clean")
        self.healthy = {interrupted.name: "INTERRUPTED", "clean": "COMPLETED"}
        self.bad = [f"bad-{name}" for name in damages]
        config = tomllib.loads((interrupted / "session.toml").read_text())
        for name, session_id in zip(damages, self.bad, strict=True):
            session = interrupted_like(path, session_id, config)
            DAMAGES[name][0](session, self.outside)
        self.before = {session_id: snapshot(sessions / session_id) for session_id in self.bad}
        self.outside_before = snapshot(self.outside)

    def untouched(self) -> None:
        """The damaged sessions, and what their links point at, are as they were."""
        for session_id in self.bad:
            assert snapshot(self.path / "sessions" / session_id) == self.before[session_id], session_id
        assert snapshot(self.outside) == self.outside_before


@pytest.fixture
def make_root(root: Path, interrupted: Path) -> Callable[[list[str]], Root]:
    return lambda damages: Root(root, interrupted, damages)


def check_error(row: dict[str, Any], damage: str) -> None:
    _fn, code, named = DAMAGES[damage]
    assert row["error"]["code"] == code, row
    assert row["error"]["exit_code"] == EXIT[code], row
    assert named in row["error"]["message"], row


# -- the listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_session_is_listed_beside_the_others(
    cli: Cli, make_root: Callable[[list[str]], Root], damage: str
) -> None:
    root = make_root([damage])
    result = cli("inspect", "--root", str(root.path), "--json")
    assert result.code == EXIT[DAMAGES[damage][1]], result.stdout + result.stderr
    doc = result.json
    assert doc["status"] == "error" and "error" not in doc
    rows = {row["session_id"]: row for row in doc["sessions"]}
    assert {sid: rows[sid]["state"] for sid in root.healthy} == root.healthy
    bad = rows[f"bad-{damage}"]
    assert bad["state"] == "UNREADABLE" and bad["needs_attention"] is True
    check_error(bad, damage)
    root.untouched()


def test_the_human_listing_shows_every_session_and_why_one_is_unreadable(
    cli: Cli, make_root: Callable[[list[str]], Root]
) -> None:
    root = make_root(["owner-link", "newer-format"])
    result = cli("inspect", "--root", str(root.path))
    assert result.code == 5, result.stderr
    lines = result.stdout.splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    for session_id, state in {**root.healthy, "bad-owner-link": "UNREADABLE"}.items():
        assert any(line.startswith(session_id) and state in line for line in lines), result.stdout
    assert any(line.startswith("bad-owner-link: ") and "owner.json" in line for line in lines)
    assert any(line.startswith("bad-newer-format: ") and "format_version 2" in line for line in lines)


def test_a_newer_format_alone_makes_the_listing_exit_2(
    cli: Cli, make_root: Callable[[list[str]], Root]
) -> None:
    root = make_root(["newer-format"])
    assert cli("inspect", "--root", str(root.path), "--json").code == 2


# -- recover --all and gc --------------------------------------------------------------------------


def test_recover_all_recovers_the_healthy_and_reports_each_damaged_session(
    cli: Cli, make_root: Callable[[list[str]], Root]
) -> None:
    root = make_root(list(DAMAGES))
    result = cli("recover", "--all", "--root", str(root.path), "--json")
    assert result.code == 5, result.stdout + result.stderr  # the worst: damage
    rows = {row["session_id"]: row for row in result.json["sessions"]}
    assert rows["healthy-1"]["state"] == "COMPLETED" and rows["healthy-1"]["exit_code"] == 0
    for damage in DAMAGES:
        row = rows[f"bad-{damage}"]
        assert row["action"] == "error" and row["exit_code"] == row["error"]["exit_code"], row
        check_error(row, damage)
    listing = cli("inspect", "--root", str(root.path), "--json").json["sessions"]
    assert {r["session_id"]: r["state"] for r in listing if r["session_id"] in root.healthy} == {
        "healthy-1": "COMPLETED",
        "clean": "COMPLETED",
    }
    root.untouched()


def test_recover_all_dry_run_plans_the_healthy_beside_a_damaged_session(
    cli: Cli, make_root: Callable[[list[str]], Root]
) -> None:
    root = make_root(["owner-link"])
    result = cli("recover", "--all", "--dry-run", "--root", str(root.path))
    assert result.code == 5, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("healthy-1") and "resume" in line for line in lines), result.stdout
    assert any(line.startswith("bad-owner-link: ") and "owner.json" in line for line in lines)
    root.untouched()


def test_gc_removes_what_it_may_and_skips_each_damaged_session(
    cli: Cli, make_root: Callable[[list[str]], Root]
) -> None:
    root = make_root(list(DAMAGES))
    result = cli("gc", "--older-than", "0s", "--include-unfinished", "--root", str(root.path), "--json")
    assert result.code == 5, result.stdout + result.stderr
    doc = result.json
    assert doc["status"] == "error" and "error" not in doc
    assert sorted(r["session_id"] for r in doc["removed"]) == sorted(root.healthy)
    skipped = {s["session_id"]: s for s in doc["skipped"]}
    assert sorted(skipped) == sorted(root.bad)
    for damage in DAMAGES:
        entry = skipped[f"bad-{damage}"]
        assert entry["reason"] == "damaged"
        check_error(entry, damage)
    assert sorted(p.name for p in (root.path / "sessions").iterdir()) == sorted(root.bad)
    root.untouched()


def test_gc_of_a_root_with_only_a_newer_session_exits_2(
    cli: Cli, make_root: Callable[[list[str]], Root]
) -> None:
    root = make_root(["newer-format"])
    result = cli("gc", "--older-than", "0s", "--include-unfinished", "--root", str(root.path))
    assert result.code == 2, result.stdout + result.stderr
    assert "removed 2 session(s)" in result.stdout
    assert "damaged: session bad-newer-format uses format_version 2" in result.stdout
    root.untouched()


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_each_damage_alone_in_recover_all_and_gc(
    cli: Cli, make_root: Callable[[list[str]], Root], damage: str
) -> None:
    root = make_root([damage])
    code = EXIT[DAMAGES[damage][1]]
    recovered = cli("recover", "--all", "--root", str(root.path), "--json")
    assert recovered.code == code, recovered.stdout + recovered.stderr
    rows = {row["session_id"]: row for row in recovered.json["sessions"]}
    assert rows["healthy-1"]["state"] == "COMPLETED"
    check_error(rows[f"bad-{damage}"], damage)
    collected = cli("gc", "--older-than", "0s", "--include-unfinished", "--root", str(root.path), "--json")
    assert collected.code == code, collected.stdout + collected.stderr
    assert sorted(r["session_id"] for r in collected.json["removed"]) == sorted(root.healthy)
    check_error(collected.json["skipped"][0], damage)
    root.untouched()


# -- links refused by writers as by readers ------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "command"),
    [
        ("head-link", "recover"),
        ("head-link", "checkpoint"),
        ("head-link", "inspect"),
        ("head-link", "export -o BUNDLE"),
        ("journal-empty", "recover"),
        ("journal-empty", "checkpoint"),
        ("journal-empty", "inspect --verify"),
        ("journal-empty", "inspect --events --since-seq 2"),
        ("journal-empty", "recover --fork forked-1"),
    ],
)
def test_one_damaged_session_is_refused_by_readers_and_writers(
    cli: Cli, make_root: Callable[[list[str]], Root], damage: str, command: str
) -> None:
    """A writer never replaces a link planted in a session (nor starts its journal anew)."""
    root = make_root([damage])
    args = [str(root.outside / "bundle.tgz") if word == "BUNDLE" else word for word in command.split()]
    result = cli(args[0], f"bad-{damage}", *args[1:], "--root", str(root.path), "--json")
    assert result.code == 5, result.stdout + result.stderr
    check_error(result.json, damage)
    assert not (root.outside / "bundle.tgz").exists()
    assert not (root.path / "sessions" / "forked-1").exists()
    root.untouched()


# -- a link in place of sessions/ ------------------------------------------------------------------


def test_a_link_in_place_of_sessions_is_refused_by_every_command(
    cli: Cli, root: Path, interrupted: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(interrupted, elsewhere / interrupted.name)
    shutil.copytree(GOLDEN / "clean", elsewhere / "clean")
    bundle = tmp_path / "clean.tgz"
    source = tmp_path / "source"
    (source / "sessions").mkdir(parents=True)
    shutil.copytree(GOLDEN / "clean", source / "sessions" / "imported")
    toml = source / "sessions" / "imported" / "session.toml"
    toml.write_text(toml.read_text().replace('session_id = "clean"', 'session_id = "imported"'))
    assert cli("export", "imported", "-o", str(bundle), "--root", str(source)).code == 0
    # (in the linked directory too: an import that looked through the link would say it exists)
    shutil.copytree(source / "sessions" / "imported", elsewhere / "imported")
    (root / "sessions").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    job = send_job(tmp_path)
    commands = {
        "listing": ["inspect"],
        "inspect": ["inspect", "healthy-1"],
        "verify": ["inspect", "healthy-1", "--verify"],
        "events": ["inspect", "healthy-1", "--events"],
        "recover": ["recover", "healthy-1"],
        "recover --all": ["recover", "--all"],
        "gc": ["gc", "--older-than", "0s", "--include-unfinished"],
        "checkpoint": ["checkpoint", "clean"],
        "run": ["run", str(job), "--session-id", "new-1", "--workspace", str(workspace)],
        "export": ["export", "clean", "-o", str(tmp_path / "out.tgz")],
        "import": ["import", str(bundle)],
    }
    for what, args in commands.items():
        result = cli(*args, "--root", str(root), "--json")
        assert result.code == 5, (what, result.stdout, result.stderr)
        assert result.json["error"]["code"] == "integrity", what
        assert str(root / "sessions") in result.json["error"]["message"], what
    assert snapshot(elsewhere) == before
    assert not (tmp_path / "out.tgz").exists()
    assert [p.name for p in root.iterdir()] == ["sessions"]  # no staging/, trash/ or new session
