"""`handshake gc`: what goes, what never goes, and what a killed gc leaves behind.

Unfinished sessions are real: made by `handshake run` and crashed (HANDSHAKE_CRASH_AT), stopped
(SIGINT) or blocked (`recover` of a call in doubt), once per module, then copied into each
test's root. Locks are real flocks held by other processes. Finished sessions are written
through the store and the journal writer with a chosen clock, so their age is whatever a test
needs; debris gets its age from os.utime. gc itself always runs as the console script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.maintenance.gc import GRACE_SECONDS, parse_duration
from handshake_cli.paths import Paths
from handshake_cli.session.state import fold, initial_head, write_head
from handshake_cli.storage import lock
from handshake_cli.storage.journal.codec import utc_now
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.store import SessionDir, Store
from handshake_cli.storage.trash import SPAWN_AFTER, Deleter
from tests.support.cli import CliResult, crash_run, start, wait_for
from tests.support.jobs import gate_call, gate_tool, long_turn_job, send_job, write_job

Cli = Callable[..., CliResult]
OLD = "2020-01-02T03:04:05.000000Z"
DAY = 86400.0
ENDING = {"COMPLETED": "session.completed", "FAILED": "session.failed", "CANCELLED": "session.cancelled"}


# -- building sessions -----------------------------------------------------------------------


def make_session(
    root: Path,
    session_id: str,
    state: str = "COMPLETED",
    *,
    ts: str | None = OLD,
    results: list[dict[str, Any]] | None = None,
) -> SessionDir:
    """A session whose records all carry `ts` (None: now), ending in `state`."""
    clock = (lambda: ts) if ts else utc_now
    store = Store(Paths(root))
    session = store.create_session(
        {"job": {"name": "gc-test"}},
        {"model": {"provider": "scripted", "id": "scripted"}},
        head_for=initial_head,
        session_id=session_id,
        clock=clock,
    )
    with JournalWriter.open(session.journal, session_id, clock=clock) as journal:
        journal.append("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run started"})
        for data in results or []:
            journal.append("tool.result", data)
        if state in ENDING:
            journal.append(ENDING[state], {})
        elif state != "ACTIVE":
            journal.append("session.state_change", {"from": "ACTIVE", "to": state, "reason": "test"})
    write_head(session.path, fold(session_id, scan(session.journal, session_id).records))
    return session


def age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


def snapshot(directory: Path) -> dict[str, Any]:
    """Every path below `directory`: a file's bytes and mtime, a directory's mtime."""
    found: dict[str, Any] = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(directory))] = (
            path.read_bytes() if path.is_file() else None,
            st.st_mtime_ns,
        )
    return found


def session_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "sessions").iterdir())


def listing(cli: Cli, root: Path) -> dict[str, str]:
    result = cli("inspect", "--root", str(root), "--json")
    assert result.code == 0, result.stdout + result.stderr
    return {row["session_id"]: row["state"] for row in result.json["sessions"]}


def gc(
    cli: Cli, root: Path, *args: str, extra_env: dict[str, str] | None = None, code: int = 0
) -> dict[str, Any]:
    """`gc --json`; `code` is the exit code expected (5 when a session is skipped as damaged)."""
    result = cli("gc", "--root", str(root), "--json", *args, extra_env=extra_env)
    assert result.code == code, result.stdout + result.stderr
    doc: dict[str, Any] = result.json
    assert doc["command"] == "gc" and doc["status"] == ("ok" if code == 0 else "error")
    return doc


def ids(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["session_id"] for item in items)


# -- real unfinished sessions, made once ------------------------------------------------------


def _hermetic_env(base: Path) -> dict[str, str]:
    home = base / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    return {**clean, "NO_COLOR": "1", "COLUMNS": "80", "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}


def _has_chunk(root: Path, session_id: str) -> bool:
    journal = root / "sessions" / session_id / "journal"
    try:
        return any(r.type == "model.chunk" for r in scan(journal, session_id).records)
    except Exception:
        return False


@pytest.fixture(scope="module")
def unfinished_sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sessions/` holding interrupted-1 (ACTIVE, its writer SIGKILLed), blocked-1 (BLOCKED by
    recover: a non-idempotent call in doubt) and paused-1 (PAUSED by a SIGINT mid-stream)."""
    base = tmp_path_factory.mktemp("unfinished")
    root, workspace = base / "root", base / "ws"
    root.mkdir(mode=0o700)
    workspace.mkdir()
    env = {**_hermetic_env(base), "HANDSHAKE_HOME": str(root)}
    job = send_job(base)
    crash_run(env, job, "interrupted-1", workspace, "after_intent")
    crash_run(env, job, "blocked-1", workspace, "before_result")
    blocked = subprocess.run(
        [sys.executable, "-m", "handshake_cli", "recover", "blocked-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
    proc = start(
        env,
        "run",
        str(long_turn_job(base, 200, 20)),
        "--session-id",
        "paused-1",
        "--workspace",
        str(workspace),
    )
    wait_for(lambda: _has_chunk(root, "paused-1"))
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    return root / "sessions"


@pytest.fixture
def with_unfinished(root: Path, unfinished_sessions: Path, cli: Cli) -> Path:
    shutil.copytree(unfinished_sessions, root / "sessions")
    assert listing(cli, root) == {
        "blocked-1": "BLOCKED",
        "interrupted-1": "INTERRUPTED",
        "paused-1": "PAUSED",
    }
    return root


@pytest.fixture
def held_lock(env: dict[str, str]) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Another process that holds a session's flock until the test ends."""
    procs: list[subprocess.Popen[str]] = []
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from handshake_cli.storage.lock import SessionLock\n"
        "held = SessionLock(Path(sys.argv[1]), Path(sys.argv[1]).name)\n"
        "held.acquire('a test holding the lock')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )

    def hold(session: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(session)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield hold
    for proc in procs:
        proc.communicate(input="", timeout=10)


# -- what goes and what stays -------------------------------------------------------------


def test_old_finished_sessions_go_and_new_ones_stay(cli: Cli, root: Path) -> None:
    for state in ("COMPLETED", "FAILED", "CANCELLED"):
        make_session(root, f"old-{state.lower()}", state)
    make_session(root, "new-completed", ts=None)
    sizes = {
        p.name: sum(f.lstat().st_size for f in p.rglob("*") if f.is_file())
        for p in (root / "sessions").iterdir()
    }
    doc = gc(cli, root, "--older-than", "7d")
    assert ids(doc["removed"]) == ["old-cancelled", "old-completed", "old-failed"]
    assert {r["session_id"]: r["state"] for r in doc["removed"]} == {
        "old-cancelled": "CANCELLED",
        "old-completed": "COMPLETED",
        "old-failed": "FAILED",
    }
    assert doc["skipped"] == [] and doc["kept"] == 1 and doc["dry_run"] is False
    assert doc["reclaimed_bytes"] == sum(v for k, v in sizes.items() if k.startswith("old-"))
    assert session_names(root) == ["new-completed"]
    assert list((root / "trash").iterdir()) == []
    assert listing(cli, root) == {"new-completed": "COMPLETED"}


def test_without_an_age_no_session_goes_and_gc_says_so(cli: Cli, root: Path) -> None:
    make_session(root, "old-1")
    human = cli("gc", "--root", str(root))
    assert human.code == 0, human.stderr
    assert "removed no session" in human.stdout and "no age given" in human.stdout
    doc = gc(cli, root)
    assert doc["removed"] == [] and doc["kept"] == 1
    assert any("no age given" in note for note in doc["notes"])
    assert session_names(root) == ["old-1"]


def test_unfinished_sessions_are_never_removed(cli: Cli, with_unfinished: Path) -> None:
    root = with_unfinished
    make_session(root, "old-paused", "PAUSED")
    before = snapshot(root / "sessions")
    doc = gc(cli, root, "--older-than", "0s")
    assert doc["removed"] == []
    reasons = {s["session_id"]: (s["state"], s["reason"]) for s in doc["skipped"]}
    assert reasons == {
        "blocked-1": ("BLOCKED", "unfinished"),
        "interrupted-1": ("INTERRUPTED", "unfinished"),
        "paused-1": ("PAUSED", "unfinished"),
        "old-paused": ("PAUSED", "unfinished"),
    }
    assert "--include-unfinished" in doc["skipped"][0]["detail"]
    assert snapshot(root / "sessions") == before


def test_include_unfinished_takes_paused_blocked_and_interrupted(cli: Cli, with_unfinished: Path) -> None:
    root = with_unfinished
    doc = gc(cli, root, "--older-than", "0s", "--include-unfinished")
    assert {r["session_id"]: r["state"] for r in doc["removed"]} == {
        "blocked-1": "BLOCKED",
        "interrupted-1": "INTERRUPTED",
        "paused-1": "PAUSED",
    }
    assert session_names(root) == [] and list((root / "trash").iterdir()) == []


def test_a_session_never_started_goes_only_with_include_unfinished_and_not_at_once(
    cli: Cli, root: Path
) -> None:
    store = Store(Paths(root))
    model = {"model": {"provider": "scripted", "id": "scripted"}}
    store.create_session({}, model, head_for=initial_head, session_id="created-old", clock=lambda: OLD)
    store.create_session(
        {}, model, head_for=initial_head, session_id="created-now"
    )  # `run` is about to take its lock
    plain = gc(cli, root, "--older-than", "0s")
    assert {s["session_id"]: s["reason"] for s in plain["skipped"]} == {
        "created-now": "unfinished",
        "created-old": "unfinished",
    }
    doc = gc(cli, root, "--older-than", "0s", "--include-unfinished")
    assert ids(doc["removed"]) == ["created-old"]
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("created-now", "unfinished")]
    assert "moments ago" in doc["skipped"][0]["detail"]


def test_include_unfinished_respects_the_age(cli: Cli, with_unfinished: Path) -> None:
    doc = gc(cli, with_unfinished, "--older-than", "1d", "--include-unfinished")
    assert doc["removed"] == [] and doc["kept"] == 3


def test_a_running_session_is_never_removed(
    cli: Cli, root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    home_env = {**env, "HANDSHAKE_HOME": str(root)}
    # The run waits inside a tool call until the test opens the gate: it is live, holding its
    # lock, for as long as gc needs, however slow or fast the machine.
    turns = [{"text": "Waiting.", "tool_calls": [gate_call(1)]}, {"text": "Done."}]
    job = write_job(tmp_path / "job-gated", turns, [gate_tool()])
    proc = start(home_env, "run", str(job), "--session-id", "live-1", "--workspace", str(workspace))
    try:
        wait_for(lambda: (workspace / "waiting1").exists())
        wait_for(lambda: (h := lock.holder(root / "sessions" / "live-1")) is not None and h.pid == proc.pid)
        for extra in (["--dry-run"], []):
            doc = gc(cli, root, "--older-than", "0s", "--include-unfinished", *extra)
            assert doc["removed"] == []
            assert [(s["session_id"], s["state"], s["reason"]) for s in doc["skipped"]] == [
                ("live-1", "ACTIVE", "locked")
            ]
            assert f"pid {proc.pid}" in doc["skipped"][0]["detail"]
        assert proc.poll() is None, "the run ended before gc could meet it"
        (workspace / "open1").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out + err
    assert listing(cli, root) == {"live-1": "COMPLETED"}
    assert ids(gc(cli, root, "--older-than", "0s")["removed"]) == ["live-1"]


def test_a_held_flock_protects_even_a_finished_session(
    cli: Cli, root: Path, held_lock: Callable[[Path], subprocess.Popen[str]]
) -> None:
    session = make_session(root, "held-1")
    make_session(root, "free-1")
    held_lock(session.path)
    # The flock is the authority, not owner.json: without it gc cannot tell who holds it,
    # but still cannot take the lock.
    (session.path / "owner.json").unlink()
    doc = gc(cli, root, "--older-than", "0s", "--include-unfinished")
    assert ids(doc["removed"]) == ["free-1"]
    assert [(s["session_id"], s["state"], s["reason"]) for s in doc["skipped"]] == [
        ("held-1", "COMPLETED", "locked")
    ]
    assert session_names(root) == ["held-1"]


def test_a_damaged_session_is_never_removed(cli: Cli, root: Path) -> None:
    torn = make_session(root, "corrupt-1")
    segment = torn.journal / "00000001.jsonl"
    data = bytearray(segment.read_bytes())
    data[data.index(b'"type":"session.state_change"') + 9] ^= 0x01  # a bit flip in record 2
    segment.write_bytes(bytes(data))
    (torn.path / "head.json").unlink()  # so gc must fold the journal
    config = make_session(root, "bad-config-1")
    (config.path / "session.toml").write_text("format_version = [\n")
    doc = gc(cli, root, "--older-than", "0s", "--include-unfinished", code=5)
    assert doc["removed"] == []
    assert {s["session_id"]: s["reason"] for s in doc["skipped"]} == {
        "bad-config-1": "damaged",
        "corrupt-1": "damaged",
    }
    assert "inspect corrupt-1 --verify" in next(
        s["detail"] for s in doc["skipped"] if s["session_id"] == "corrupt-1"
    )
    assert session_names(root) == ["bad-config-1", "corrupt-1"]


def test_a_head_naming_an_unknown_state_is_not_trusted(cli: Cli, root: Path) -> None:
    """head.json is a cache: one edited by hand to name a state handshake never writes, even
    with the journal's last seq, is rebuilt from the journal by the listing as by gc."""
    session = make_session(root, "bogus-1", "PAUSED")
    head = json.loads((session.path / "head.json").read_text())
    assert head["last_seq"] == 3
    (session.path / "head.json").write_text(json.dumps({**head, "state": "BOGUS"}))
    rows = cli("inspect", "--root", str(root), "--json").json["sessions"]
    assert [(row["state"], row["head_matches"]) for row in rows] == [("PAUSED", False)]
    doc = gc(cli, root, "--older-than", "0s")
    assert [(s["state"], s["reason"]) for s in doc["skipped"]] == [("PAUSED", "unfinished")]


def test_a_journal_with_no_intact_record_is_named(cli: Cli, root: Path) -> None:
    session = make_session(root, "empty-1")
    (session.journal / "00000001.jsonl").write_bytes(b"not a record\n")
    doc = gc(cli, root, "--older-than", "0s", code=5)
    [skipped] = doc["skipped"]
    assert skipped["error"]["message"] == (
        f"session empty-1: the journal holds no intact record ({session.journal})"
    )
    assert session_names(root) == ["empty-1"]


def test_gc_reads_only_whose_session_it_is_from_session_toml(cli: Cli, root: Path) -> None:
    """session.toml must name the session and a format gc reads; the job below it is not parsed."""
    foreign = make_session(root, "foreign-1")
    text = foreign.session_toml.read_text()
    foreign.session_toml.write_text(text.replace('session_id = "foreign-1"', 'session_id = "other-1"'))
    odd_job = make_session(root, "odd-job-1")
    odd_job.session_toml.write_text(odd_job.session_toml.read_text() + "\n[job.extra]\nx = = 1\n")
    doc = gc(cli, root, "--older-than", "0s", code=5)
    assert ids(doc["removed"]) == ["odd-job-1"]
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("foreign-1", "damaged")]
    assert "other-1" in doc["skipped"][0]["detail"]
    assert session_names(root) == ["foreign-1"]


# -- dry run ---------------------------------------------------------------------------------


def test_dry_run_changes_nothing(cli: Cli, root: Path) -> None:
    make_session(root, "old-1")
    kept = make_session(root, "paused-1", "PAUSED")
    old_tmp = kept.path / ".tmp-head.json.0badcafe"
    old_tmp.write_bytes(b"{}")
    age(old_tmp, 2 * GRACE_SECONDS)
    leftover = root / "staging" / "crashed.0badcafe"
    leftover.mkdir()
    (leftover / "session.toml").write_text("x")
    age(leftover, 2 * GRACE_SECONDS)
    (root / "trash" / "gone.12345678").mkdir(parents=True)
    before = snapshot(root)
    doc = gc(cli, root, "--older-than", "0s", "--keep-checkpoints", "1", "--dry-run")
    human = cli("gc", "--root", str(root), "--older-than", "0s", "--dry-run")
    assert snapshot(root) == before
    assert doc["dry_run"] is True
    assert ids(doc["removed"]) == ["old-1"]
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("paused-1", "unfinished")]
    assert sorted((s["kind"], s["path"]) for s in doc["swept"]) == [
        ("staging", "staging/crashed.0badcafe"),
        ("temp", "sessions/paused-1/.tmp-head.json.0badcafe"),
        ("trash", "trash/gone.12345678"),
    ]
    assert doc["reclaimed_bytes"] == sum(r["bytes"] for r in doc["removed"]) + sum(
        s["bytes"] for s in doc["swept"]
    )
    assert human.code == 0 and "would remove 1 session(s)" in human.stdout
    assert "dry run: nothing was removed" in human.stdout


# -- a gc killed mid-way -------------------------------------------------------------------


@pytest.mark.parametrize("crash_at", ["gc_after_trash:2", "gc_before_delete"])
def test_a_killed_gc_leaves_no_half_session_and_the_next_one_empties_the_trash(
    crash_at: str, cli: Cli, root: Path
) -> None:
    for n in (1, 2, 3):
        make_session(root, f"old-{n}")
    make_session(root, "new-1", ts=None)
    killed = cli("gc", "--root", str(root), "--older-than", "7d", extra_env={"HANDSHAKE_CRASH_AT": crash_at})
    assert killed.code == -signal.SIGKILL, killed.stdout + killed.stderr
    trash = sorted(p.name.rsplit(".", 1)[0] for p in (root / "trash").iterdir())
    if crash_at.startswith("gc_after_trash"):
        assert trash == ["old-1", "old-2"]  # killed right after the second rename
        assert listing(cli, root) == {"old-3": "COMPLETED", "new-1": "COMPLETED"}
    else:
        assert trash == ["old-1", "old-2", "old-3"]  # renamed and synced, not yet deleted
        assert listing(cli, root) == {"new-1": "COMPLETED"}
    # Whatever is left under sessions/ is whole: every session reads and verifies.
    for name in session_names(root):
        verify = cli("inspect", name, "--verify", "--root", str(root), "--json")
        assert verify.code == 0 and verify.json["verdict"] == "intact", verify.stdout
    # A trash entry may itself be half-deleted by then; it is never a session again.
    half = next((root / "trash").iterdir())
    shutil.rmtree(half / "journal")
    again = gc(cli, root)  # no age: only the trash and other debris go
    assert sorted(s["kind"] for s in again["swept"]) == ["trash"] * len(trash)
    assert list((root / "trash").iterdir()) == []
    assert again["removed"] == []
    final = gc(cli, root, "--older-than", "7d")
    assert session_names(root) == ["new-1"] and listing(cli, root) == {"new-1": "COMPLETED"}
    assert final["swept"] == []


# -- deleting the trash ----------------------------------------------------------------------


def _tree(top: Path, files: dict[str, int]) -> int:
    """A directory holding `files` (path relative to it -> size); returns their total size."""
    for name, size in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(b"x" * size)
    return sum(files.values())


def _trash_of_trees(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A trash of session-like trees, a loose file and a name that is gone, with the bytes of each;
    two of the trees hold links to a directory and a file outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"not gc's to delete")
    trash = tmp_path / "trash"
    trash.mkdir()
    expected = {
        f"s-{n}": _tree(
            trash / f"s-{n}",
            {"session.toml": 10 + n, "journal/00000001.jsonl": 100 * n, "artifacts/packs/00000001.pack": 7},
        )
        for n in range(6)
    }
    (trash / "s-0" / "linked").symlink_to(outside)
    (trash / "s-1" / "journal" / "linked-file").symlink_to(outside / "keep.txt")
    expected["s-0"] += len(str(outside))  # a link's own size: the length of what it names
    expected["s-1"] += len(str(outside / "keep.txt"))
    (trash / "loose").write_bytes(b"12345")
    expected["loose"] = 5
    expected["gone"] = 0
    return trash, expected


def _delete_all(deleter: Deleter, trash: Path, names: list[str]) -> list[tuple[str, int, str | None]]:
    seen: list[tuple[str, int, str | None]] = []
    for name in names:

        def done(size: int, error: str | None, name: str = name) -> None:
            seen.append((name, size, error))

        deleter.delete(trash / name, done)
    deleter.finish()
    return seen


def test_helpers_delete_measure_and_report_in_order_following_no_link(tmp_path: Path) -> None:
    trash, expected = _trash_of_trees(tmp_path)
    deleter = Deleter(2, spawn_after=3)  # the first three wait, then go to the helpers with the rest
    seen = _delete_all(deleter, trash, list(expected))
    assert seen == [(name, size, None) for name, size in expected.items()]
    assert deleter.by_helpers == len(expected) and deleter.notes == []
    assert list(trash.iterdir()) == []
    assert (tmp_path / "outside" / "keep.txt").read_bytes() == b"not gc's to delete"


@pytest.mark.parametrize("python", ["false", "/nonexistent/python3", ""], ids=["dies", "missing", "none"])
def test_without_working_helpers_gc_deletes_by_itself(tmp_path: Path, python: str) -> None:
    trash, expected = _trash_of_trees(tmp_path)
    if python == "false":
        python = shutil.which("false") or "/bin/false"  # starts, reads nothing, exits 1
    deleter = Deleter(2, spawn_after=1, python=python)
    seen = _delete_all(deleter, trash, list(expected))
    assert seen == [(name, size, None) for name, size in expected.items()]
    assert deleter.by_helpers == 0 and len(deleter.notes) == 1, deleter.notes
    assert list(trash.iterdir()) == []


def test_a_gc_killed_while_helpers_delete_leaves_only_trash_and_the_next_one_empties_it(
    cli: Cli, root: Path
) -> None:
    old = [f"old-{n:03d}" for n in range(SPAWN_AFTER + 6)]  # enough for gc to start its helpers
    sizes = {}
    for name in old:
        session = make_session(root, name)
        sizes[name] = sum(f.lstat().st_size for f in session.path.rglob("*") if f.is_file())
    make_session(root, "new-1", ts=None)
    whole = gc(cli, root, "--older-than", "7d", "--dry-run")
    assert {r["session_id"]: r["bytes"] for r in whole["removed"]} == sizes

    killed = cli(
        "gc", "--root", str(root), "--older-than", "7d", extra_env={"HANDSHAKE_CRASH_AT": "gc_deleting"}
    )
    assert killed.code == -signal.SIGKILL, killed.stdout + killed.stderr
    # Every old session went into the trash before anything was handed to a helper; the helpers
    # may still be finishing their share. Whatever they leave, the next gc takes.
    assert listing(cli, root) == {"new-1": "COMPLETED"}
    gc(cli, root)
    assert list((root / "trash").iterdir()) == []
    assert session_names(root) == ["new-1"]


def test_a_big_gc_reports_what_its_helpers_deleted(cli: Cli, root: Path) -> None:
    old = [f"old-{n:03d}" for n in range(SPAWN_AFTER + 6)]
    for name in old:
        make_session(root, name)
    make_session(root, "new-1", ts=None)
    dry = gc(cli, root, "--older-than", "7d", "--dry-run")
    doc = gc(cli, root, "--older-than", "7d")
    assert [(r["session_id"], r["bytes"]) for r in doc["removed"]] == [
        (r["session_id"], r["bytes"]) for r in dry["removed"]
    ]
    assert ids(doc["removed"]) == old and doc["errors"] == []
    assert doc["reclaimed_bytes"] == dry["reclaimed_bytes"] > 0
    assert not any("helper" in note for note in doc["notes"])
    assert session_names(root) == ["new-1"] and list((root / "trash").iterdir()) == []


# -- debris --------------------------------------------------------------------------------


def test_debris_is_swept_only_after_the_grace_period(cli: Cli, root: Path) -> None:
    session = make_session(root, "s-1", ts=None)
    make_session(root, "p-1", "PAUSED", ts=None)
    staging = root / "staging"
    for name, seconds in (("crashed.00000001", 2 * GRACE_SECONDS), ("creating.00000002", 60)):
        (staging / name / "journal").mkdir(parents=True)
        (staging / name / "session.toml").write_text("x")
        age(staging / name, seconds)
    requests = session.path / "requests"
    requests.mkdir(mode=0o700)
    files = {
        session.path / ".tmp-head.json.0000000a": 2 * GRACE_SECONDS,
        session.path / ".tmp-owner.json.0000000b": 60,
        session.path / "artifacts" / "objects" / ".tmp-abc.0000000c": 2 * GRACE_SECONDS,
        requests / "0123456789abcdef.json": 2 * GRACE_SECONDS,  # a request nobody serves
        requests / "fedcba9876543210.done.json": 2 * GRACE_SECONDS,  # an answer nobody read
        requests / "1111111111111111.json": 60,  # an asker may still be waiting
        requests / "notes.txt": 2 * GRACE_SECONDS,  # not ours to judge
        session.quarantine / "00000001.jsonl.100.torn": 400 * DAY,  # no quarantine age: kept
        root / "sessions" / "p-1" / ".tmp-head.json.0000000d": 2 * GRACE_SECONDS,
    }
    for path, seconds in files.items():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # made by their first writer
        path.write_bytes(b"0123456789")
        age(path, seconds)
    doc = gc(cli, root)
    assert sorted((s["kind"], s["path"]) for s in doc["swept"]) == [
        ("request", "sessions/s-1/requests/0123456789abcdef.json"),
        ("request", "sessions/s-1/requests/fedcba9876543210.done.json"),
        ("staging", "staging/crashed.00000001"),
        ("temp", "sessions/p-1/.tmp-head.json.0000000d"),
        ("temp", "sessions/s-1/.tmp-head.json.0000000a"),
        ("temp", "sessions/s-1/artifacts/objects/.tmp-abc.0000000c"),
    ]
    assert all(s["bytes"] == 10 for s in doc["swept"] if s["kind"] != "staging")
    assert doc["reclaimed_bytes"] == sum(s["bytes"] for s in doc["swept"]) > 50
    assert sorted(p.name for p in staging.iterdir()) == ["creating.00000002"]
    assert sorted(p.name for p in requests.iterdir()) == ["1111111111111111.json", "notes.txt"]
    assert (session.path / ".tmp-owner.json.0000000b").exists()
    assert (session.quarantine / "00000001.jsonl.100.torn").exists()
    assert listing(cli, root) == {"p-1": "PAUSED", "s-1": "COMPLETED"}


def test_debris_of_a_locked_session_waits(
    cli: Cli, root: Path, held_lock: Callable[[Path], subprocess.Popen[str]]
) -> None:
    session = make_session(root, "held-1", ts=None)
    debris = session.path / ".tmp-head.json.0000000a"
    debris.write_bytes(b"{}")
    age(debris, 2 * GRACE_SECONDS)
    held_lock(session.path)
    doc = gc(cli, root)
    assert doc["swept"] == [] and debris.exists()
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("held-1", "locked")]


