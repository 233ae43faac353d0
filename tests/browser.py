"""A real headless Chromium for tests: Debian's `chromium` driven by Playwright (a pytest plugin, see conftest).

Fixtures:
    `chromium`: the browser, launched for one test.
    `browser_page`: a `BrowserPage` in a fresh browser context (no cookies shared between tests) that
        records every console error, uncaught page error and requested URL.

Both skip, with the reason, when the `playwright` package or a Chromium executable is missing (CI
installs both: `.ci/run` runs `apt-get install chromium`, pyproject's `test` extra has playwright). Only
the Python package is used: Playwright's own browser download is not needed. `LITSERVE_TEST_CHROMIUM`
names another executable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_MS = 15_000  # every wait for the page is bounded by this unless the test says otherwise


def chromium_path() -> str | None:
    """The Chromium executable to drive: $LITSERVE_TEST_CHROMIUM, else the first of EXECUTABLES on PATH."""
    named = os.environ.get("LITSERVE_TEST_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class BrowserPage:
    """A Playwright page and what it did: console errors, page errors and every URL it requested."""

    page: Any  # playwright.sync_api.Page
    screenshots: Path  # the test's tmp dir: screenshots are kept there
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def foreign_requests(self, origin: str) -> list[str]:
        """Requested URLs outside `origin` (e.g. "http://127.0.0.1:8000"); `data:` URLs stay inside the page."""
        own = _origin(origin)
        return [url for url in self.requests if not url.startswith("data:") and _origin(url) != own]

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot as `<tmp dir>/<name>.png` and return its path."""
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def forget(self) -> None:
        """Drop what was recorded so far (e.g. after an expected 401)."""
        self.console_errors.clear()
        self.requests.clear()


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium for one test (skips when Playwright or Chromium is missing).

    Not shared between tests on purpose: while Playwright's sync API is open, its event loop counts as
    running in the main thread, and any later test there that runs a loop of its own would fail with
    "Cannot run the event loop while another loop is running". A launch costs well under a second.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package: pip install playwright (in the 'test' extra)")
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests need Chromium: apt-get install chromium (.ci/run installs it where it can)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI and these machines run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any, tmp_path: Path) -> Iterator[BrowserPage]:
    """A fresh page (its own context: no cookies or cache from other tests) that records what it does."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        recorded = BrowserPage(page, tmp_path)
        page.on("console", lambda message: message.type == "error" and recorded.console_errors.append(message.text))
        page.on("pageerror", lambda exc: recorded.console_errors.append(f"uncaught: {exc}"))
        page.on("request", lambda sent: recorded.requests.append(sent.url))
        yield recorded
    finally:
        context.close()
