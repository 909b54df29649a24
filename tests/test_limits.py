"""Limits on what handshake reads from outside (docs/FORMAT.md, "Limits"): job files and their
scripts, handshake.toml, session.toml and `recover --result-file`.

Each limit is checked from both sides where it matters: the value at the limit is accepted,
the value beyond it is refused with the documented exit code and a message naming the file
and the key, and nothing already stored changes. Deep nesting and values Python's own
machinery cannot take (RecursionError, OverflowError in time.sleep) were exit 1 before.
"""

from __future__ import annotations

import copy
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from handshake_cli import documents
from handshake_cli.engine import jobs
from handshake_cli.engine.jobs import JobConfigError, load_job
from handshake_cli.errors import IntegrityError
from handshake_cli.maintenance import gc
from handshake_cli.recovery import execute
from handshake_cli.storage.store import SESSION_TOML_MAX_BYTES
from tests.support.cli import CliResult
from tests.support.job_files import BASE_JOB, BASE_SCRIPT, OPENAI_MODEL, job_error
from tests.support.job_files import write_job as write_q_job
from tests.support.paths import DATA
from tests.support.peak_memory import PEAK_KIB
from tests.support.sessions import effects, files_of

Cli = Callable[..., CliResult]


def edited(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for step in path[:-1]:
        target = target.setdefault(step, {}) if isinstance(target, dict) else target[step]
    target[path[-1]] = value
    return changed


# -- job values ---------------------------------------------------------------------------------

TOOL = ("tools", 0)
# (where, key path in the job or script, the largest value accepted, the smallest refused)
VALUE_LIMITS: dict[str, tuple[str, tuple[str | int, ...], object, object]] = {
    "chunk_delay_ms": ("job", ("model", "chunk_delay_ms"), 60_000, 9223372036854775807),
    "chunk_delay_ms just over": ("job", ("model", "chunk_delay_ms"), 60_000, 60_001),
    "every_messages": ("job", ("checkpoint", "every_messages"), 1_000_000, 1_000_001),
    "every_tokens": ("job", ("checkpoint", "every_tokens"), 1_000_000_000, 1_000_000_001),
    "max_turns": ("job", ("limits", "max_turns"), 1_000_000, 1_000_001),
    "tool timeout_seconds": ("job", (*TOOL, "timeout_seconds"), 604_800, 604_800.5),
    "tool timeout_seconds huge": ("job", (*TOOL, "timeout_seconds"), 604_800, 1e300),
    "max_output_bytes": ("job", (*TOOL, "max_output_bytes"), 1 << 20, (1 << 20) + 1),
    "args integer": (
        "script",
        ("turns", 0, "tool_calls", 0, "args", "n"),
        (1 << 63) - 1,
        1 << 63,
    ),
    "args negative integer": (
        "script",
        ("turns", 0, "tool_calls", 0, "args", "n"),
        -(1 << 63),
        -(1 << 63) - 1,
    ),
}
OPENAI_LIMITS: dict[str, tuple[str, object, object]] = {
    "temperature": ("temperature", 2, 2.01),
    "seed": ("seed", (1 << 63) - 1, 1 << 63),
    "max_tokens": ("max_tokens", 10_000_000, 10_000_001),
    "timeout_seconds": ("timeout_seconds", 3600, 3601),
}


def job_key(path: tuple[str | int, ...]) -> str:
    return documents.key_path(path)


@pytest.mark.parametrize("case", list(VALUE_LIMITS))
def test_a_job_value_beyond_its_limit_is_refused_naming_file_and_key(case: str, tmp_path: Path) -> None:
    where, path, largest, beyond = VALUE_LIMITS[case]
    base = BASE_JOB if where == "job" else BASE_SCRIPT
    # At the limit: accepted.
    ok_dir = tmp_path / "ok"
    if where == "job":
        load_job(write_q_job(ok_dir, job=edited(base, path, largest)))
    else:
        load_job(write_q_job(ok_dir, script=edited(base, path, largest)))
    # Beyond it: exit 2, the file and the key named.
    bad_dir = tmp_path / "bad"
    if where == "job":
        job_file = write_q_job(bad_dir, job=edited(base, path, beyond))
        file = job_file
    else:
        job_file = write_q_job(bad_dir, script=edited(base, path, beyond))
        file = bad_dir / "q.script.toml"
    error = job_error(job_file)
    assert error.details["file"] == str(file)
    assert error.details["key"] == job_key(path)
    assert job_key(path) in error.message
    assert "at most" in error.message or "64-bit integer range" in error.message


@pytest.mark.parametrize("case", list(OPENAI_LIMITS))
def test_an_openai_option_beyond_its_limit_is_refused(case: str, tmp_path: Path) -> None:
    key, largest, beyond = OPENAI_LIMITS[case]
    load_job(write_q_job(tmp_path / "ok", job={**BASE_JOB, "model": {**OPENAI_MODEL, key: largest}}))
    path = write_q_job(tmp_path / "bad", job={**BASE_JOB, "model": {**OPENAI_MODEL, key: beyond}})
    error = job_error(path)
    assert error.details == {"file": str(path), "key": f"model.{key}"}
    assert "at most" in error.message


def test_a_stored_job_beyond_a_limit_is_integrity_damage_not_an_overflow() -> None:
    """session.toml's [job] is read as strictly as the job file: the value that used to make
    every recover die in time.sleep is refused when the stored job is read (exit 5)."""
    config = edited(load_job_config(), ("model", "chunk_delay_ms"), 9223372036854775807)
    with pytest.raises(JobConfigError) as info:
        jobs.Job.from_config(config, origin="session.toml [job]")
    assert info.value.exit_code == 5
    assert info.value.details["key"] == "model.chunk_delay_ms"


def load_job_config() -> dict[str, Any]:
    return load_job(DATA / "jobs" / "quickstart.toml").to_config()


def test_run_with_a_huge_chunk_delay_is_exit_2_and_creates_nothing(
    cli: Cli, tmp_path: Path, root: Path
) -> None:
    job = write_q_job(
        tmp_path / "job", job=edited(BASE_JOB, ("model", "chunk_delay_ms"), 9223372036854775807)
    )
    result = cli("run", str(job), "--root", str(root), "--workspace", str(tmp_path), "--json")
    assert result.code == 2, result.stdout + result.stderr
    error = result.json["error"]
    assert error["code"] == "invalid_job"
    assert error["details"] == {"file": str(job), "key": "model.chunk_delay_ms"}
    assert not (root / "sessions").exists() or list((root / "sessions").iterdir()) == []


# -- job and script files: nesting, size, what Python cannot convert ------------------------------

DEEP = 100_000
HOSTILE_TOML: dict[str, str] = {
    "deep arrays": "x = " + "[" * DEEP + "]" * DEEP + "\n",
    "deep inline tables": "x = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n",
    # tomllib spends quadratic time and memory on these: 100,000 parts exhaust the machine.
    "a dotted key of many parts": "x" + ".x" * DEEP + " = 1\n",
    "a table header of many parts": "[x" + ".x" * DEEP + "]\ny = 1\n",
    "33 levels": "x = " + "[" * 32 + "]" * 32 + "\n",
    "a 5000-digit integer": "x = " + "9" * 5000 + "\n",
}


@pytest.mark.parametrize("case", list(HOSTILE_TOML))
@pytest.mark.parametrize("which", ["job", "script"])
def test_a_hostile_job_or_script_is_exit_2_naming_the_file(case: str, which: str, tmp_path: Path) -> None:
    path = write_q_job(tmp_path)
    target = path if which == "job" else tmp_path / "q.script.toml"
    target.write_text(HOSTILE_TOML[case] + target.read_text())
    error = job_error(path)
    assert error.details["file"] == str(target)
    assert "deeper than 32 levels" in error.message or "digits" in error.message


def test_nesting_within_the_limit_is_accepted(tmp_path: Path) -> None:
    args: Any = 1
    for _ in range(26):  # turns[0].tool_calls[0].args is 6 levels deep in the script
        args = {"a": args}
    script = edited(BASE_SCRIPT, ("turns", 0, "tool_calls", 0, "args", "deep"), args)
    job = load_job(write_q_job(tmp_path, script=script))
    assert job.model.script[0].tool_calls[0].args["deep"]["a"]["a"]
    # ... and it goes into session.toml and back (two tables deeper there).
    config = tomli_w.dumps({"job": job.to_config()})
    stored = documents.parse_toml(config, max_nesting=documents.MAX_NESTING + 8)
    assert jobs.Job.from_config(stored["job"]) == job


def test_a_deeply_nested_job_through_the_cli_is_exit_2(cli: Cli, tmp_path: Path, root: Path) -> None:
    path = write_q_job(tmp_path)
    path.write_text(HOSTILE_TOML["deep arrays"] + path.read_text())
    result = cli("run", str(path), "--root", str(root), "--json")
    assert result.code == 2, result.stdout + result.stderr
    assert result.json["error"]["details"]["file"] == str(path)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("which", ["job", "script"])
def test_a_job_or_script_file_over_the_size_limit_is_refused(which: str, tmp_path: Path) -> None:
    path = write_q_job(tmp_path)
    target = path if which == "job" else tmp_path / "q.script.toml"
    text = target.read_text()
    padding = "# " + "x" * (jobs.JOB_FILE_MAX_BYTES - len(text) - 3) + "\n"
    target.write_text(padding + text)
    assert target.stat().st_size == jobs.JOB_FILE_MAX_BYTES
    load_job(path)  # at the limit
    target.write_text("#" + padding + text)
    error = job_error(path)
    assert error.details["file"] == str(target)
    assert f"the limit is {jobs.JOB_FILE_MAX_BYTES}" in error.message


def test_a_job_whose_stored_form_would_be_too_large_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Escaped control characters take six bytes each in session.toml: a job file within its
    # limit can make a stored job beyond session.toml's. (A smaller limit keeps the test fast.)
    monkeypatch.setattr(jobs, "STORED_JOB_MAX_BYTES", 60_000)
    job = edited(BASE_JOB, ("prompt", "user"), "\x01" * 10_000)
    path = write_q_job(tmp_path, job=job)
    error = job_error(path)
    assert error.details == {"file": str(path), "key": None}
    assert "stored job" in error.message and "60000" in error.message


# -- handshake.toml -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["deep arrays", "a dotted key of many parts", "a 5000-digit integer", "too large", "fifo"]
)
def test_a_hostile_handshake_toml_is_exit_2_naming_it(case: str, cli: Cli, root: Path) -> None:
    config = root / "handshake.toml"
    if case == "too large":
        config.write_text("[gc]\n" + "#" * gc.CONFIG_MAX_BYTES + "\n")
    elif case == "fifo":
        os.mkfifo(config)  # nobody writes to it: reading it would block gc forever
    else:
        config.write_text(HOSTILE_TOML[case])
    result = cli("gc", "--root", str(root), "--json")
    assert result.code == 2, result.stdout + result.stderr
    error = result.json["error"]
    assert error["code"] == "invalid_config"
    assert error["details"]["file"] == str(config) and str(config) in error["message"]


