"""Output that cannot be written never abandons a session, and never turns an outcome into a bug.

Real processes with real descriptors: a pipe whose reader left (before anything was written,
or after reading a few bytes, as `| head -c 10` does), /dev/full as stdout (a full disk),
text no encoding can carry (a lone surrogate streamed by a model, a surrogate pair split
across two deltas), and stdout in ASCII. Runs are held at known points by a gate tool
(tests/data/tools/gate.py), never by timing. Each test checks what a user would: the exit code,
no traceback, and that the session's journal is complete and verifies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import tomli_w

from handshake_cli.cli import streams
from handshake_cli.paths import Paths
from handshake_cli.readers.describe import describe
from handshake_cli.readers.verify import verify
from handshake_cli.storage.filesystem import FilesystemStore
from tests.support.cli import CliResult, handshake, wait_for
from tests.support.jobs import gate_call, gate_tool, write_job
from tests.support.paths import DATA
from tests.support.sessions import only_session, records_of

SAYS = DATA / "model_jobs" / "says.py"
WORDS = " ".join(f"word{i}" for i in range(300))


def gated_job(directory: Path) -> Path:
    """Turn 1 waits at gate 1, turn 2 streams and waits at gate 2, turn 3 answers."""
    turns: list[dict[str, Any]] = [
        {"text": "Opening the first gate.", "tool_calls": [gate_call(1)]},
        {"text": "Second turn: " + WORDS, "tool_calls": [gate_call(2)]},
        {"text": "All done: " + WORDS},
    ]
    return write_job(directory, turns, [gate_tool()])


def spawn(env: dict[str, str], args: list[str], stdout: int | IO[Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        handshake(*args), stdout=stdout, stderr=subprocess.PIPE, env=env, start_new_session=True
    )


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    err = proc.stderr.read() if proc.stderr else b""
    return proc.wait(timeout=120), err.decode("utf-8", "replace")


def read_a_little_then_leave(proc: subprocess.Popen[bytes]) -> bytes:
    """What `| head -c 10` does: read ten bytes, close the pipe."""
    assert proc.stdout is not None
    first = proc.stdout.read(10)
    proc.stdout.close()
    return first


def run_with_stdout(env: dict[str, str], args: list[str], how: str) -> tuple[int, str]:
    """Run a command whose stdout is a pipe nobody reads (`closed`) or /dev/full (`full`)."""
    if how == "full":
        with open("/dev/full", "wb") as full:
            return finish(spawn(env, args, full))
    reader, writer = os.pipe()
    os.close(reader)  # the reader left before the first byte
    try:
        proc = spawn(env, args, writer)
    finally:
        os.close(writer)
    return finish(proc)


def assert_no_bug(code: int, err: str) -> None:
    assert code not in (1, 120), err  # 120: Python could not flush stdout at exit
    for sign in ("Traceback", "internal error", "Exception ignored"):
        assert sign not in err, err


def state_of(root: Path, session_id: str) -> str:
    """As `inspect SESSION --json` says it (read in this process: no interpreter to start)."""
    return str(describe(FilesystemStore(Paths(root)), session_id)["state"])


def assert_intact(root: Path, session_id: str) -> None:
    """As `inspect SESSION --verify` says it: every checksum, link, artifact and head.json."""
    assert verify(FilesystemStore(Paths(root)), session_id).verdict == "intact"


def assert_completed_whole(root: Path, session_id: str) -> None:
    """Driven to its end: every turn answered, the last one in full, the journal intact."""
    assert state_of(root, session_id) == "COMPLETED"
    assert_intact(root, session_id)
    records = records_of(root, session_id)
    assert records[-1].type == "session.completed"
    answers = [r.data["message"]["content"] for r in records if r.type == "model.completed"]
    assert answers[-1] == "All done: " + WORDS


def pause_at_gate_1(env: dict[str, str], root: Path, workspace: Path, job: Path) -> str:
    """A session PAUSED by Ctrl-C while its first tool call waited at the gate."""
    args = ["run", str(job), "--root", str(root), "--workspace", str(workspace), "--session-id", "gated"]
    proc = spawn(env, args, subprocess.DEVNULL)
    wait_for(lambda: (workspace / "waiting1").exists(), timeout=60)
    os.killpg(proc.pid, signal.SIGINT)  # the tool is shielded from it and finishes
    (workspace / "open1").touch()
    code, err = finish(proc)
    assert code == 75, err
    return "gated"


# -- run and recover: the session goes on ---------------------------------------------------


def test_run_goes_on_after_its_reader_leaves(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path
) -> None:
    args = ["run", str(gated_job(tmp_path / "job")), "--root", str(root), "--workspace", str(workspace)]
    proc = spawn(env, [*args, "--session-id", "piped"], subprocess.PIPE)
    assert read_a_little_then_leave(proc)
    (workspace / "open1").touch()  # only now: everything after this is written to a closed pipe
    (workspace / "open2").touch()
    code, err = finish(proc)
    assert code == 0, err
    assert_no_bug(code, err)
    assert_completed_whole(root, "piped")


@pytest.mark.parametrize("json_mode", [False, True], ids=["human", "json"])
def test_run_to_a_full_disk_completes_and_says_74(
    env: dict[str, str],
    root: Path,
    workspace: Path,
    tmp_path: Path,
    json_mode: bool,
) -> None:
    (workspace / "open1").touch()
    (workspace / "open2").touch()
    job = gated_job(tmp_path / "job")
    args = ["run", str(job), "--root", str(root), "--workspace", str(workspace), "--session-id", "full"]
    code, err = run_with_stdout(env, [*args, *(["--json"] if json_mode else [])], "full")
    assert code == 74, err
    assert_no_bug(code, err)
    assert "could not write to stdout: No space left on device; session full is COMPLETED" in err
    assert_completed_whole(root, "full")


def test_recover_goes_on_after_its_reader_leaves(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path
) -> None:
    session_id = pause_at_gate_1(env, root, workspace, gated_job(tmp_path / "job"))
    proc = spawn(env, ["recover", session_id, "--root", str(root)], subprocess.PIPE)
    assert read_a_little_then_leave(proc)
    (workspace / "open2").touch()
    code, err = finish(proc)
    assert code == 0, err
    assert_no_bug(code, err)
    assert_completed_whole(root, session_id)


def test_recover_to_a_full_disk_completes_and_says_74(
    env: dict[str, str], root: Path, workspace: Path, tmp_path: Path
) -> None:
    session_id = pause_at_gate_1(env, root, workspace, gated_job(tmp_path / "job"))
    (workspace / "open2").touch()
    code, err = run_with_stdout(env, ["recover", session_id, "--root", str(root)], "full")
    assert code == 74, err
    assert_no_bug(code, err)
    assert_completed_whole(root, session_id)


# -- commands whose output comes at the end -------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A root with one COMPLETED session `done`, and its bundle: built once, copied per test."""
    base = tmp_path_factory.mktemp("finished")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "80", "HOME": str(base), "PYTHONDONTWRITEBYTECODE": "1"})
    root, workspace = base / "root", base / "ws"
    workspace.mkdir()
    job = write_job(base / "job", [{"text": "Hello there."}], [])
    run = ["run", str(job), "--root", str(root), "--workspace", str(workspace), "--session-id", "done"]
    for args in (run, ["export", "done", "-o", str(base / "done.tar.gz"), "--root", str(root)]):
        made = subprocess.run(handshake(*args), env=env, capture_output=True, check=False, timeout=120)
        assert made.returncode == 0, made.stderr
    yield root, base / "done.tar.gz", env


