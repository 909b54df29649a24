"""Shell completion scripts and the command tree that answers them, generated from the commands.

`python -m handshake_cli.cli.completions completions/` rewrites the committed scripts and
`handshake_cli/cli/tree.py`; a test fails when either no longer matches what this module
generates. At TAB time the scripts call `handshake` with `_HANDSHAKE_COMPLETE` set, and
`cli/complete.py` answers from the tree as click would from the commands themselves, without
loading typer or any command (`tests/test_completion.py` checks the answers are the same).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import typer
from typer._click import Command, Context, Parameter
from typer._click.shell_completion import get_completion_class
from typer._click.types import BoolParamType, FloatParamType, IntParamType, StringParamType
from typer.core import TyperArgument, TyperGroup, TyperOption

from handshake_cli.cli.app import app
from handshake_cli.cli.complete import zsh_escape

PROG = "handshake"
COMPLETE_VAR = "_HANDSHAKE_COMPLETE"
FILES = {"bash": "handshake.bash", "zsh": "_handshake", "fish": "handshake.fish"}
TREE = Path(__file__).with_name("tree.py")
# Types whose values click completes with nothing (IntRange and FloatRange are subclasses).
SILENT_TYPES = (StringParamType, IntParamType, FloatParamType, BoolParamType)


def script(shell: str) -> str:
    from typer._completion_classes import completion_init

    completion_init()
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(f"no completion support for {shell}")
    source = cls(typer.main.get_command(app), {}, PROG, COMPLETE_VAR).source()
    return source if source.endswith("\n") else source + "\n"


def tree() -> dict[str, Any]:
    """What cli/complete.py needs of the command tree, read from the click commands typer builds."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = group.make_context(PROG, [], resilient_parsing=True)
    root = _node(group, ctx, interspersed=False)
    root["commands"] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        _unsupported(isinstance(command, TyperGroup), f"{name} is a group of commands")
        _unsupported(
            bool(command.short_help or command.deprecated), f"{name} has a short help or is deprecated"
        )
        sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        short = command.get_short_help_str()
        root["commands"][name] = {
            "help": command.help,
            "hidden": command.hidden,
            "short": short,
            "short_plain": _plain(short),
            **_node(command, sub, interspersed=True),
        }
    return root


def _node(command: Command, ctx: Context, *, interspersed: bool) -> dict[str, Any]:
    _unsupported(
        ctx.allow_interspersed_args != interspersed
        or ctx.ignore_unknown_options
        or ctx.token_normalize_func is not None
        or ctx.auto_envvar_prefix is not None
        or ctx.default_map is not None,
        f"{ctx.command_path} parses in a way click's defaults do not",
    )
    help_option = command.get_help_option(ctx)
    params = [_param(param, param is help_option, ctx) for param in command.get_params(ctx)]
    return {"interspersed": interspersed, "params": params}


def _param(param: Parameter, is_help: bool, ctx: Context) -> dict[str, Any]:
    where = f"{param.name} ({'/'.join(param.opts)})"
    _unsupported(param.nargs != 1, f"{where} takes {param.nargs} values")
    _unsupported(not isinstance(param.type, SILENT_TYPES), f"{where} has a type that completes values")
    _unsupported(param._custom_shell_complete is not None, f"{where} completes its own values")
    _unsupported(bool(param.envvar), f"{where} reads an environment variable")
    if isinstance(param, TyperArgument):
        return {"name": param.name, "argument": True}
    assert isinstance(param, TyperOption)
    _unsupported(bool(param.count or param.secondary_opts), f"{where} counts or has a --no- form")
    _unsupported(
        not all(re.fullmatch(r"-[^-]|--[^-].*|-[^-].+", opt) for opt in param.opts),
        f"{where} has a name that is not -x or --name",
    )
    help_ = param.help or None
    # click names the help option in the order of a set of its names, which changes from one
    # process to the next (strings hash differently); the tree keeps the order they are declared in.
    opts = [opt for opt in ctx.help_option_names if opt in param.opts] if is_help else list(param.opts)
    return {
        "name": param.name,
        "argument": False,
        "opts": opts,
        "value": not param.is_flag,
        "multiple": param.multiple,
        "hidden": param.hidden,
        "help": help_,
        "plain": help_ is None or _plain(help_),
        # click's help option runs its callback in resilient parsing without effect
        "callback": param.callback is not None and not is_help,
    }


def _plain(text: str) -> bool:
    """typer passes each help shown to zsh and fish through rich (after zsh's escapes): True
    when rich leaves the text as it is, so long as it does not wrap it."""
    from rich.console import Console

    console = Console(width=1 << 20)
    for form in (text, zsh_escape(text)):
        if not (form.isascii() and form.isprintable()):
            return False
        if "".join(segment.text for segment in console.render(form)).rstrip("\n") != form:
            return False
    return True


def _unsupported(condition: bool, what: str) -> None:
    if condition:
        raise ValueError(f"cli/complete.py cannot answer for this tree: {what}; teach it how first")


def tree_source() -> str:
    body = _literal(tree(), 0)
    return (
        '"""The command tree as TAB completion and `handshake --help` need it, without typer.\n\n'
        "Generated by `python -m handshake_cli.cli.completions completions` from the commands\n"
        "themselves: do not edit it by hand (a test fails when it is stale).\n"
        '"""\n\n'
        "# ruff: noqa: E501\n\n"
        "from __future__ import annotations\n\n"
        "TYPE_CHECKING = False  # importing typing would cost a TAB press more than the rest\n"
        "if TYPE_CHECKING:\n"
        "    from typing import Any\n\n"
        f"ROOT: dict[str, Any] = {body}\n"
    )


def _literal(value: Any, depth: int) -> str:
    """`value` as Python source in the layout `ruff format` keeps (one item a line)."""
    pad, inner = "    " * depth, "    " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_literal(k, depth + 1)}: {_literal(v, depth + 1)},\n" for k, v in value.items()]
        return "{\n" + "".join(items) + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + "".join(f"{inner}{_literal(v, depth + 1)},\n" for v in value) + pad + "]"
    if isinstance(value, str):
        quoted = json.dumps(value)
        if '"' in value and "'" not in value:  # ruff's choice of quotes
            quoted = "'" + quoted[1:-1].replace('\\"', '"') + "'"
        return quoted
    if value is None or isinstance(value, bool | int):
        return repr(value)
    raise TypeError(f"no literal for {value!r}")


def write_all(directory: Path) -> None:
    for shell, name in FILES.items():
        (directory / name).write_text(script(shell), encoding="utf-8")
    TREE.write_text(tree_source(), encoding="utf-8")


if __name__ == "__main__":
    write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions"))
