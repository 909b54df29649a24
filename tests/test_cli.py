"""The command line as users and scripts meet it: exit codes, the JSON envelope, where
sessions live, completions, and what start-up costs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from handshake_cli import __version__
from handshake_cli.cli.output import Result, run_command
from tests.support.cli import CliResult
from tests.support.paths import REPO

COMMANDS = ["run", "checkpoint", "recover", "inspect", "gc"]


def test_version(cli: Callable[..., CliResult]) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"handshake {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_root_and_json(command: str, cli: Callable[..., CliResult]) -> None:
    result = cli(command, "--help")
    assert result.code == 0
    assert "--root" in result.stdout and "--json" in result.stdout
    first_line = next(line for line in result.stdout.splitlines()[1:] if line.strip())
    assert len(first_line.strip()) > 10  # a real sentence of help, not an empty docstring


def test_usage_error_in_json_is_one_document(cli: Callable[..., CliResult], root: Path) -> None:
    result = cli("inspect", "--no-such-flag", "--root", str(root), "--json")
    assert result.code == 2
    assert result.json["status"] == "error" and result.json["error"]["code"] == "usage"


def test_usage_error_for_humans(cli: Callable[..., CliResult]) -> None:
    result = cli("inspect", "--no-such-flag")
    assert result.code == 2
    assert "No such option" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_session_is_exit_6(cli: Callable[..., CliResult], root: Path) -> None:
    result = cli("inspect", "nope", "--root", str(root), "--json")
    assert result.code == 6
    assert result.json["error"]["code"] == "not_found"
    assert result.json["guidance"] == [f"handshake inspect --root {root}"]


@pytest.mark.parametrize("bad", ["..", "a/b", ".hidden", "x" * 65, "sessión", "-rf"])
def test_hostile_session_ids_are_exit_2(bad: str, cli: Callable[..., CliResult], root: Path) -> None:
    result = cli("inspect", bad, "--root", str(root), "--json")
    assert result.code == 2, result.stdout
    assert result.json["error"]["code"] in {"invalid_session_id", "usage"}
    assert not (root / "sessions").exists()


def test_empty_root_lists_nothing(cli: Callable[..., CliResult], root: Path) -> None:
    result = cli("inspect", "--root", str(root), "--json")
    assert result.code == 0
    assert result.json["sessions"] == []
    human = cli("inspect", "--root", str(root))
    assert "no sessions" in human.stdout


def test_where_sessions_live(
    cli: Callable[..., CliResult], env: dict[str, str], tmp_path: Path, golden_root: Callable[[str], Path]
) -> None:
    root = golden_root("clean")
    by_env = cli("inspect", "--json", extra_env={"HANDSHAKE_HOME": str(root)})
    assert [s["session_id"] for s in by_env.json["sessions"]] == ["clean"]
    elsewhere = tmp_path / "elsewhere"
    by_flag = cli("inspect", "--root", str(elsewhere), "--json", extra_env={"HANDSHAKE_HOME": str(root)})
    assert by_flag.json["sessions"] == [] and by_flag.json["root"] == str(elsewhere)
    default = cli("inspect", "--json")
    assert default.json["root"] == str(Path(env["XDG_DATA_HOME"]) / "handshake")


def test_human_output_on_a_pipe_is_plain_text(
    golden_root: Callable[[str], Path], cli: Callable[..., CliResult]
) -> None:
    root = golden_root("in-doubt")
    result = cli("inspect", "in-doubt", "--root", str(root))
    assert result.code == 0
    assert "\x1b[" not in result.stdout
    assert "INTERRUPTED" in result.stdout and "call-1-0" in result.stdout and "in_doubt" in result.stdout


def test_events_and_at(golden_root: Callable[[str], Path], cli: Callable[..., CliResult]) -> None:
    root = golden_root("clean")
    events = cli("inspect", "clean", "--events", "--root", str(root), "--json").json["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "session.created" and events[-1]["type"] == "session.completed"
    at = cli("inspect", "clean", "--at", "2", "--root", str(root), "--json").json
    assert at["state"] == "ACTIVE" and at["last_seq"] == 2
    outside = cli("inspect", "clean", "--at", "999", "--root", str(root), "--json")
    assert outside.code == 2 and "outside" in outside.json["error"]["message"]


def test_a_bug_exits_1_and_says_how_to_report_it(capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> Result:
        raise KeyError("surprise")

    assert run_command("inspect", False, broken) == 1
    err = capsys.readouterr().err
    assert "bug in handshake" in err and "report" in err and "Traceback" not in err


def test_completions_are_current() -> None:
    from handshake_cli.cli.completions import FILES, script

    for shell, name in FILES.items():
        committed = (REPO / "completions" / name).read_text()
        assert committed == script(shell), (
            f"completions/{name} is stale: run `python -m handshake_cli.cli.completions completions`"
        )


def test_bash_completion_answers_from_the_command_tree(env: dict[str, str]) -> None:
    bin_dir = Path(sys.executable).parent
    script = (
        f"source {REPO / 'completions' / 'handshake.bash'}\n"
        "COMP_WORDS=(handshake insp); COMP_CWORD=1\n"
        "_handshake_completion handshake\n"
        'echo "${COMPREPLY[@]}"\n'
        "COMP_WORDS=(handshake inspect --ve); COMP_CWORD=2\n"
        "_handshake_completion handshake\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    shim = Path(env["HOME"]) / "bin"
    shim.mkdir()
    (shim / "handshake").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m handshake_cli "$@"\n')
    (shim / "handshake").chmod(0o755)
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": f"{shim}:{bin_dir}:/usr/bin:/bin"},
    )
    assert out.stdout.splitlines() == ["inspect", "--verify"]


def test_version_loads_no_command_line_library(env: dict[str, str]) -> None:
    """`handshake --version` (the console script's entry, and `python -m handshake_cli`)
    answers before typer, click and the command tree are imported."""
    code = (
        "import sys\n"
        "from handshake_cli.cli.entry import main\n"
        "try:\n    main(['--version'])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'click', 'rich'})\n"
        "loaded += sorted(m for m in sys.modules if m.startswith('handshake_cli.cli.commands'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.splitlines() == [f"handshake {__version__}", "[]"], out.stdout
    via_module = subprocess.run(
        [sys.executable, "-m", "handshake_cli", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert via_module.stdout == f"handshake {__version__}\n"


@pytest.mark.parametrize("argv", [["--version"], ["inspect", "--json"]])
def test_plain_commands_never_load_rich_or_httpx(argv: list[str], root: Path, env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from handshake_cli.cli.app import main\n"
        f"try:\n    main({[*argv, '--root', str(root)] if argv[0] == 'inspect' else argv!r})\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'pydantic', 'httpx')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# What each command line may load, beyond the command line itself: (the command modules, and
# the packages of the core, it needs).
LOADS = {
    ("--version",): ((), ()),
    ("--help",): ((), ()),
    ("run", "--help"): (("run",), ()),
    ("inspect", "--json"): (("inspect",), ("storage", "session")),
}
# Never on these paths: the front end's heavy libraries, and what only other commands need
# (TOML for jobs and session.toml, sockets for a lock's host, the provider's HTTP client),
# and the PostgreSQL driver, which only a postgresql:// root loads.
HEAVY = ("rich", "httpx", "pydantic", "tomllib", "tomli", "socket", "secrets", "random", "psycopg")


@pytest.mark.parametrize("argv", list(LOADS), ids=" ".join)
def test_a_command_line_loads_only_what_it_runs(
    argv: tuple[str, ...], root: Path, env: dict[str, str]
) -> None:
    """Each command's module is imported only when that command runs or shows its help, and
    `handshake --help` lists them all without importing any."""
    code = (
        "import json, sys\n"
        "from handshake_cli.cli.entry import main\n"
        f"try:\n    main({list(argv)!r})\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "HANDSHAKE_HOME": str(root)},
        check=True,
    )
    loaded = json.loads(out.stdout.splitlines()[-1])
    commands, core = LOADS[argv]
    assert sorted(
        m.rpartition(".")[2] for m in loaded if m.startswith("handshake_cli.cli.commands.")
    ) == sorted(commands)
    packages = {m.split(".")[1] for m in loaded if m.count(".") >= 1 and m.startswith("handshake_cli.")}
    assert packages - {"cli", "errors", "vocabulary", "paths", "documents", "faults"} == set(core)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    if argv == ("--help",):
        assert all(name in out.stdout for name in ("run", "checkpoint", "recover", "inspect", "gc", "import"))