# -- session.toml -------------------------------------------------------------------------------


def test_a_deeply_nested_session_toml_is_exit_5_not_a_crash(
    golden_root: Callable[[str], Path], cli: Cli
) -> None:
    root = golden_root("clean")
    toml = root / "sessions" / "clean" / "session.toml"
    toml.write_text(toml.read_text() + HOSTILE_TOML["deep arrays"])
    before = files_of(root)
    for command in (["inspect", "clean"], ["inspect", "clean", "--verify"], ["recover", "clean"]):
        result = cli(*command, "--root", str(root), "--json")
        assert result.code == 5, (command, result.stdout, result.stderr)
        assert "session.toml" in result.json["error"]["message"]
        assert "deeper than" in result.json["error"]["message"]
    after = files_of(root)
    assert after.pop("sessions/clean/lock", b"") == b""  # recover's (empty) lock file, as ever
    assert after == before


def test_session_toml_over_its_limit_is_damage() -> None:
    from handshake_cli.storage.store import parse_config

    with pytest.raises(IntegrityError, match=f"the limit is {SESSION_TOML_MAX_BYTES}"):
        parse_config(b"#" * (SESSION_TOML_MAX_BYTES + 1), "s")


# -- recover --result-file ----------------------------------------------------------------------


def result_file_case(case: str, tmp_path: Path) -> str:
    if case == "dev zero":
        return "/dev/zero"
    path = tmp_path / "result"
    if case == "fifo":
        os.mkfifo(path)
    elif case == "too large":
        path.write_bytes(b"x" * (execute.RESULT_FILE_MAX_BYTES + 1))
    elif case == "directory":
        path.mkdir()
    elif case == "not utf-8":
        path.write_bytes(b"caf\xe9\n")
    return str(path)


