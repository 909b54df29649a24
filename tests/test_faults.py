"""Fault injection at every I/O call site, the SQLite way, and the defects it found (issue 11,
defect 8: I/O errors outside journal appends were reported as bugs).

Each command (run, recover, checkpoint, gc, export, import) runs as a real process with
`HANDSHAKE_FAULT` set (handshake_cli/faults.py): the Nth call of one syscall made by
handshake's own I/O (journal, artifacts, head, lock, store, gc, bundle, recovery) fails with
ENOSPC or EIO, or writes short; N = 1, 2, ... until the command completes with nothing
injected. tests/support/faults_harness.py holds the checks each case must pass: exit 74 (or the
clean exit code) naming the file and cause, never 1 or a traceback, a failed fsync never
retried, no damage in the middle of a journal, and `recover`, once the fault is gone,
ending the session with the crash-free thread and the non-idempotent effect exactly once.

The default run injects a sample of the faults (`test_fault_sample`); `pytest -m slow`
sweeps every N of every syscall and kind (`test_fault_sweep`) and prints the figures.
"""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults_harness import (
    ENVIRONMENT,
    KINDS,
    Lab,
    Outcome,
    Tally,
    check_no_append_after_failed_sync,
    check_outcome,
    finish,
    sweep,
)

SID = "s"


# -- the lab: a reference run and the sessions each command starts from --------------------


@dataclass
class World:
    lab: Lab
    reference: list[dict[str, Any]]
    counts: dict[str, dict[str, int]]  # command -> syscall -> calls made by a fault-free run


