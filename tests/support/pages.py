"""Web pages in a real browser: Playwright driving Debian's `chromium` (through
`executable_path`: the machines cannot download a browser), and the accessibility check every
page passes (axe-core, no serious or critical violation).

The `browser` fixture (tests/conftest.py) is one Chromium for the session; each test opens its
own contexts (a visitor's, an agent's), which share nothing: cookies, storage and caches apart.
`serve_page` serves a page from an origin of its own (an app's shop, a stranger's site).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Frame, Page, async_playwright
from playwright.async_api import expect as expect_on_page

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


async def accessibility_problems(page: Page | Frame) -> list[str]:
    """The page's (or a frame's: an embedded widget's) serious and critical accessibility
    violations, one line each (none: [])."""
    results = await Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']}"
        f" at {[node['target'] for node in violation['nodes']][:3]}"
        for violation in results.response["violations"]
        if violation.get("impact") in BLOCKING_IMPACTS
    ]


# How long a page may take to show what the API did (a loaded machine, a stream reconnecting).
SHOWN_WITHIN_MS = 30_000
# The widget's iframe, as web/widget/embed.js adds it to the app's page.
WIDGET_FRAME = "#switchboard-widget iframe"


async def shows(where: Page | Frame, selector: str, text: str) -> None:
    """Wait until the element at `selector` shows `text` (fails after SHOWN_WITHIN_MS)."""
    await expect_on_page(where.locator(selector)).to_contain_text(text, timeout=SHOWN_WITHIN_MS)


async def widget_frame(page: Page) -> Frame:
    """The widget embedded in `page` by its embed script, once it has loaded."""
    element = await page.wait_for_selector(WIDGET_FRAME, state="attached")
    frame = await element.content_frame()
    assert frame is not None
    await frame.wait_for_selector("#status")
    return frame


async def start_demo_chat(
    page: Page,
    api: str,
    customer_id: str,
    *,
    entry: str | None = None,
    order_id: str | None = None,
) -> Frame:
    """On the demo shop's page (the app's site and backend), start a chat for `customer_id`
    (from the page `entry`, about `order_id`): the page embeds the widget, opened. Answers the
    widget's frame."""
    await page.goto(f"{api}/demo/")
    await page.fill("#customer-id", customer_id)
    if entry is not None:
        await page.fill("#entry", entry)
    if order_id is not None:
        await page.fill("#order-id", order_id)
    await page.click("#start button[type=submit]")
    return await widget_frame(page)


async def scrolls_sideways(where: Page | Frame) -> bool:
    """Whether the page (or frame) is wider than its window: a 360 px phone would scroll."""
    return bool(
        await where.evaluate(
            "document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )
    )


# Where the scenarios' screenshots go: `make screenshots` sets docs/screenshots (the README's);
# otherwise the system's temporary directory, to look at after a run.
SCREENSHOTS = Path(
    os.environ.get("SWITCHBOARD_TEST_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / "switchboard-screenshots"
)


async def looked_at(where: Page | Frame, name: str, *, widths: tuple[int, ...] = (1280,)) -> None:
    """No serious or critical accessibility problem in this state, and a screenshot of the
    page at each width (`name-<width>.png` under SCREENSHOTS). A frame's page is shot whole."""
    problems = await accessibility_problems(where)
    assert not problems, f"{name}: {problems}"
    page = where.page if isinstance(where, Frame) else where
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    viewport = page.viewport_size
    for width in widths:
        await page.set_viewport_size(
            {"width": width, "height": viewport["height"] if viewport else 800}
        )
        await page.screenshot(path=SCREENSHOTS / f"{name}-{width}.png", full_page=True)
    if viewport:
        await page.set_viewport_size(viewport)


async def sign_in(page: Page, api: str, path: str, token: str) -> None:
    """Sign in to a staff page (/workbench/, /wallboard/) with a token, typed in its form (the
    token never goes into a URL)."""
    await page.goto(f"{api}{path}")
    await page.fill("#token-input", token)
    await page.locator("#sign-in-view button[type=submit]").click()
    await expect_on_page(page.locator("#sign-in-view")).to_be_hidden(timeout=SHOWN_WITHIN_MS)
    assert token not in page.url


async def agent_sends(bench: Page, text: str) -> None:
    """The agent writes `text` in the workbench's composer and sends it with Enter; it is in the
    transcript once the API has it."""
    composer = bench.locator("#composer-text")
    await composer.fill(text)
    await composer.press("Enter")
    await expect_on_page(composer).to_have_value("", timeout=SHOWN_WITHIN_MS)
    await expect_on_page(bench.locator("#transcript .message.agent").last).to_contain_text(
        text, timeout=SHOWN_WITHIN_MS
    )


async def hand_over(
    where: Page | Frame, selector: str, how: str, *, name: str, content_type: str, data: bytes
) -> None:
    """A file given to the element at `selector` as a person's browser gives it: pasted
    (`how` "paste": a paste event carrying it, as after copying a screenshot) or dropped
    (`how` "drop": dragged over, then dropped)."""
    await where.locator(selector).evaluate(
        """(element, [how, name, type, encoded]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const carried = new DataTransfer();
            carried.items.add(new File([bytes], name, { type }));
            const init = { bubbles: true, cancelable: true };
            if (how === "paste") {
                const pasted = new ClipboardEvent("paste", { ...init, clipboardData: carried });
                element.dispatchEvent(pasted);
                return;
            }
            for (const step of ["dragenter", "dragover", "drop"]) {
                element.dispatchEvent(new DragEvent(step, { ...init, dataTransfer: carried }));
            }
        }""",
        [how, name, content_type, base64.b64encode(data).decode()],
    )


async def image_shown(where: Page | Frame, selector: str, width: int) -> str:
    """Wait until the image at `selector` has loaded, `width` pixels wide as decoded (not an
    error's broken image); answers its address."""
    image = where.locator(selector)
    await expect_on_page(image).to_have_js_property("naturalWidth", width, timeout=SHOWN_WITHIN_MS)
    address = await image.get_attribute("src")
    assert address is not None
    return address


@contextmanager
def serve_page(html: str, port: int) -> Iterator[None]:
    """Serve `html` at every path of port `port` on loopback (http://127.0.0.1:<port>/, and
    http://localhost:<port>/, another origin), until the block ends."""
    body = html.encode()

    class OnePage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # (the test's output stays the test's)

    server = ThreadingHTTPServer(("127.0.0.1", port), OnePage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
