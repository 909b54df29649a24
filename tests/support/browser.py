"""A real browser for the tests of the timeline page: Debian's Chromium, driven by Playwright.

Playwright's own browser downloads are not used: the tests launch the Chromium the system
has (`tests/setup/install-browser` installs Debian's package; `HANDSHAKE_TEST_CHROMIUM` names
another binary). Without Playwright or a Chromium that starts, the tests skip and say why.

Pages are opened from a `file://` URL with the network cut off three ways: the context is
offline, every request that is not the page's own file is aborted, and every request is
recorded so a test can assert that the page asked for nothing. Screenshots go to
`tests/output/` (git-ignored), one per test, for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.paths import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM_ENV = "HANDSHAKE_TEST_CHROMIUM"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")
# Headless, and nothing that talks to the network on its own (updates, sync, QUIC probes).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = REPO / "tests" / "output"
INSTALL = "tests/setup/install-browser (Debian's chromium package)"


def chromium_path() -> str | None:
    wanted = os.environ.get(CHROMIUM_ENV)
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """A launched headless Chromium, or a skip that says what is missing."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip(f"no Chromium found (set {CHROMIUM_ENV}, or run {INSTALL})")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=ARGS, timeout=60_000)
        except Error as exc:
            pytest.skip(f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Opened:
    page: Page
    url: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    errors: list[str] = field(default_factory=list)  # uncaught script errors and console errors

    def offsite(self) -> list[str]:
        return [url for url in self.requests if url != self.url]


def open_page(browser: Browser, path: Path, *, ready_ms: int = 30_000) -> Opened:
    """Open the page at `path` offline and wait until its script says it has drawn everything
    (`body[data-ready]`), at most `ready_ms`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    page = context.new_page()
    opened = Opened(page, path.absolute().as_uri())

    def route(route: Any) -> None:
        if route.request.url == opened.url:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", route)
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.errors.append(message.text)

    page.on("console", console)
    page.goto(opened.url, wait_until="load", timeout=ready_ms)
    page.wait_for_selector("body[data-ready=true]", state="attached", timeout=ready_ms)
    return opened


def screenshot(opened: Opened, name: str) -> Path:
    """A full-page screenshot in tests/output/, its path printed for whoever runs the tests."""
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{name}.png"
    opened.page.mouse.move(0, 0)  # no tooltip over the picture
    opened.page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
