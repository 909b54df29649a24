"""The documentation keeps up with the code: every command and option has help text and is
documented, every record type the journal holds is in docs/FORMAT.md, every exit code is in
the README's table, and docs/CLI.md is what `--help` prints today."""

from __future__ import annotations

import re

import pytest
import typer
from typer._click import Command, Parameter

from handshake_cli.cli import reference
from handshake_cli.cli.app import app
from handshake_cli.errors import ExitCode
from handshake_cli.storage.journal.records import KNOWN_TYPES
from tests.support.cli import Cli
from tests.support.paths import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
CLI_REFERENCE = DOCS / "CLI.md"


def commands() -> dict[str, Command]:
    group = typer.main.get_command(app)
    found: dict[str, Command] = getattr(group, "commands", {})
    assert found, "handshake has no subcommands?"
    return found


def documentation() -> str:
    """The README and every page under docs/ written by hand (not the generated reference)."""
    pages = [README, *(page for page in sorted(DOCS.glob("*.md")) if page != CLI_REFERENCE)]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def mentions(text: str, word: str) -> bool:
    """`word` in `text` as a word of its own: `--at` is not found in `--attach`."""
    return re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text) is not None


def help_of(param: Parameter) -> str:
    return str(getattr(param, "help", None) or "").strip()


def test_every_command_and_option_has_help_text() -> None:
    group = typer.main.get_command(app)
    missing = [f"--{p.name}" for p in group.params if not help_of(p)]
    for name, command in commands().items():
        if not (command.help or "").strip():
            missing.append(f"handshake {name}")
        missing += [f"handshake {name} {p.opts[0]}" for p in command.params if not help_of(p)]
    assert not missing, f"no help text: {missing}"


def test_every_command_is_in_the_readme_synopsis() -> None:
    synopsis = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("```")[1]
    listed = {line.split()[1] for line in synopsis.splitlines() if line.startswith("handshake ")}
    assert set(commands()) <= listed, f"not in the README's Commands block: {set(commands()) - listed}"


def test_every_option_is_documented() -> None:
    text = documentation()
    group = typer.main.get_command(app)
    undocumented = [p.opts[0] for p in group.params if not any(mentions(text, o) for o in p.opts)]
    for name, command in commands().items():
        for param in command.params:
            names = [*param.opts, *param.secondary_opts]
            if param.param_type_name == "option" and not any(mentions(text, o) for o in names):
                undocumented.append(f"handshake {name} {names[0]}")
    assert not undocumented, f"in no page of README.md or docs/: {undocumented}"


def test_every_record_type_is_in_the_format() -> None:
    text = (DOCS / "FORMAT.md").read_text(encoding="utf-8")
    missing = sorted(t for t in KNOWN_TYPES if not mentions(text, t))
    assert not missing, f"record types docs/FORMAT.md does not describe: {missing}"


def test_every_exit_code_is_in_the_readme_table() -> None:
    table = README.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n\n")[1]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


def test_the_cli_reference_is_current() -> None:
    committed = CLI_REFERENCE.read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/CLI.md is stale: run `python -m handshake_cli.cli.reference docs/CLI.md`"
    )


def test_the_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference.render()
    for columns in ("40", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        assert reference.render() == expected
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert reference.render() == expected


@pytest.mark.parametrize("path", [(), *((name,) for name in reference.command_names())])
def test_help_prints_what_the_reference_shows(cli: Cli, path: tuple[str, ...]) -> None:
    """The real `handshake CMD --help` in an 80-column terminal (the `cli` fixture sets
    COLUMNS=80 and NO_COLOR)."""
    result = cli(*path, "--help")
    assert result.code == 0, result.stderr
    assert result.stdout == reference.help_text(*path)
