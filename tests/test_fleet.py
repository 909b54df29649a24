"""Beyond one machine: the whole command line on a PostgreSQL root, run by "machines" of a
fleet (tests/support/fleet.py: real processes, each in a UTS namespace with a hostname of its
own and workspaces of its own) sharing one database of the test run's server.

Every command on the root, named by `--root` and by `HANDSHAKE_HOME`, with the filesystem's
exit codes and JSON; export and import between the stores (the migration path); runs
SIGKILLed on one machine and recovered on another (the crash-equivalence property); a second
writer told who holds the lease; the server stopped hard and a backend terminated under a
writer; bad roots; and what happens to workspaces.

The default suite SIGKILLs 10 times (runs and recoveries); `pytest -m slow` 100 times more.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handshake_cli.errors import ExitCode
from handshake_cli.storage.postgres.store import REQUEST_POLL
from tests.support.crashkit import drive_to_the_end, kill_after, make_gated_job, wait_for
from tests.support.fleet import (
    TIMEOUT,
    FleetWorld,
    Machine,
    assert_fleet_equivalent,
    machines_unavailable,
)
from tests.support.postgres import PASSWORD, PostgresServer, fresh_database


@pytest.fixture
def fleet(tmp_path: Path, postgres_url: str) -> FleetWorld:
    reason = machines_unavailable()
    if reason:
        pytest.skip(reason)
    return FleetWorld(tmp_path, postgres_url, delay_ms=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> dict[str, Any]:
    """A crash-free run on machine A: its thread, and the median time of three runs."""
    reason = machines_unavailable()
    if reason:
        pytest.skip(reason)
    url = postgres_server.create_database()
    try:
        fleet = FleetWorld(tmp_path_factory.mktemp("fleet-reference"), url, delay_ms=1)
        durations, streaming = [], []
        for attempt in range(3):
            started = time.monotonic()
            proc = fleet.run(f"reference-{attempt}")
            assert proc.stdout is not None
            proc.stdout.read(1)  # the session exists and streams
            first = time.monotonic()
            _, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
            durations.append(time.monotonic() - started)
            streaming.append(time.monotonic() - first)
        info = fleet.inspect("reference-0")
        assert info["state"] == "COMPLETED"
        return {
            "messages": info["messages"],
            "seconds": sorted(durations)[1],
            "streaming": sorted(streaming)[1],
        }
    finally:
        postgres_server.drop_database(url)


def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the store's tables (none when they are not made yet), to show nothing changed."""
    with psycopg.connect(url) as conn:
        made = conn.execute("SELECT to_regclass('handshake.sessions')").fetchone()
        if made is None or made[0] is None:
            return {}
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'handshake' ORDER BY 1"
            )
        ]
        return {t: conn.execute(f"SELECT * FROM handshake.{t} ORDER BY 1, 2").fetchall() for t in tables}