def test_quarantine_goes_after_its_own_age(cli: Cli, root: Path) -> None:
    session = make_session(root, "s-1", ts=None)
    old, recent = session.quarantine / "00000001.jsonl.10.torn", session.quarantine / "00000001.jsonl.20.torn"
    session.quarantine.mkdir(mode=0o700)
    for path, days in ((old, 40), (recent, 10)):
        path.write_bytes(b"torn bytes")
        age(path, days * DAY)
    (root / "handshake.toml").write_text('[gc]\nquarantine_older_than = "30d"\n')
    doc = gc(cli, root)
    assert [(s["kind"], s["path"]) for s in doc["swept"]] == [
        ("quarantine", "sessions/s-1/quarantine/00000001.jsonl.10.torn")
    ]
    assert not old.exists() and recent.exists()
    assert doc["policy"]["quarantine_older_than_seconds"] == 30 * DAY


# -- policy ----------------------------------------------------------------------------------


def test_handshake_toml_gives_the_policy_and_flags_win(cli: Cli, root: Path) -> None:
    make_session(root, "old-1")
    make_session(root, "old-2", ts="2021-01-01T00:00:00.000000Z")
    (root / "handshake.toml").write_text('[gc]\nolder_than = "7d"\nkeep_checkpoints = 3\n\n[other]\nx = 1\n')
    flagged = gc(cli, root, "--older-than", "10000w", "--dry-run")
    assert flagged["removed"] == [] and flagged["policy"]["older_than_seconds"] == 10000 * 7 * DAY
    doc = gc(cli, root)
    assert doc["policy"]["older_than_seconds"] == 7 * DAY and doc["policy"]["keep_checkpoints"] == 3
    assert doc["policy"]["config_file"] == str(root / "handshake.toml")
    assert ids(doc["removed"]) == ["old-1", "old-2"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[gc\n", None),
        ('[gc]\nolder_than = "seven days"\n', "gc.older_than"),
        ("[gc]\nolder_than = 7\n", "gc.older_than"),
        ("[gc]\nkeep_checkpoints = -1\n", "gc.keep_checkpoints"),
        ("[gc]\nkeep_checkpoints = true\n", "gc.keep_checkpoints"),
        ('[gc]\nquarantine_older_than = "1y"\n', "gc.quarantine_older_than"),
        ('[gc]\nolder_then = "7d"\n', "gc.older_then"),
        ('gc = "weekly"\n', "gc"),
    ],
)
def test_a_bad_handshake_toml_is_exit_2_naming_file_and_key(
    text: str, key: str | None, cli: Cli, root: Path
) -> None:
    make_session(root, "old-1")
    config = root / "handshake.toml"
    config.write_text(text)
    result = cli("gc", "--root", str(root), "--older-than", "0s", "--json")
    assert result.code == 2, result.stdout
    error = result.json["error"]
    assert error["code"] == "invalid_config" and error["exit_code"] == 2
    assert error["details"] == {"file": str(config), "key": key}
    assert str(config) in error["message"]
    if key:
        assert key.removeprefix("gc.") in error["message"]
    human = cli("gc", "--root", str(root), "--older-than", "0s")
    assert human.code == 2 and str(config) in human.stderr and human.stdout == ""
    assert session_names(root) == ["old-1"]