def _interrupted(lab: Lab) -> None:
    """The session SID crashed after notify ran and before its result was journaled, with a
    torn record at the journal's end: recovery quarantines the tail and asks the probe."""
    assert lab.run(SID, crash_at="before_result:2").code == -signal.SIGKILL
    segment = sorted((lab.session_dir(SID) / "journal").iterdir())[-1]
    data = segment.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    with segment.open("ab") as fh:
        fh.write(data[last : last + (len(data) - last) // 2])


def _aged(path: Path) -> None:
    old = time.time() - 7200
    os.utime(path, (old, old))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    lab = Lab(tmp_path_factory.mktemp("faults"))
    assert lab.run(SID).code == 0
    reference = lab.journal_state(SID)[1]
    # recover and export and import start from the interrupted session.
    lab.restore(None)
    _interrupted(lab)
    lab.save("interrupted")
    bundle = lab.base / "bundle.tgz"
    assert lab.handshake("export", SID, "-o", str(bundle)).code == 0
    # checkpoint: a session interrupted at a boundary.
    lab.restore(None)
    assert lab.run(SID, crash_at="after_checkpoint:2").code == -signal.SIGKILL
    lab.save("stopped")
    # gc: two finished sessions, the interrupted one, and debris of every kind.
    lab.restore("interrupted")
    for other in ("done-1", "done-2"):
        assert lab.run(other).code == 0
    session = lab.session_dir(SID)
    (session / ".tmp-head.json.0000").write_bytes(b"{")
    (session / "requests").mkdir()
    (session / "requests" / "abc123.json").write_text('{"reason": null}')
    (lab.root / "staging" / "crashed.0000" / "journal").mkdir(parents=True)
    _aged(session / ".tmp-head.json.0000")
    _aged(session / "requests" / "abc123.json")
    _aged(lab.root / "staging" / "crashed.0000")
    lab.save("finished")
    # import: an empty root.
    lab.restore("interrupted")
    shutil.rmtree(lab.root)
    lab.root.mkdir()
    lab.save("empty")
    world = World(lab, reference, {})
    for name, command in COMMANDS.items():
        prepare(world, name)
        outcome = command.invoke(world, "write:999999:EIO")  # the seam on, counting; no fault
        assert outcome.code == 0, outcome.describe()
        world.counts[name] = outcome.counts
    return world


# -- the commands, and what each must leave behind ---------------------------------------------


@dataclass
class Command:
    template: str | None
    invoke: Callable[[World, str | None], Outcome]
    after: Callable[[World, Outcome], None]


def _run(world: World, fault: str | None) -> Outcome:
    return world.lab.run(SID, fault=fault)


def _session_ends_as_crash_free(world: World, outcome: Outcome) -> None:
    lab = world.lab
    if not lab.session_dir(SID).exists():
        assert outcome.code == ENVIRONMENT, outcome.describe()  # nothing was created
        return
    check_no_append_after_failed_sync(outcome, lab.session_dir(SID) / "journal")
    finish(lab, SID, world.reference, outcome.describe())


def _recover(world: World, fault: str | None) -> Outcome:
    return world.lab.handshake("recover", SID, "--json", fault=fault)


def _checkpoint(world: World, fault: str | None) -> Outcome:
    return world.lab.handshake("checkpoint", SID, "--json", fault=fault)


def _gc(world: World, fault: str | None) -> Outcome:
    return world.lab.handshake("gc", "--older-than", "0s", "--json", fault=fault)


def _gc_after(world: World, outcome: Outcome) -> None:
    """Each finished session is whole in sessions/ or gone; the unfinished one is untouched;
    a gc without the fault then finishes the job."""
    lab = world.lab
    context = outcome.describe()
    for other in ("done-1", "done-2"):
        if lab.session_dir(other).exists():
            assert lab.verdict(other) == "intact", context
    state, _messages, damage = lab.journal_state(SID)
    assert damage == "torn_tail" and state == "ACTIVE", context
    again = lab.handshake("gc", "--older-than", "0s", "--json")
    assert again.code == 0, again.describe()
    assert sorted(p.name for p in (lab.root / "sessions").iterdir()) == [SID], context
    trash = lab.root / "trash"
    assert not trash.exists() or not list(trash.iterdir()), context
    journal = lab.session_dir(SID) / "journal"
    assert lab.tree_digest(journal) == lab.tree_digest(
        lab.base / "templates" / "finished" / "root" / "sessions" / SID / "journal"
    ), context


def _export(world: World, fault: str | None) -> Outcome:
    return world.lab.handshake(
        "export", SID, "-o", str(world.lab.base / "out" / "b.tgz"), "--json", fault=fault
    )


def _export_after(world: World, outcome: Outcome) -> None:
    """A failed export leaves no bundle and no temp file, and the session as it was."""
    lab = world.lab
    out = lab.base / "out"
    names = sorted(p.name for p in out.iterdir())
    context = outcome.describe()
    if outcome.code == ENVIRONMENT:
        assert names == [] or names == ["b.tgz"], (names, context)  # only a failed dir fsync leaves it
    else:
        assert names == ["b.tgz"], (names, context)
    if "b.tgz" in names:
        from handshake_cli.maintenance.bundle import import_bundle
        from handshake_cli.paths import Paths
        from handshake_cli.storage.filesystem import FilesystemStore

        scratch = lab.base / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        report = import_bundle(FilesystemStore(Paths(scratch)), out / "b.tgz")
        assert report.verdict in ("intact", "repairable"), context
        shutil.rmtree(scratch)


def _import(world: World, fault: str | None) -> Outcome:
    return world.lab.handshake("import", str(world.lab.base / "bundle.tgz"), "--json", fault=fault)


def _import_after(world: World, outcome: Outcome) -> None:
    """Either the whole session landed or none of it; importing again then recovers it."""
    lab = world.lab
    if not lab.session_dir(SID).exists():
        again = lab.handshake("import", str(lab.base / "bundle.tgz"), "--json")
        assert again.code == 0, again.describe()
    _session_ends_as_crash_free(world, outcome)


COMMANDS: dict[str, Command] = {
    "run": Command(None, _run, _session_ends_as_crash_free),
    "recover": Command("interrupted", _recover, _session_ends_as_crash_free),
    "checkpoint": Command("stopped", _checkpoint, _session_ends_as_crash_free),
    "gc": Command("finished", _gc, _gc_after),
    "export": Command("interrupted", _export, _export_after),
    "import": Command("empty", _import, _import_after),
}


def prepare(world: World, name: str) -> None:
    world.lab.restore(COMMANDS[name].template)
    out = world.lab.base / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()


def run_case(world: World, name: str, fault: str, tally: Tally) -> Outcome:
    command = COMMANDS[name]
    lab = world.lab
    prepare(world, name)
    before = lab.tree_digest(lab.session_dir(SID)) if name == "export" else None
    outcome = command.invoke(world, fault)
    check_outcome(outcome)
    if before is not None:
        assert lab.tree_digest(lab.session_dir(SID)) == before, outcome.describe()
    command.after(world, outcome)
    tally.add(name, outcome)
    return outcome


# The syscalls the CI sample injects into first: the durability rules before the rest.
PRIORITY = ("fdatasync", "fsync", "write", "replace", "rename", "mkdir", "open", "read", "unlink", "pwrite")


def sample(counts: dict[str, int], rng: random.Random, size: int = 3) -> Iterator[str]:
    """`size` faults: the first syscalls of PRIORITY the command makes, each at a random N
    (the first call, the last, or any) with a random kind."""
    calls = [call for call in PRIORITY if counts.get(call)][:size]
    for call in calls:
        n = rng.choice([1, counts[call], rng.randint(1, counts[call])])
        yield f"{call}:{n}:{rng.choice(KINDS[call])}"


# -- the suites ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COMMANDS))
def test_fault_sample(world: World, name: str) -> None:
    tally = Tally()
    rng = random.Random(f"faults-{name}")
    faults = list(sample(world.counts[name], rng))
    for fault in faults:
        run_case(world, name, fault, tally)
    assert sum(tally.injected.values()) >= len(faults) * 0.8, tally.summary()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_fault_sweep(world: World, name: str) -> None:
    tally = Tally()
    cases = 0
    every = int(os.environ.get("HANDSHAKE_FAULT_EVERY", "1"))  # a stride, for a quicker pass
    for call in sorted(world.counts[name]):
        for kind in KINDS.get(call, ()):
            cases += len(sweep(lambda fault: run_case(world, name, fault, tally), call, kind, every=every))
    summary = tally.summary()
    report = Path(os.environ.get("HANDSHAKE_FAULT_REPORT", world.lab.base / "report")) / f"{name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        json.dumps(
            {"command": name, "cases": cases, "every": every, "calls": world.counts[name], **summary},
            indent=2,
        )
    )
    print(json.dumps({"command": name, "cases": cases, **summary}))
    assert summary["total"] > 0