ONE_SHOT = {
    "inspect": ["inspect", "done"],
    "inspect-json": ["inspect", "done", "--json"],
    "inspect-events": ["inspect", "done", "--events"],
    "inspect-list-json": ["inspect", "--json"],
    "gc-json": ["gc", "--older-than", "0s", "--json"],
    "recover": ["recover", "done"],
    "recover-json": ["recover", "done", "--json"],
    "recover-all": ["recover", "--all"],
    "checkpoint": ["checkpoint", "done"],
    "export": ["export", "done", "-o", "{tmp}/out.tar.gz"],
    "import": ["import", "{bundle}"],
}
# CI runs the commands issue 11 names; the rest go through the same code and run under `slow`.
EXTRA = {"inspect-events", "inspect-list-json", "recover-json", "recover-all", "checkpoint"}


@pytest.mark.parametrize("how", ["closed", "full"])
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in EXTRA else []) for n in ONE_SHOT]
)
def test_output_that_cannot_be_written_keeps_the_exit_code_honest(
    finished: tuple[Path, Path, dict[str, str]],
    cli: Callable[..., CliResult],
    tmp_path: Path,
    name: str,
    how: str,
) -> None:
    """The command does its work; a reader that left changes nothing (exit 0), a full disk
    lost output the user asked for (exit 74, said on stderr). Never 1, never a traceback."""
    template, bundle, env = finished
    root = tmp_path / "root"
    if name == "import":
        root.mkdir()
    else:
        shutil.copytree(template, root)
    args = [a.format(tmp=tmp_path, bundle=bundle) for a in ONE_SHOT[name]]
    code, err = run_with_stdout(env, [*args, "--root", str(root)], how)
    assert_no_bug(code, err)
    assert code == (0 if how == "closed" else 74), err
    if how == "full":
        assert "could not write to stdout: No space left on device" in err
    # ... and the work was done, whole.
    if name == "gc-json":
        assert not (root / "sessions" / "done").exists()
        return
    if name == "export":
        landed = tmp_path / "elsewhere"
        landed.mkdir()
        assert cli("import", str(tmp_path / "out.tar.gz"), "--root", str(landed)).code == 0
        root = landed
    assert state_of(root, "done") == "COMPLETED"
    assert_intact(root, "done")


