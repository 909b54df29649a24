"""TAB completion answered without typer: the same answers, byte for byte and exit code for
exit code, as typer and click give from the command tree itself.

The completion scripts call `handshake` with `_HANDSHAKE_COMPLETE` and the words typed so far
in the environment; `cli/entry.py` answers from `cli/tree.py` (through `cli/complete.py`)
and leaves to typer what it cannot answer exactly. Here each request of a corpus that walks
the whole tree goes once through typer's path (`cli/app.py`, as before) and once through the
console script's entry, each in a process of its own kind, and the answers are compared.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.cli import completions
from handshake_cli.cli.tree import ROOT
from tests.support.paths import REPO

# Runs each request (a dict of environment variables) through `handshake` with no arguments,
# as the completion scripts do, with stdout a real file; prints [stdout, exit code, answered
# without typer] for each. `typer` goes through cli/app.py's main, as every TAB did before.
DRIVER = """
import json, os, sys, tempfile
from handshake_cli.cli import complete
path = sys.argv[1]
if path == "typer":
    from handshake_cli.cli.app import main
else:
    from handshake_cli.cli.entry import main
keep, answers = [], []
for request in json.load(sys.stdin):
    for name in [k for k in os.environ if k.startswith(("_HANDSHAKE", "_TYPER", "COMP_"))] + ["COLUMNS"]:
        os.environ.pop(name, None)
    os.environ.update(request)
    out = tempfile.TemporaryFile("w+", encoding="utf-8")
    keep.append(out)
    sys.stdout, real = out, sys.stdout
    try:
        main([])
        code = None
    except SystemExit as stop:
        code = stop.code
    except Exception as error:  # typer's traceback, for a request it cannot read
        code = "raised " + type(error).__name__
    finally:
        sys.stdout = real
    out.flush()
    out.seek(0)
    answered = path != "typer" and complete.answer(os.environ) is not None
    answers.append([out.read(), code, answered])