@pytest.mark.parametrize("value", ["7", "7x", "-1d", "", "1.5h", "d7", "7 d s"])
def test_a_bad_older_than_is_exit_2(value: str, cli: Cli, root: Path) -> None:
    make_session(root, "old-1")
    result = cli("gc", "--root", str(root), "--older-than", value, "--json")
    assert result.code == 2, result.stdout
    assert result.json["error"]["code"] == "usage" and "--older-than" in result.json["error"]["message"]
    assert session_names(root) == ["old-1"]


def test_a_negative_keep_checkpoints_is_exit_2(cli: Cli, root: Path) -> None:
    result = cli("gc", "--root", str(root), "--keep-checkpoints", "-1", "--json")
    assert result.code == 2 and result.json["status"] == "error"


def test_durations() -> None:
    assert [parse_duration(v) for v in ("0s", "30s", "15m", "12h", "7d", "2w")] == [
        0,
        30,
        900,
        43200,
        604800,
        1209600,
    ]


# -- --keep-checkpoints -------------------------------------------------------------------


def session_with_artifacts(root: Path, session_id: str, state: str) -> tuple[SessionDir, dict[str, str]]:
    """packs 1 [named], 2 [unnamed], 3 [unnamed, named]; loose: one named, one not."""
    store = Store(Paths(root))
    session = store.create_session(
        {"job": {"name": "gc-test"}}, {"model": {}}, head_for=initial_head, session_id=session_id
    )
    artifacts = session.artifact_store()
    small = artifacts.pack_writer(pack_bytes=64)  # every frame starts a new pack
    named_1, _ = small.add(b"named output one " * 8)
    unnamed_2, _ = small.add(b"nobody names this " * 8)
    unnamed_3, _ = small.add(b"nobody names this either " * 8)
    small.sync()
    small.close()
    large = artifacts.pack_writer()  # appends to pack 3
    named_3, location = large.add(b"named output three " * 8)
    assert location.pack == "00000003.pack"
    large.sync()
    large.close()
    loose_named = artifacts.put_loose(b"a loose artifact a record names")
    loose_unnamed = artifacts.put_loose(b"a loose artifact nobody names")
    results = [
        {"tool_call_id": "call-1", "output": {"stdout_artifact_id": named_1, "stdout_truncated": True}},
        {"tool_call_id": "call-2", "output": {"artifact_id": named_3}},
        {"tool_call_id": "call-3", "output": {"nested": [{"artifact_id": loose_named}]}},
    ]
    with JournalWriter.open(session.journal, session_id) as journal:
        journal.append("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run started"})
        for data in results:
            journal.append("tool.result", data)
        if state in ENDING:
            journal.append(ENDING[state], {})
        else:
            journal.append("session.state_change", {"from": "ACTIVE", "to": state, "reason": "test"})
    write_head(session.path, fold(session_id, scan(session.journal, session_id).records))
    return session, {"unnamed_2": unnamed_2, "unnamed_3": unnamed_3, "loose_unnamed": loose_unnamed}