ARTIFACT_FAULTS = [
    ("mkdir", "ENOSPC"),
    ("open", "ENOSPC"),
    ("write", "EIO"),
    ("write", "short"),
    ("fdatasync", "EIO"),
    ("fsync", "EIO"),
]


@pytest.mark.parametrize(
    ("name", "fault"),
    [("run", "fdatasync:1:EIO@packs"), ("run", "write:1:EIO@packs"), ("recover", "write:1:short@packs")],
)
def test_a_fault_in_the_artifact_store(world: World, name: str, fault: str) -> None:
    """The read tool's output goes to a pack: a failed pack sync or a short frame write stops
    the writer before the result naming it is written."""
    outcome = run_case(world, name, fault, Tally())
    assert outcome.injected and outcome.code == ENVIRONMENT, outcome.describe()
    assert "packs/" in json.loads(outcome.stdout)["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["run", "recover"])
def test_fault_sweep_of_the_artifact_store(world: World, name: str) -> None:
    """Every call the pack writer makes, swept (the general sweep reaches them too, among
    hundreds of others)."""
    tally = Tally()
    for call, kind in ARTIFACT_FAULTS:
        sweep(lambda fault: run_case(world, name, fault, tally), call, kind, within="artifacts")
    report = (
        Path(os.environ.get("HANDSHAKE_FAULT_REPORT", world.lab.base / "report")) / f"{name}-artifacts.json"
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"command": f"{name} (artifacts)", **tally.summary()}, indent=2))
    print(json.dumps({"command": f"{name} (artifacts)", **tally.summary()}))
    assert any("handshake_cli.storage.artifacts" in site for site in tally.sites), tally.summary()


# -- defect 8, one test per place that called a full disk a bug -------------------------------


def _error(outcome: Outcome) -> dict[str, Any]:
    assert outcome.code == ENVIRONMENT, outcome.describe()
    error: dict[str, Any] = json.loads(outcome.stdout)["error"]
    assert error["code"] in ("environment", "durability"), outcome.describe()
    return error