def test_help_and_usage_errors_to_a_full_disk(env: dict[str, str]) -> None:
    for args, expected in ((["--help"], 74), (["--version"], 74), (["run", "--bogus", "--json"], 2)):
        code, err = run_with_stdout(env, args, "full")
        assert_no_bug(code, err)
        assert code == expected, (args, err)
        code, err = run_with_stdout(env, args, "closed")
        assert_no_bug(code, err)
        assert code == (2 if expected == 2 else 0), (args, err)


# -- text no terminal can show ----------------------------------------------------------------

# A pair split across two deltas, as real servers send it, and a surrogate with no partner.
FIRST = ["caf\u00e9 ", "\ud83d", "\ude00", " lone \ud800 end"]
SECOND = ["second na\u00efve \udfff turn"]


def says_job(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    turns = [{"text": FIRST, "tool_call": gate_call(1)}, {"text": SECOND}]
    job = {
        "name": "says",
        "prompt": {"user": "Say something odd."},
        "model": {"provider": "command", "command": [sys.executable, str(SAYS), json.dumps(turns)]},
        "tools": [gate_tool()],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def test_text_no_terminal_can_encode_is_shown_escaped(
    env: dict[str, str], cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    job = says_job(tmp_path / "job")
    args = ["run", str(job), "--root", str(root), "--workspace", str(workspace), "--session-id", "odd"]
    proc = spawn(env, args, subprocess.PIPE)
    wait_for(lambda: (workspace / "waiting1").exists(), timeout=60)
    os.killpg(proc.pid, signal.SIGINT)
    (workspace / "open1").touch()
    assert proc.stdout is not None
    out = proc.stdout.read().decode("utf-8")  # strict: what reached the terminal is UTF-8
    code, err = finish(proc)
    assert code == 75, err  # the run streamed it all, then stopped where it was asked to
    assert "caf\u00e9 \U0001f600 lone \\ud800 end" in out

    # Recover streams the second turn to a stdout in ASCII: escaped, not refused.
    ascii_env = {"PYTHONIOENCODING": "ascii"}
    recovered = cli("recover", "odd", "--root", str(root), extra_env=ascii_env)
    assert recovered.code == 0, recovered.stderr
    assert "second na\\xefve \\udfff turn" in recovered.stdout
    assert state_of(root, "odd") == "COMPLETED"
    assert_intact(root, "odd")

    said = ["caf\u00e9 \U0001f600 lone \ud800 end", "second na\u00efve \udfff turn"]
    for extra in ({}, ascii_env):
        human = cli("inspect", "odd", "--root", str(root), extra_env=extra)
        assert human.code == 0, human.stderr
        shown = "caf\\xe9 \\U0001f600" if extra else "caf\u00e9 \U0001f600"
        assert f"assistant {shown} lone \\ud800 end" in human.stdout
        described = cli("inspect", "odd", "--root", str(root), "--json", extra_env=extra)
        assert described.code == 0, described.stderr
        assert [m["content"] for m in described.json["messages"] if m["role"] == "assistant"] == said
        events = cli("inspect", "odd", "--events", "--root", str(root), extra_env=extra)
        assert events.code == 0 and "model.chunk" in events.stdout, events.stderr
        listed = cli("inspect", "odd", "--events", "--json", "--root", str(root), extra_env=extra)
        assert listed.code == 0, listed.stderr
        chunks = [e["data"]["text"] for e in listed.json["events"] if e["type"] == "model.chunk"]
        assert "".join(chunks) == "".join(said)
        if extra:
            assert described.stdout.isascii() and human.stdout.isascii()


def test_shown_and_json_text_escape_only_what_cannot_be_carried() -> None:
    assert streams.shown("a\ud83d\ude00b\ud800") == "a\U0001f600b\\ud800"
    assert streams.shown("plain caf\u00e9") == "plain caf\u00e9"

    class Ascii:
        encoding = "ascii"

    class Utf8:
        encoding = "utf-8"

    doc = {"text": "caf\u00e9 \ud83d\ude00 \ud800"}
    as_utf8 = streams.json_text(doc, Utf8(), indent=None)  # type: ignore[arg-type]
    assert as_utf8 == '{"text": "caf\u00e9 \U0001f600 \\ud800"}'
    as_ascii = streams.json_text(doc, Ascii(), indent=None)  # type: ignore[arg-type]
    assert as_ascii.isascii()
    assert json.loads(as_utf8) == json.loads(as_ascii) == {"text": "caf\u00e9 \U0001f600 \ud800"}


# -- a journal over 8 MiB ---------------------------------------------------------------------


def test_inspect_of_a_journal_over_8_mib(
    env: dict[str, str], cli: Callable[..., CliResult], root: Path, workspace: Path, tmp_path: Path
) -> None:
    prompt = "x" * (5 * 1024 * 1024)
    job = write_job(tmp_path / "job", [{"text": "Read it all."}], [], prompt={"user": prompt})
    made = cli("run", str(job), "--root", str(root), "--workspace", str(workspace), "--json")
    assert made.code == 0, made.stderr
    session_id = only_session(root)
    journal = root / "sessions" / session_id / "journal"
    assert sum(p.stat().st_size for p in journal.iterdir()) > 8 * 1024 * 1024

    human = cli("inspect", session_id, "--root", str(root))
    assert human.code == 0, human.stderr
    assert "integrity   intact (records from seq" in human.stdout
    assert f"handshake inspect {session_id} --verify --root {root}" in human.stdout
    assert "user      xxxx" in human.stdout

    # Its --json is megabytes: a reader that takes ten bytes and leaves finds it mid-write.
    proc = spawn(env, ["inspect", session_id, "--json", "--root", str(root)], subprocess.PIPE)
    assert read_a_little_then_leave(proc) == b'{\n  "schem'
    code, err = finish(proc)
    assert code == 0, err
    assert_no_bug(code, err)
