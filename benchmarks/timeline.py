"""The timeline page (`inspect SESSION --html FILE`, issue 17): what writing it and drawing it
cost on a long session, against baselines measured in the same run.

    python benchmarks/timeline.py [--sizes 10000,100000] [--runs 5] [--dir DIR]

- `handshake inspect SESSION --html FILE` against `handshake inspect SESSION --events --json` on
  the same session, interleaved run by run: both read and verify every record, so the ratio is
  what the page adds (the fold, the elements, the table, the HTML). Target <= 2x;
- the page's bytes per record (no baseline: a figure of the format);
- in headless Chromium (Debian's, through Playwright; skipped, saying why, without them): from
  the start of loading the page to its script saying everything is drawn, against a page of
  the same bytes whose script only parses the embedded JSON: what drawing adds to the parse a
  page of that size cannot avoid. Target <= 3x.

Sessions are made with benchmarks/recovery.py's generator (real writers and checkpoints): turns
of 12 chunks and one read_file call, interrupted mid-stream, so the page folds all but the
edges into blocks past 400 turns.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Context, Row, cli_env, entry, interleave, median, print_rows, row, skipped, wall  # noqa: E402

SUITE = "timeline"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DATA = re.compile(r'(<script type="application/json" id="timeline-data">)(.*?)(</script>)', re.S)


def session(ctx: Context, n: int) -> Any:
    from recovery import build

    key = f"timeline-{n}"
    if key not in ctx.cache:
        tmp = ctx.fresh_dir(key)
        ctx.cache[key] = build(tmp, n, tail=500, chunks_per_turn=12, checkpoint_every=600, mid_turn=True)
    return ctx.cache[key].session


def writing(ctx: Context, n: int, runs: int, out: Path) -> list[Row]:
    target = session(ctx, n)
    root, sid = target.path.parent.parent, target.session_id
    env = cli_env(root)
    cmd = entry()
    cases = {
        "html": lambda: wall([*cmd, "inspect", sid, "--html", str(out)], env),
        "events": lambda: wall([*cmd, "inspect", sid, "--events", "--json"], env),
    }
    for case in cases.values():
        case()  # warm-up (and the page, for the browser rows)
    times = interleave(cases, runs)
    html, events = median(times["html"]), median(times["events"])
    return [
        row(
            SUITE,
            f"inspect --html, {n:,} records",
            html * 1000,
            "ms",
            baseline="inspect --events --json",
            baseline_value=events * 1000,
            ratio=html / events,
            at_most=2.0,
            samples=times["html"],
            note="both read and verify every record; the ratio is what the page adds",
        ),
        row(SUITE, f"page bytes per record, {n:,} records", out.stat().st_size / n, "B"),
    ]


def chromium() -> str | None:
    wanted = os.environ.get("HANDSHAKE_TEST_CHROMIUM")
    if wanted:
        return wanted
    return shutil.which("chromium") or shutil.which("chromium-browser")


def drawing(n: int, runs: int, page_file: Path) -> list[Row]:
    name = f"drawn in Chromium, {n:,} records"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [skipped(SUITE, name, "playwright is not installed (the test extra)", "<= 3x")]
    executable = chromium()
    if executable is None:
        return [skipped(SUITE, name, "no Chromium (tests/setup/install-browser)", "<= 3x")]
    text = page_file.read_text(encoding="utf-8")
    match = DATA.search(text)
    assert match, "no embedded data in the page"
    parse_only = page_file.with_name("parse-only.html")
    parse_only.write_text(
        "<!doctype html><html><body>"
        + match.group(0)
        + '<script>JSON.parse(document.getElementById("timeline-data").textContent);'
        + 'document.body.dataset.ready = "true";</script></body></html>',
        encoding="utf-8",
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:

            def load(path: Path) -> float:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                start = time.perf_counter()
                page.goto(path.absolute().as_uri(), wait_until="commit")
                page.wait_for_selector("body[data-ready=true]", state="attached", timeout=120_000)
                elapsed = time.perf_counter() - start
                page.close()
                return elapsed

            cases = {"page": lambda: load(page_file), "parse": lambda: load(parse_only)}
            for case in cases.values():
                case()
            times = interleave(cases, runs)
        finally:
            browser.close()
    drawn, parsed = median(times["page"]), median(times["parse"])
    return [
        row(
            SUITE,
            name,
            drawn * 1000,
            "ms",
            baseline="a page of the same bytes that only parses them",
            baseline_value=parsed * 1000,
            ratio=drawn / parsed,
            at_most=3.0,
            samples=times["page"],
            note="from the start of loading to everything drawn",
        )
    ]


def rows(ctx: Context, sizes: list[int] | None = None, runs: int | None = None) -> list[Row]:
    sizes = sizes or ctx.pick([10_000, 100_000], [10_000, 100_000], [3_000])
    runs = runs or ctx.pick(5, 3, 1)
    out: list[Row] = []
    for n in sizes:
        page_file = ctx.fresh_dir(f"page-{n}") / "page.html"
        out += writing(ctx, n, runs, page_file)
        out += drawing(n, runs, page_file)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        print_rows(rows(Context("full", Path(tmp_name)), sizes, args.runs))


if __name__ == "__main__":
    main()