def test_a_head_json_that_cannot_be_refreshed_never_stops_a_run(world: World) -> None:
    lab = world.lab
    lab.restore(None)
    outcome = lab.run(SID, fault="replace:1+:ENOSPC@head.json")
    assert outcome.injected and outcome.code == 0, outcome.describe()
    assert json.loads(outcome.stdout)["state"] == "COMPLETED"
    assert lab.journal_state(SID)[1] == world.reference
    assert len(lab.notifications()) == 1
    # head.json lags the journal: inspect folds, --verify calls it repairable, recover rewrites it.
    assert lab.verdict(SID) == "repairable"
    assert lab.handshake("recover", SID, "--json").code == 0
    assert lab.verdict(SID) == "intact"


@pytest.mark.parametrize(
    ("fault", "names"),
    [
        ("write:1:ENOSPC@session.toml", "session.toml"),
        ("fsync:1:EIO@session.toml", "session.toml"),
        ("mkdir:1:ENOSPC", "root"),
        ("rename:1:EIO@staging", "sessions/s"),
        ("replace:1:ENOSPC@owner.json", "owner.json"),
        ("open:1:EIO@lock", "lock"),
    ],
)
def test_a_full_disk_when_a_run_starts_is_exit_74_naming_the_file(
    world: World, fault: str, names: str
) -> None:
    lab = world.lab
    lab.restore(None)
    error = _error(lab.run(SID, fault=fault))
    assert names in error["message"] and error["details"]["path"], error
    assert error["details"]["errno"] in ("ENOSPC", "EIO"), error
    if lab.session_dir(SID).exists():  # created, then stopped before its first step: resumable
        assert lab.handshake("recover", SID, "--json").code == 0
        assert lab.journal_state(SID)[1] == world.reference


def test_a_full_disk_at_quarantine_is_exit_74_and_leaves_the_torn_tail_for_later(world: World) -> None:
    lab = world.lab
    lab.restore("interrupted")
    journal = lab.session_dir(SID) / "journal"
    before = lab.tree_digest(journal)
    error = _error(lab.handshake("recover", SID, "--json", fault="write:1:ENOSPC@quarantine"))
    assert "quarantine/" in error["message"] and "No space left on device" in error["message"], error
    assert lab.tree_digest(journal) == before  # nothing cut, nothing appended
    finish(lab, SID, world.reference, "after the quarantine fault")
    assert len(list((lab.session_dir(SID) / "quarantine").iterdir())) == 1


def test_a_full_disk_when_asking_a_running_session_for_a_checkpoint_is_exit_74(
    world: World, tmp_path: Path
) -> None:
    slow = Lab(tmp_path)
    # 2,000 words 50 ms apart: the run streams for 100 s, far longer than the asking takes,
    # and stops within a word of SIGTERM.
    script = slow.job.parent / "script.toml"
    script.write_text(script.read_text().replace("Writing the notes down first.", "word " * 2000, 1))
    slow.job.write_text(slow.job.read_text().replace("chunk_delay_ms = 0", "chunk_delay_ms = 50"))
    args = ["run", str(slow.job), "--session-id", SID, "--workspace", str(slow.workspace)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "handshake_cli", *args, "--root", str(slow.root)],
        env=slow.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        owner = slow.session_dir(SID) / "owner.json"
        deadline = time.monotonic() + 60
        while not owner.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        for fault in ("mkdir:1:ENOSPC@requests", "replace:1:ENOSPC@requests"):
            error = _error(slow.handshake("checkpoint", SID, "--json", fault=fault))
            assert "requests" in error["message"], error
        assert proc.poll() is None  # the run goes on
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 75  # stopped at its next boundary, as ever


def test_a_full_disk_during_an_import_s_extraction_is_exit_74(world: World) -> None:
    """A real one: the import process may not write a file over 2 KiB (RLIMIT_FSIZE), so the
    kernel refuses the journal segment's extraction with EFBIG, mid-file."""
    lab = world.lab
    lab.restore("empty")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "handshake_cli",
            "import",
            str(lab.base / "bundle.tgz"),
            "--json",
            "--root",
            str(lab.root),
        ],
        env=lab.env,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
        check=False,
    )
    outcome = Outcome(["import", "--json"], "RLIMIT_FSIZE", proc.returncode, proc.stdout, proc.stderr, [])
    error = _error(outcome)
    assert "staging" in error["message"] and error["details"]["errno"] == "EFBIG", error
    assert not lab.session_dir(SID).exists()
    _import_after(world, outcome)