@pytest.mark.parametrize("case", ["dev zero", "fifo", "too large", "directory", "not utf-8", "missing"])
def test_a_result_file_that_cannot_be_a_result_is_exit_2_and_changes_nothing(
    case: str,
    blocked: str,
    hs: Cli,
    root: Path,
    tmp_path: Path,
    workspace: Path,
) -> None:
    before = files_of(root / "sessions")
    path = result_file_case(case, tmp_path)
    result = hs("recover", blocked, "--resolve", "call-1-0=done", "--result-file", path, "--json")
    assert result.code == 2, result.stdout + result.stderr
    assert f"--result-file {path}" in result.json["error"]["message"]
    assert files_of(root / "sessions") == before
    assert len(effects(workspace)) == 1


def test_a_result_file_at_the_limit_is_recorded(
    blocked: str,
    hs: Cli,
    root: Path,
    tmp_path: Path,
) -> None:
    path = tmp_path / "result"
    path.write_bytes(b"y" * execute.RESULT_FILE_MAX_BYTES)
    result = hs("recover", blocked, "--resolve", "call-1-0=done", "--result-file", str(path))
    assert result.code == 0, result.stdout + result.stderr


def test_reading_dev_zero_is_bounded() -> None:
    """The reader never reads past the limit, whatever the file: /dev/zero is refused as a
    device before a byte is read, and a regular file that grows is cut at limit + 1."""
    with pytest.raises(documents.DocumentError, match="not a regular file"):
        documents.read_regular("/dev/zero", 10)
    r, w = os.pipe()
    try:
        writer = threading.Thread(target=lambda: os.write(w, b"z" * 100))
        writer.start()
        with pytest.raises(documents.DocumentError, match="more than 10 bytes"):
            documents.read_limited(r, 10)
        writer.join()
    finally:
        os.close(r)
        os.close(w)


# -- the figures --------------------------------------------------------------------------------


def test_refusing_a_hostile_job_takes_little_memory(tmp_path: Path) -> None:
    """A dotted key of 100,000 parts (200 KB) used to exhaust the machine inside tomllib."""
    path = write_q_job(tmp_path)
    path.write_text(HOSTILE_TOML["a dotted key of many parts"] + path.read_text())
    code = (
        "import sys\n"
        "from handshake_cli.engine.jobs import load_job, JobError\n"
        "try:\n    load_job(sys.argv[1])\nexcept JobError as e:\n    print(e.message[-40:])\n"
        f"print({PEAK_KIB})\n"
    )
    # A ceiling the old code blows through at once (it was killed at several GiB).
    limit = 512 << 20
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit * 2, limit * 2)),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    message, maxrss_kib = proc.stdout.splitlines()
    assert "deeper than 32 levels" in message
    assert int(maxrss_kib) * 1024 < limit
