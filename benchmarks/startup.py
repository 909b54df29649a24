"""Start-up cost of the console script, of every command and of a TAB completion, against bare
Python and `import typer`, measured in the same run, interleaved run by run.

    python benchmarks/startup.py [--runs N]

CI scripts and every TAB press pay this on each call. The figure is the median, over the runs,
of (the command's CPU time - the baseline's in the same round), in ms: CPU time (user + system,
from wait4), because start-up is all CPU and on a shared, loaded machine the wall time mostly
measures the neighbours; only such differences and ratios are comparable. Targets: `--version` and TAB
<= 25 ms over bare Python (they need neither the command tree nor typer); `inspect --json` on
an empty root and `run --help` <= 30 ms over `import typer` alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Context, Row, cli_env, cpu, entry, interleave, median, print_rows, row

SUITE = "start-up"
COMMANDS = ("run", "checkpoint", "recover", "inspect", "gc", "export", "import")
BARE = "python -c pass"
TYPER = "python -c 'import typer'"


def cases(root: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    env = cli_env(root)
    cmd = entry()
    tab = {**env, "_HANDSHAKE_COMPLETE": "complete_bash"}
    out = {
        BARE: ([sys.executable, "-c", "pass"], env),
        TYPER: ([sys.executable, "-c", "import typer"], env),
        "handshake --version": ([*cmd, "--version"], env),
        "TAB: handshake ins<TAB>": (cmd, {**tab, "COMP_WORDS": "handshake ins", "COMP_CWORD": "1"}),
        "TAB: handshake recover --<TAB>": (
            cmd,
            {**tab, "COMP_WORDS": "handshake recover --", "COMP_CWORD": "2"},
        ),
        "handshake inspect --json (empty root)": ([*cmd, "inspect", "--json"], env),
        "handshake --help": ([*cmd, "--help"], env),
    }
    for name in COMMANDS:
        out[f"handshake {name} --help"] = ([*cmd, name, "--help"], env)
    return out


# case -> (baseline, limit in ms over it)
TARGETS = {
    "handshake --version": (BARE, 25.0),
    "TAB: handshake ins<TAB>": (BARE, 25.0),
    "TAB: handshake recover --<TAB>": (BARE, 25.0),
    "handshake inspect --json (empty root)": (TYPER, 30.0),
    "handshake run --help": (TYPER, 30.0),
}


def rows(ctx: Context, runs: int | None = None) -> list[Row]:
    runs = runs or ctx.pick(25, 9, 2)
    root = ctx.fresh_dir("startup-root")
    table = cases(root)
    for argv, env in table.values():  # warm-up: .pyc files, the page cache
        cpu(argv, env)
    times = interleave({name: (lambda a=argv, e=env: cpu(a, e)) for name, (argv, env) in table.items()}, runs)
    out = [
        row(
            SUITE,
            BARE,
            median(times[BARE]) * 1e3,
            "ms",
            samples=times[BARE],
            note=f"figures below: ms over the baseline in the same round, median of {runs} interleaved runs",
        )
    ]
    for name in table:
        if name == BARE:
            continue
        base, limit = TARGETS.get(name, (TYPER if name == TYPER else BARE, None))
        if name == TYPER:
            base = BARE
        over = [(t - b) * 1e3 for t, b in zip(times[name], times[base], strict=True)]
        out.append(
            row(
                SUITE,
                name,
                median(over),
                "ms over",
                baseline=base,
                baseline_value=median(times[base]) * 1e3,
                ratio=median(times[name]) / median(times[base]),
                at_most=limit,
                on="value",
                samples=[t * 1e3 for t in times[name]],
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        print_rows(rows(Context("full", Path(tmp_name)), args.runs))


if __name__ == "__main__":
    main()
