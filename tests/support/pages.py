"""Web pages in a real browser: Playwright driving Debian's `chromium` (through
`executable_path`: the machines cannot download a browser), and the accessibility check every
page passes (axe-core, no serious or critical violation).

The `browser` fixture (tests/conftest.py) is one Chromium for the session; each test opens its
own contexts (a visitor's, an agent's), which share nothing: cookies, storage and caches apart.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

# The impacts a page may not have a single violation of.
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


def chromium_path() -> str | None:
    """Debian's chromium, where it is installed (make test installs it when it can)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Headless Chromium; skipped where it is missing, except under CI=true (where a missing
    browser must fail, not pass quietly)."""
    binary = chromium_path()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: install Debian's chromium (make test does)")
        pytest.skip("Debian's chromium is not installed (make test installs it as root)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=binary, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def new_context(
    browser: Browser, *, locale: str = "en-US", width: int = 1280, height: int = 800
) -> AsyncIterator[BrowserContext]:
    """A context of its own (a person's browser): its language and window size."""
    context = await browser.new_context(locale=locale, viewport={"width": width, "height": height})
    try:
        yield context
    finally:
        await context.close()


async def accessibility_problems(page: Page) -> list[str]:
    """The page's serious and critical accessibility violations, one line each (none: [])."""
    results = await Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']}"
        f" at {[node['target'] for node in violation['nodes']][:3]}"
        for violation in results.response["violations"]
        if violation.get("impact") in BLOCKING_IMPACTS
    ]