def test_a_full_disk_during_an_import_s_directories_is_exit_74(world: World) -> None:
    lab = world.lab
    lab.restore("empty")
    error = _error(lab.handshake("import", str(lab.base / "bundle.tgz"), "--json", fault="mkdir:4:ENOSPC"))
    assert "No space left on device" in error["message"], error
    assert not lab.session_dir(SID).exists()


def test_a_failed_rename_into_the_trash_stops_gc_with_74(world: World) -> None:
    lab = world.lab
    lab.restore("finished")
    error = _error(lab.handshake("gc", "--older-than", "0s", "--json", fault="rename:1:EIO@sessions"))
    assert "trash" in error["message"] and "sessions/done-1" in error["message"], error
    _gc_after(world, Outcome(["gc"], None, ENVIRONMENT, "", "", []))


def test_a_full_disk_when_gc_locks_a_session_is_74_and_the_session_stays(world: World) -> None:
    """The lock file cannot be opened (ENOSPC): the machine failing, not damage (it was exit 5,
    "damaged", found by the fault sweep). gc keeps that session and names the cause."""
    lab = world.lab
    lab.restore("finished")
    outcome = lab.handshake("gc", "--older-than", "0s", "--json", fault="open:1:ENOSPC@done-1/lock")
    assert outcome.code == ENVIRONMENT, outcome.describe()
    skipped = {s["session_id"]: s for s in json.loads(outcome.stdout)["skipped"]}
    error = skipped["done-1"]["error"]
    assert error["code"] == "environment" and error["exit_code"] == ENVIRONMENT, error
    assert "done-1/lock" in error["message"] and "ENOSPC" in error["message"], error
    assert lab.session_dir("done-1").is_dir()


def test_an_io_error_reading_a_journal_names_the_segment(world: World) -> None:
    """An EIO while gc folds a session's journal: that session is kept and its error names
    the segment (it said only "Input/output error"; found by the fault sweep)."""
    lab = world.lab
    lab.restore("finished")
    outcome = lab.handshake("gc", "--older-than", "0s", "--json", fault="read:1:EIO@sessions/s/journal/")
    assert outcome.code == ENVIRONMENT, outcome.describe()
    error = {s["session_id"]: s for s in json.loads(outcome.stdout)["skipped"]}["s"]["error"]
    assert error["code"] == "environment", error
    assert "sessions/s/journal/00000001.jsonl" in error["message"] and "EIO" in error["message"], error
    assert lab.session_dir("s").is_dir()


def test_a_stray_environment_oserror_is_74_not_a_bug(capsys: pytest.CaptureFixture[str]) -> None:
    """The safety net: an OSError no call site turned into an EnvironmentFailure."""
    from handshake_cli.cli.output import run_command

    def body() -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", "/some/file")

    assert run_command("inspect", True, body) == ENVIRONMENT
    error = json.loads(capsys.readouterr().out)["error"]
    assert (
        error["code"] == "environment" and "/some/file" in error["message"] and "ENOSPC" in error["message"]
    )


def test_a_failed_fsync_ends_recover_all_there(world: World) -> None:
    """A failed fsync is fatal to the writing process: `recover --all` recovers no further
    session after it (before, it went on to the next one, fsyncing on the failing disk)."""
    lab = world.lab
    lab.restore("interrupted")
    assert lab.run("t", crash_at="before_result:2").code == -signal.SIGKILL
    outcome = lab.handshake("recover", "--all", "--json", fault="fdatasync:1+:EIO")
    assert outcome.code == ENVIRONMENT, outcome.describe()
    rows = json.loads(outcome.stdout)["sessions"]
    assert [(row["session_id"], row["reason"]) for row in rows] == [(SID, "durability")], rows
    assert [e["site"].split(":")[0] for e in outcome.injected] == ["handshake_cli.storage.journal.writer"]