def bundle(path: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """A bundle's manifest file list and its members' bytes (what makes two bundles the same;
    the manifest's `created_at` is when it was made)."""
    members: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    manifest = json.loads(members.pop("manifest.json"))
    return manifest["files"], members


def test_every_command_on_a_postgresql_root(fleet: FleetWorld, tmp_path: Path) -> None:
    """A runs with --root URL, B works through HANDSHAKE_HOME: run, inspect (listing, SESSION,
    --verify, --events), checkpoint, recover (dry run, --all), export, import into a
    directory and into another database, and both stores' bundles the same."""
    a, b = fleet.a, fleet.b
    done = a.handshake(
        "run", str(fleet.job), "--session-id", "e2e", "--workspace", str(a.workspace("e2e")), "--json"
    )
    assert done.code == 0, done.stderr
    assert done.json["state"] == "COMPLETED" and done.json["session_id"] == "e2e"
    assert PASSWORD not in done.stdout + done.stderr

    listing = b.handshake("inspect", "--json")
    assert listing.code == 0, listing.stderr
    assert [(s["session_id"], s["state"]) for s in listing.json["sessions"]] == [("e2e", "COMPLETED")]
    assert listing.json["root"] == fleet.url.replace(f":{PASSWORD}", "")
    human = b.handshake("inspect")
    assert "e2e" in human.stdout and "COMPLETED" in human.stdout and PASSWORD not in human.stdout

    described = b.handshake("inspect", "e2e", "--json").json
    assert described["state"] == "COMPLETED" and described["lock_holder"] is None
    assert [c["state"] for c in described["tool_calls"]] == ["done"] * 4
    verified = b.handshake("inspect", "e2e", "--verify", "--json")
    assert verified.code == 0 and verified.json["verdict"] == "intact", verified.stdout
    events = b.handshake("inspect", "e2e", "--events", "--json")
    types = [e["type"] for e in events.json["events"]]
    assert types[0] == "session.created" and types[-1] == "session.completed"
    assert types.count("tool.intent") == types.count("tool.result") == 4

    checkpoint = b.handshake("checkpoint", "e2e", "--reason", "from machine B", "--json")
    assert checkpoint.code == 0, checkpoint.stderr
    assert (
        b.handshake("inspect", "e2e", "--json").json["checkpoint_count"] == described["checkpoint_count"] + 1
    )

    # A run killed on A (its intent for remember durable), recovered on B.
    crashed = a.handshake(
        "run",
        str(fleet.job),
        "--session-id",
        "crashed",
        "--workspace",
        str(a.workspace("crashed")),
        crash_at="after_intent:2",
    )
    assert crashed.code == -9
    rows_before = [
        s for s in b.handshake("inspect", "--json").json["sessions"] if s["session_id"] == "crashed"
    ]
    assert rows_before[0]["state"] == "INTERRUPTED"
    plan = b.handshake("recover", "crashed", "--dry-run", "--json")
    assert plan.code == 0 and plan.json["action"] == "resume"
    assert [c["tool"] for c in plan.json["in_doubt"]] == ["remember"]
    recovered = b.handshake("recover", "--all", "--workspace", str(b.workspace("crashed")), "--json")
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    assert [(r["session_id"], r["state"]) for r in recovered.json["sessions"]] == [("crashed", "COMPLETED")]
    assert b.handshake("recover", "--all", "--json").json["sessions"] == []

    # Export from the database, import into a directory, export from there: the same bundle;
    # then into another database (the migration path, both ways).
    from_db, from_dir = tmp_path / "from-db.tar.gz", tmp_path / "from-dir.tar.gz"
    assert b.handshake("export", "e2e", "-o", str(from_db)).code == 0
    directory = tmp_path / "fs-root"
    landed = Machine("fleet-b", tmp_path, str(directory)).handshake("import", str(from_db), "--json")
    assert landed.code == 0, landed.stderr
    on_disk = Machine("fleet-b", tmp_path, str(directory))
    assert on_disk.handshake("inspect", "e2e", "--verify", "--json").json["verdict"] == "intact"
    assert on_disk.handshake("export", "e2e", "-o", str(from_dir)).code == 0
    assert bundle(from_db) == bundle(from_dir)
    other = Machine("fleet-c", tmp_path, fresh_database())
    assert other.handshake("import", str(from_dir)).code == 0
    assert other.handshake("inspect", "e2e", "--json").json == b.handshake("inspect", "e2e", "--json").json
    twice = other.handshake("import", str(from_dir), "--json")
    assert (twice.code, twice.json["error"]["code"]) == (ExitCode.USAGE, "session_exists"), twice.stdout


# What differs between two runs of one job anywhere: times, where the root and workspace are,
# checkpoint ids (their bodies hold times), and seqs and record counts (chunks are batched by
# time as they stream).
VARIES = {
    "created_at",
    "updated_at",
    "last_checkpoint_at",
    "checkpoint_artifact_id",
    "workspace",
    "root",
    "records",
    *("pid", "started_at", "ended_at", "ts", "seq"),  # the history's processes (inspect's `history`)
}


def normalized(value: Any) -> Any:
    """`inspect SESSION --json` without what varies between two runs of one job."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if k not in VARIES and not k.endswith("_seq")}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def test_a_run_reads_the_same_on_both_stores_and_errors_exit_the_same(
    fleet: FleetWorld, tmp_path: Path
) -> None:
    on_db = fleet.a
    on_dir = Machine("fleet-a", tmp_path / "fs", str(tmp_path / "fs-root"))
    for machine in (on_db, on_dir):
        done = machine.handshake(
            "run",
            str(fleet.job),
            "--session-id",
            "same",
            "--workspace",
            str(machine.workspace("same")),
            "--json",
        )
        assert done.code == 0, done.stderr
    db_info = on_db.handshake("inspect", "same", "--json").json
    dir_info = on_dir.handshake("inspect", "same", "--json").json
    assert normalized(db_info) == normalized(dir_info)
    for args in (
        ["inspect", "nope"],
        ["recover", "nope"],
        ["checkpoint", "nope"],
        ["export", "nope", "-o", str(tmp_path / "x.tar.gz")],
        ["run", str(fleet.job), "--session-id", "same"],
        ["recover"],
    ):
        db, fs = on_db.handshake(*args, "--json"), on_dir.handshake(*args, "--json")
        assert (db.code, db.json["error"]["code"]) == (fs.code, fs.json["error"]["code"]), args
        assert "Traceback" not in db.stderr


# -- two machines: crashes on A, recovery on B -------------------------------------------------


def kill_at_random(proc: subprocess.Popen[bytes], rng: random.Random, reference: dict[str, Any]) -> bool:
    """SIGKILL a run at a random instant: a quarter of them anywhere in its life, start-up
    included (more than half of it on a PostgreSQL root: the interpreter, the driver, the
    connection), the others once it streams (its session exists), anywhere in the rest."""
    if rng.random() < 0.25:
        return kill_after(proc, rng.uniform(0, reference["seconds"]))
    assert proc.stdout is not None
    proc.stdout.read(1)  # its first output (or its end)
    return kill_after(proc, rng.uniform(0, reference["streaming"]))


def random_crashes(fleet: FleetWorld, reference: dict[str, Any], kills: int, seed: int) -> None:
    """Sessions until `kills` SIGKILLs have landed: each run on A and killed at a random
    instant (or not, when it ended first), then recovered on B with `recover --all` (itself
    killed now and then) until it is done; each must end as the crash-free run did."""
    rng = random.Random(seed)
    sessions = killed_runs = mid_session = killed_recoveries = 0
    while killed_runs + killed_recoveries < kills:
        session_id = f"f{seed}-{sessions}"
        sessions += 1
        proc = fleet.run(session_id)
        killed = kill_at_random(proc, rng, reference)
        killed_runs += killed
        mid_session += killed and fleet.exists(session_id)
        history = ["run killed" if killed else f"run exit {proc.returncode}"]
        history += drive_to_the_end(fleet, session_id, rng, kill_chance=0.3, max_delay=reference["seconds"])
        killed_recoveries += history.count("recovery killed")
        assert_fleet_equivalent(fleet, session_id, reference, history)
    print(
        f"{sessions} sessions: {killed_runs} runs killed, {mid_session} of them inside their session, "
        f"{killed_recoveries} recoveries killed"
    )
    assert mid_session >= sessions * 0.3, (sessions, killed_runs, mid_session)


def test_runs_killed_on_one_machine_end_as_a_crash_free_run_when_another_recovers(
    fleet: FleetWorld, reference: dict[str, Any]
) -> None:
    random_crashes(fleet, reference, kills=10, seed=16)


@pytest.mark.slow
def test_a_hundred_sigkills_on_one_machine_each_recovered_on_another(
    fleet: FleetWorld, reference: dict[str, Any]
) -> None:
    random_crashes(fleet, reference, kills=100, seed=1616)


def test_a_second_writer_on_another_machine_is_told_who_holds_the_lease(fleet: FleetWorld) -> None:
    job = make_gated_job(fleet.base / "gated")
    workspace = fleet.a.workspace("held")
    holder = fleet.a.start("run", str(job), "--session-id", "held", "--workspace", str(workspace))
    try:
        wait_for(workspace / "gate.reached", holder)  # A holds the lease, inside its first tool
        for args in (["recover", "held"], ["recover", "held", "--cancel"]):
            refused = fleet.b.handshake(*args, "--json")
            assert refused.code == ExitCode.LOCKED, refused.stdout + refused.stderr
            message = refused.json["error"]["message"]
            assert "fleet-a" in message and f"pid {holder.pid}" in message and "handshake run" in message
            assert PASSWORD not in refused.stdout + refused.stderr  # A typed it in its --root
        shown = fleet.b.handshake("inspect", "--json")
        assert PASSWORD not in shown.stdout and PASSWORD not in fleet.b.handshake("inspect", "held").stdout
        listing = shown.json["sessions"]
        assert (
            listing[0]["lock_holder"]["host"] == "fleet-a" and listing[0]["lock_holder"]["pid"] == holder.pid
        )
        assert fleet.b.handshake("recover", "--all", "--json").json["sessions"] == []  # a live lease
        (workspace / "gate.open").touch()
        _, err = holder.communicate(timeout=TIMEOUT)
        assert holder.returncode == 0, err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert fleet.b.handshake("inspect", "held", "--json").json["state"] == "COMPLETED"


def test_a_checkpoint_asked_for_on_another_machine_is_taken_by_the_running_session(fleet: FleetWorld) -> None:
    """No signal crosses machines: the writer on A finds B's request at a boundary by itself."""
    job = make_gated_job(fleet.base / "gated")
    workspace = fleet.a.workspace("asked")
    holder = fleet.a.start("run", str(job), "--session-id", "asked", "--workspace", str(workspace))
    asking: subprocess.Popen[str] | None = None
    try:
        wait_for(workspace / "gate.reached", holder)  # A looked for requests at its first boundary
        looked = time.monotonic()
        asking = fleet.b.start("checkpoint", "asked", "--reason", "asked from B", "--wait", "60", "--json")
        refused = wait_for_request(fleet.url, "asked", asking)
        assert refused is None, refused
        # A looks again at its first boundary once REQUEST_POLL has passed since its last look:
        # let that much pass inside the tool, so the boundary after it is one that looks.
        time.sleep(max(0.0, REQUEST_POLL - (time.monotonic() - looked)))
        (workspace / "gate.open").touch()
        answer, asked_err = asking.communicate(timeout=TIMEOUT)
        assert asking.returncode == 0, answer + asked_err
        taken = json.loads(answer)
        assert taken["running"] is True and taken["session_id"] == "asked"
        _, err = holder.communicate(timeout=TIMEOUT)
        assert holder.returncode == 0, err
    finally:
        for proc in (holder, asking):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    made = [e for e in events(fleet.b, "asked") if e["type"] == "checkpoint.created"]
    asked = [e for e in made if e["data"]["reason"] == "requested: asked from B"]
    assert len(asked) == 1 and asked[0]["data"]["checkpoint_id"] == taken["checkpoint_id"]
    assert fleet.b.handshake("inspect", "asked", "--json").json["state"] == "COMPLETED"


def test_a_checkpoint_asked_of_a_holder_on_another_machine_that_dies_is_taken_from_the_journal(
    fleet: FleetWorld,
) -> None:
    job = make_gated_job(fleet.base / "gated")
    workspace = fleet.a.workspace("died")
    holder = fleet.a.start("run", str(job), "--session-id", "died", "--workspace", str(workspace))
    asking: subprocess.Popen[str] | None = None
    try:
        wait_for(workspace / "gate.reached", holder)
        asking = fleet.b.start("checkpoint", "died", "--reason", "asked from B", "--wait", "60", "--json")
        assert wait_for_request(fleet.url, "died", asking) is None
        holder.kill()  # inside its tool: it never reaches a boundary, its lease goes with it
        holder.wait()
        answer, asked_err = asking.communicate(timeout=TIMEOUT)
        assert asking.returncode == 0, answer + asked_err
        taken = json.loads(answer)
        assert taken["running"] is False
    finally:
        for proc in (holder, asking):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    with psycopg.connect(fleet.url, autocommit=True) as conn:  # the asker took its request back
        assert conn.execute("SELECT count(*) FROM handshake.requests").fetchone() == (0,)


def wait_for_request(url: str, session_id: str, asker: subprocess.Popen[str]) -> str | None:
    """Wait until `asker` (`handshake checkpoint`) has stored its request: None then, or what
    it printed if it ended first."""
    with psycopg.connect(url, autocommit=True) as conn:
        query = "SELECT 1 FROM handshake.requests WHERE session_id = %s"
        while conn.execute(query, (session_id,)).fetchone() is None:
            if asker.poll() is not None:
                out, err = asker.communicate()
                return out + err
            conn.execute("SELECT pg_sleep(0.01)")
    return None


# -- the database under a writer -----------------------------------------------------------------


def events(machine: Machine, session_id: str) -> list[dict[str, Any]]:
    done = machine.handshake("inspect", session_id, "--events", "--json")
    assert done.code == 0, done.stdout + done.stderr
    return list(done.json["events"])


def test_the_server_stopped_hard_mid_run_stops_the_writer_loses_nothing_acknowledged_and_recover_completes(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path, reference: dict[str, Any]
) -> None:
    slow = FleetWorld(tmp_path, postgres_url, delay_ms=30)  # streams for seconds after its second checkpoint
    shown = postgres_url.replace(f":{PASSWORD}", "")
    run = slow.a.start(
        "run", str(slow.job), "--session-id", "stopped", "--workspace", str(slow.a.workspace("stopped"))
    )
    assert run.stdout is not None
    printed: list[str] = []
    try:
        while not any("checkpoint ck-2" in line for line in printed):  # write_file's, acknowledged
            line = run.stdout.readline()
            assert line, f"the run ended first: {run.communicate()}"
            printed.append(line)
        postgres_server.stop_immediately()
        out, err = run.communicate(timeout=TIMEOUT)
    finally:
        if postgres_server.process is None:
            postgres_server.start()
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == ExitCode.ENVIRONMENT, err
    assert shown in err, err
    assert "Traceback" not in err and PASSWORD not in out + err
    acknowledged = [
        line.split()[1] for line in printed + out.splitlines() if line.strip().startswith("checkpoint ck-")
    ]
    journal = events(slow.b, "stopped")
    kept = [e["data"]["checkpoint_id"] for e in journal if e["type"] == "checkpoint.created"]
    assert acknowledged and kept[: len(acknowledged)] == acknowledged, (acknowledged, kept)
    assert [e["seq"] for e in journal] == list(range(1, len(journal) + 1))
    verified = slow.inspect("stopped", "--verify")
    # A stale head (a cache, written after the records) is what recovery rewrites; nothing else.
    assert verified["journal"]["damage"] is None and not verified["artifacts"]["problems"], verified
    assert verified["verdict"] in ("intact", "repairable"), verified
    history = drive_to_the_end(slow, "stopped", random.Random(0), kill_chance=0, max_delay=0)
    assert_fleet_equivalent(slow, "stopped", reference, history)


def lease_backend(url: str, session_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT backend_pid FROM handshake.leases WHERE session_id = %s", (session_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_writer_whose_connection_the_server_ends_writes_nothing_more_and_another_machine_takes_over(
    fleet: FleetWorld, postgres_server: PostgresServer
) -> None:
    job = make_gated_job(fleet.base / "gated")
    a_side, b_side = fleet.a.workspace("cut"), fleet.b.workspace("cut")
    writer = fleet.a.start("run", str(job), "--session-id", "cut", "--workspace", str(a_side))
    try:
        wait_for(a_side / "gate.reached", writer)  # A holds the lease, inside its first tool
        backend = lease_backend(fleet.url, "cut")
        postgres_server.terminate_backend(backend)
        postgres_server.wait_backend_gone(backend)
        # B takes over while A is still alive, waiting at its gate.
        (b_side / "gate.open").touch()
        taken = fleet.b.handshake("recover", "--all", "--workspace", str(b_side), "--json")
        assert taken.code == 0, taken.stdout + taken.stderr
        assert [(r["session_id"], r["state"]) for r in taken.json["sessions"]] == [("cut", "COMPLETED")]
        written = events(fleet.b, "cut")
        (a_side / "gate.open").touch()
        out, err = writer.communicate(timeout=TIMEOUT)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == ExitCode.ENVIRONMENT, out + err
    assert "lease" in err and "never reconnects" in err and "Traceback" not in err, err
    assert events(fleet.b, "cut") == written  # A appended nothing after it lost its lease
    assert (b_side / "passed.txt").exists() and not (a_side / "passed.txt").exists()
    assert fleet.inspect("cut", "--verify")["verdict"] == "intact"


# -- bad roots ----------------------------------------------------------------------------------


def test_bad_roots_are_refused_by_every_command_with_a_clear_message_and_nothing_changed(
    fleet: FleetWorld, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    a = fleet.a
    assert (
        a.handshake(
            "run", str(fleet.job), "--session-id", "kept", "--workspace", str(a.workspace("kept"))
        ).code
        == 0
    )
    database = fleet.url.rsplit("/", 1)[1]
    with socket_closed() as port:
        roots = [
            ("postgresql://postgres:s3cret@127.0.0.1:notaport/db", ExitCode.USAGE, "usage"),
            ("postgresql://postgres:s3cret@[::1/db", ExitCode.USAGE, "usage"),
            (postgres_server.url(database, password="s3cret"), ExitCode.USAGE, "usage"),
            (f"postgresql://postgres:s3cret@127.0.0.1:{port}/db", ExitCode.ENVIRONMENT, "environment"),
        ]
        before = rows(fleet.url)
        for root, code, error in roots:
            machine = Machine("fleet-a", tmp_path / "bad", root)
            for args in commands(fleet, machine)[:4]:  # run, the listing, a session, recover --all
                done = machine.handshake(*args, "--json")
                context = (root, args, done.stdout, done.stderr)
                assert (done.code, done.json["error"]["code"]) == (code, error), context
                assert "s3cret" not in done.stdout + done.stderr and "Traceback" not in done.stderr, context
        assert rows(fleet.url) == before
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        conn.execute("UPDATE handshake.schema_version SET version = version + 1")
    before = rows(fleet.url)
    for args in commands(fleet, a):
        done = a.handshake(*args, "--json")
        context = ("newer schema", args, done.stdout, done.stderr)
        assert (done.code, done.json["error"]["code"]) == (ExitCode.USAGE, "unsupported_format"), context
        assert "schema version 2" in done.json["error"]["message"] and "Traceback" not in done.stderr, context
    assert rows(fleet.url) == before


@contextmanager
def socket_closed() -> Iterator[int]:
    """A loopback port nothing listens on while the block runs (bound, never listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        yield int(taken.getsockname()[1])


def commands(fleet: FleetWorld, machine: Machine) -> list[list[str]]:
    """One of each command that opens the root."""
    workspace = machine.workspace("bad-root")
    return [
        ["run", str(fleet.job), "--session-id", "new", "--workspace", str(workspace)],
        ["inspect"],
        ["inspect", "kept", "--verify"],
        ["recover", "--all"],
        ["recover", "kept"],
        ["recover", "kept", "--dry-run"],
        ["checkpoint", "kept"],
        ["export", "kept", "-o", str(workspace / "kept.tar.gz")],
    ]


# -- workspaces ---------------------------------------------------------------------------------


def test_recovery_on_another_machine_runs_the_tools_in_its_workspace_and_not_what_the_journal_says_was_done(
    fleet: FleetWorld,
) -> None:
    a_side = fleet.a.workspace("moved")
    killed = fleet.a.handshake(
        "run",
        str(fleet.job),
        "--session-id",
        "moved",
        "--workspace",
        str(a_side),
        crash_at="after_checkpoint:3",
    )  # after write_file's result and its checkpoint, and remember's
    assert killed.code == -9 and (a_side / "notes.txt").exists()
    shutil.rmtree(a_side)  # machine A is gone, and its disk with it
    written = events(fleet.b, "moved")
    refused = fleet.b.handshake("recover", "moved", "--json")
    assert refused.code == ExitCode.USAGE, refused.stdout
    assert str(a_side) in refused.json["error"]["message"]
    assert refused.json["guidance"][-1].strip().startswith("handshake recover moved --workspace DIR")
    assert events(fleet.b, "moved") == written  # nothing written
    b_side = fleet.b.workspace("moved")
    done = fleet.b.handshake("recover", "moved", "--workspace", str(b_side), "--json")
    assert done.code == 0 and done.json["state_after"] == "COMPLETED", done.stdout + done.stderr
    assert not (b_side / "notes.txt").exists()  # written on A: the journal says so, it is not redone
    calls = {c["tool"]: c for c in fleet.inspect("moved")["tool_calls"]}
    assert calls["write_file"]["state"] == "done" and calls["notify"]["state"] == "done"
    started = [e["data"] for e in events(fleet.b, "moved") if e["type"] == "recovery.started"]
    assert [s.get("workspace") for s in started] == [str(b_side)]
    notified = (fleet.world / "moved" / "quickstart-output" / "notifications.log").read_text().splitlines()
    assert len(notified) == 1


# -- gc -----------------------------------------------------------------------------------------


def test_gc_on_a_postgresql_root_removes_finished_sessions_and_never_a_leased_or_unfinished_one(
    fleet: FleetWorld,
) -> None:
    a = fleet.a
    assert (
        a.handshake("run", str(fleet.job), "--session-id", "old", "--workspace", str(a.workspace("old"))).code
        == 0
    )
    stopped = ("run", str(fleet.job), "--session-id", "cut", "--workspace", str(a.workspace("cut")))
    assert a.handshake(*stopped, crash_at="after_intent:2").code == -9
    job = make_gated_job(fleet.base / "gated")
    workspace = a.workspace("held")
    holder = a.start("run", str(job), "--session-id", "held", "--workspace", str(workspace))
    try:
        wait_for(workspace / "gate.reached", holder)
        planned = fleet.b.handshake("gc", "--older-than", "0s", "--dry-run", "--json")
        assert planned.code == 0, planned.stdout
        assert [r["session_id"] for r in planned.json["removed"]] == ["old"]
        done = fleet.b.handshake("gc", "--older-than", "0s", "--include-unfinished", "--json")
        assert done.code == 0, done.stdout
        assert sorted(r["session_id"] for r in done.json["removed"]) == ["cut", "old"]
        assert [(s["session_id"], s["reason"]) for s in done.json["skipped"]] == [("held", "locked")]
        assert done.json["reclaimed_bytes"] > 0
        shown = fleet.b.handshake("inspect", "--json")
        assert PASSWORD not in shown.stdout and PASSWORD not in fleet.b.handshake("inspect", "held").stdout
        listing = shown.json["sessions"]
        assert [s["session_id"] for s in listing] == ["held"]
        (workspace / "gate.open").touch()
        _, err = holder.communicate(timeout=TIMEOUT)
        assert holder.returncode == 0, err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