def test_keep_checkpoints_drops_only_what_no_record_names(
    cli: Cli, root: Path, held_lock: Callable[[Path], subprocess.Popen[str]]
) -> None:
    finished, names = session_with_artifacts(root, "done-1", "COMPLETED")
    paused, _ = session_with_artifacts(root, "paused-1", "PAUSED")
    held, _ = session_with_artifacts(root, "held-1", "COMPLETED")
    others = {"paused": paused, "held": held}
    untouched = {name: snapshot(s.path / "artifacts") for name, s in others.items()}
    held_lock(held.path)
    pack_2 = finished.artifacts / "packs" / "00000002.pack"
    loose = finished.artifacts / "objects" / names["loose_unnamed"]
    expected = pack_2.stat().st_size + loose.stat().st_size
    doc = gc(cli, root, "--keep-checkpoints", "2")
    assert sorted((s["kind"], s["path"]) for s in doc["swept"]) == [
        ("artifact", f"sessions/done-1/artifacts/objects/{names['loose_unnamed']}"),
        ("pack", "sessions/done-1/artifacts/packs/00000002.pack"),
    ]
    assert doc["reclaimed_bytes"] == expected
    assert sorted(p.name for p in (finished.artifacts / "packs").iterdir()) == [
        "00000001.pack",
        "00000003.pack",  # holds an unnamed frame, but also a named one: kept whole
    ]
    assert any("every checkpoint is kept" in note for note in doc["notes"])
    assert [(s["session_id"], s["reason"]) for s in doc["skipped"]] == [("held-1", "locked")]
    assert {name: snapshot(s.path / "artifacts") for name, s in others.items()} == untouched
    verify = cli("inspect", "done-1", "--verify", "--root", str(root), "--json")
    assert verify.code == 0 and verify.json["verdict"] == "intact", verify.stdout
    assert verify.json["artifacts"]["missing"] == []
    human = cli("gc", "--root", str(root), "--keep-checkpoints", "2")
    assert human.code == 0 and "checkpoints live in their journal records" in human.stdout


# -- start-up ------------------------------------------------------------------------------


def test_gc_json_never_loads_rich(root: Path, env: dict[str, str]) -> None:
    make_session(root, "old-1")
    code = (
        "import sys\n"
        "from handshake_cli.cli.app import main\n"
        f"try:\n    main(['gc', '--root', {str(root)!r}, '--older-than', '0s', '--json'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'pydantic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    lines = out.stdout.strip().splitlines()
    assert json.loads("\n".join(lines[:-1]))["status"] == "ok"
    assert lines[-1] == "[]"