print(json.dumps(answers))
"""


def corpus() -> list[list[str]]:
    """Command lines ending in the word being completed (possibly empty), walking the tree:
    commands, options, values, `--`, `=`, short clusters, unknown words, every place a word
    can stand."""
    lines = [
        [""],
        ["-"],
        ["--"],
        ["--v"],
        ["-h", ""],
        ["r"],
        ["i"],
        ["insp"],
        ["inspect"],
        ["x"],
        ["--", ""],
        ["--", "insp"],
        ["--", "inspect", "--"],
        ["--bogus", "insp"],
        ["--bogus", "inspect", "--"],
        ["-hx", "inspect", "--"],
        ["--help=x", "inspect", "--"],
        ["--bogus", ""],
        ["nosuch", ""],
        ["nosuch", "--"],
        ["-h", "insp"],
        ["-hx", "insp"],
        ["--help", "--"],
        ["--help=x", "--"],
        ["="],
        ["--version", ""],  # typer runs --version's callback: left to typer
        ["--version", "insp"],
    ]
    for name, command in ROOT["commands"].items():
        lines += [
            [name, ""],
            [name, "-"],
            [name, "--"],
            [name, "--r"],
            [name, "-h", "--"],
            [name, "-hz", "--"],
            [name, "SESSION", ""],
            [name, "SESSION", "--"],
            [name, "SESSION", "more", ""],
            [name, "--", "--"],
            [name, "--", "SESSION", ""],
            [name, "--bogus", ""],
            [name, "--bogus", "--"],
            [name, "SESSION", "--bogus", "--j"],
            [name, "--root="],
            [name, "--json=", "--"],
        ]
        for param in command["params"]:
            if param["argument"]:
                continue
            opt = param["opts"][-1]
            lines += [[name, opt, "--"], [name, "SESSION", opt, ""]]
            if param["value"]:
                lines += [[name, opt, ""], [name, opt, "VALUE", "--"], [name, f"{opt}=VALUE", "--"]]
            for short in [opt for opt in param["opts"] if len(opt) == 2]:  # -xVALUE, -x=VALUE, -hx
                lines += [
                    [name, short + "VALUE", "--"],
                    [name, short + "V", "--"],
                    [name, short + "=V", "--"],
                ]
                lines += [[name, "-h" + short[1], "--"], [name, "-h" + short[1] + "V", "--"]]
    return lines


def requests(
    lines: list[list[str]], columns: str | None = None, *, is_args: bool = True
) -> list[dict[str, str]]:
    """Each command line as bash, zsh and fish (both of fish's questions) put it."""
    out = []
    extra = {"COLUMNS": columns} if columns else {}
    for line in lines:
        words = ["handshake", *line]
        typed = " ".join(words)  # what zsh and fish pass: the line as typed
        out += [
            {
                "_HANDSHAKE_COMPLETE": "complete_bash",
                "COMP_WORDS": " ".join(shlex.quote(word) if word else "" for word in words),
                "COMP_CWORD": str(len(words) - 1),
                **extra,
            },
            {"_HANDSHAKE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": typed, **extra},
        ]
        for action in ("get-args", "is-args") if is_args else ("get-args",):
            out.append(
                {
                    "_HANDSHAKE_COMPLETE": "complete_fish",
                    "_TYPER_COMPLETE_FISH_ACTION": action,
                    "_TYPER_COMPLETE_ARGS": typed,
                    **extra,
                }
            )
    return out


@functools.cache
def declared_order_seed() -> str:
    """A PYTHONHASHSEED under which click lists the help option's names as declared.

    click builds the help option from a set of its names, so typer offers `-h` and `--help`
    in an order that changes from one process to the next; the tree keeps the declared order,
    which is typer's under this seed."""
    names = ROOT["params"][-1]["opts"]
    for seed in range(100):
        proc = subprocess.run(
            [sys.executable, "-c", f"print(list(set({names!r})))"],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": str(seed)},
            check=True,
        )
        if proc.stdout.strip() == repr(names):
            return str(seed)
    raise AssertionError("no hash seed orders the help option's names as declared")


def answers(path: str, batch: list[dict[str, str]], env: dict[str, str]) -> list[Any]:
    # The same seed for both: what the console script leaves to typer is typer's answer too.
    environ = {**{k: v for k, v in env.items() if k != "COLUMNS"}, "PYTHONHASHSEED": declared_order_seed()}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, path],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        env=environ,
        check=True,
        timeout=300,
    )
    result: list[Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_the_command_tree_is_current() -> None:
    committed = (REPO / "handshake_cli" / "cli" / "tree.py").read_text(encoding="utf-8")
    assert committed == completions.tree_source(), (
        "handshake_cli/cli/tree.py is stale: run `python -m handshake_cli.cli.completions completions`"
    )


def test_tab_answers_what_typer_answers(env: dict[str, str]) -> None:
    lines = corpus()
    batch = [
        *requests(lines[:40]),
        *requests(lines[40:], is_args=False),  # fish's is-args is answered alike for every line
        # at 80 columns typer wraps gc's long help lines, and that is left to typer
        *requests([line for line in lines if line[0] == "gc"], columns="200", is_args=False),
        *requests([["inspect", "--"], [""], ["gc", "--"]], columns="30"),
        *requests([["insp"], ["inspect", '"unfinished']]),
        {"_HANDSHAKE_COMPLETE": "complete_bash", "COMP_WORDS": "handshake insp", "COMP_CWORD": "x"},
        {"_HANDSHAKE_COMPLETE": "complete_bash", "COMP_WORDS": "handshake insp", "COMP_CWORD": "7"},
        {"_HANDSHAKE_COMPLETE": "complete_bash", "COMP_WORDS": "handshake inspect --", "COMP_CWORD": "-1"},
        {"_HANDSHAKE_COMPLETE": "complete_bash", "COMP_WORDS": "handshake\tinspect\r\n--", "COMP_CWORD": "2"},
        {"_HANDSHAKE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "handshake  gc\t --json  "},
        {"_HANDSHAKE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "handshake 'inspect' \\-"},
        {"_HANDSHAKE_COMPLETE": "complete_zsh"},
        {"_HANDSHAKE_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": "handshake insp"},
        {"_HANDSHAKE_COMPLETE": "complete_pwsh", "_TYPER_COMPLETE_ARGS": "handshake insp"},
        {"_HANDSHAKE_COMPLETE": "source_zsh"},
        {"_HANDSHAKE_COMPLETE": "source_fish"},
        {"_HANDSHAKE_COMPLETE": "nonsense"},
        {"_HANDSHAKE_COMPLETE": "complete_tcsh"},
    ]
    expected = answers("typer", batch, env)
    got = answers("entry", batch, env)
    differ = [
        (request, want[:2], have[:2])
        for request, want, have in zip(batch, expected, got, strict=True)
        if want[:2] != have[:2]
    ]
    assert not differ, f"{len(differ)} of {len(batch)} answers differ, the first: {differ[0]}"
    answered = [request for request, have in zip(batch, got, strict=True) if have[2]]
    left = [request for request, have in zip(batch, got, strict=True) if not have[2]]
    # What is left to typer is what the tree cannot say exactly, and only that: other instructions,
    # requests typer cannot read, --version's callback, help that rich wraps for zsh and fish
    # (gc's long lines at 80 columns, most help at 30).
    for request in left:
        typed = request.get("_TYPER_COMPLETE_ARGS") or request.get("COMP_WORDS") or ""
        instruction = request["_HANDSHAKE_COMPLETE"]
        wrapped = instruction != "complete_bash" and (
            request.get("COLUMNS") == "30" or ("COLUMNS" not in request and typed.startswith("handshake gc"))
        )
        assert (
            instruction not in ("complete_bash", "complete_zsh", "complete_fish")
            or "--version" in typed
            or not request.get("COMP_CWORD", "0").isdigit()
            or int(request.get("COMP_CWORD", "0")) > 5
            or wrapped
        ), f"left to typer: {request}"
    bash = [r for r in answered if r["_HANDSHAKE_COMPLETE"] == "complete_bash"]
    assert len(bash) >= len(lines) - 2, "bash's answers should almost all come from the tree"
    wide = [r for r in answered if r.get("COLUMNS") == "200" and r["_HANDSHAKE_COMPLETE"] != "complete_bash"]
    assert len(wide) == 2 * len([line for line in lines if line[0] == "gc"])


def test_bash_completion_through_bash_and_the_console_script(env: dict[str, str], tmp_path: Path) -> None:
    """The committed script, sourced by bash, gets from the console script what typer gives."""
    script = (
        f"source {REPO / 'completions' / 'handshake.bash'}\n"
        "COMP_WORDS=(handshake insp); COMP_CWORD=1\n"
        "_handshake_completion handshake\n"
        'echo "${COMPREPLY[@]}"\n'
        "COMP_WORDS=(handshake inspect --ve); COMP_CWORD=2\n"
        "_handshake_completion handshake\n"
        'echo "${COMPREPLY[@]}"\n'
        "COMP_WORDS=(handshake gc --json --); COMP_CWORD=3\n"
        "_handshake_completion handshake\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "handshake").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c "from handshake_cli.cli.entry import main; main()" "$@"\n'
    )
    (shim / "handshake").chmod(0o755)
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": f"{shim}:/usr/bin:/bin"},
    )
    typer = answers(
        "typer",
        [
            {
                "_HANDSHAKE_COMPLETE": "complete_bash",
                "COMP_WORDS": "handshake gc --json --",
                "COMP_CWORD": "3",
            },
        ],
        env,
    )
    assert out.stdout.splitlines() == ["inspect", "--verify", " ".join(typer[0][0].split())]


@pytest.mark.parametrize(
    "request_",
    [
        {"_HANDSHAKE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "handshake inspect --"},
        {
            "_HANDSHAKE_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "handshake r",
        },
        {"_HANDSHAKE_COMPLETE": "complete_bash", "COMP_WORDS": "handshake ", "COMP_CWORD": "1"},
    ],
    ids=["zsh", "fish", "bash"],
)
def test_a_tab_press_loads_neither_typer_nor_a_command(request_: dict[str, str], env: dict[str, str]) -> None:
    """The console script answers a TAB press from the tree: no typer, click or rich, no
    command module, nothing of the core, and the answer is typer's."""
    code = (
        "import sys\n"
        "from handshake_cli.cli.entry import main\n"
        "try:\n    main([])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'click', 'rich', 'json'})\n"
        "loaded += sorted(m for m in sys.modules if m.startswith('handshake_cli.')\n"
        "    and m not in ('handshake_cli.cli', 'handshake_cli.cli.entry', 'handshake_cli.cli.complete',\n"
        "                  'handshake_cli.cli.tree'))\n"
        "print(code, loaded, file=sys.stderr)\n"
    )
    env = {**env, **request_}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stderr.strip() == "0 []"
    assert [out.stdout, 0] == answers("typer", [request_], env)[0][:2]


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_tab_answer_nobody_can_read(stdout: str, env: dict[str, str]) -> None:
    """A full disk or a reader gone: the same exit code and note on stderr as through typer."""
    request = {"_HANDSHAKE_COMPLETE": "complete_bash", "COMP_WORDS": "handshake ", "COMP_CWORD": "1"}
    seen = []
    for entry in ("handshake_cli.cli.entry", "handshake_cli.cli.app"):
        code = f"from {entry} import main; main()"
        if stdout == "full":
            with open("/dev/full", "wb") as full:
                proc = subprocess.run(
                    [sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, env={**env, **request}
                )
        else:
            reader, writer = os.pipe()
            os.close(reader)
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", code],
                    stdout=writer,
                    stderr=subprocess.PIPE,
                    env={**env, **request},
                )
            finally:
                os.close(writer)
        seen.append((proc.returncode, proc.stderr.decode()))
    assert seen[0] == seen[1]
    assert seen[0][0] == (74 if stdout == "full" else 0)
