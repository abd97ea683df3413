"""Debian's Chromium driven by Playwright, for tests of the playground (tests/test_playground.py).

Playwright's own browser download is not reachable from CI, so it drives ``/usr/bin/chromium``
(``apt-get install chromium``, which ``.ci/run`` does), headless, with an empty profile, and a
fake microphone that plays a beep.
"""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request

from harness import require

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # getUserMedia gets a generated tone, and no permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def launch(playwright: Playwright) -> Browser:
    """Chromium as CI has it; a missing browser fails the test under CI (``require``)."""
    path = shutil.which("chromium") or CHROMIUM
    require(Path(path).exists(), "Debian's chromium (apt-get install chromium)")
    # launch() gives the browser a fresh, empty profile directory of its own.
    return playwright.chromium.launch(executable_path=path, args=ARGS, headless=True)


@dataclass
class Traffic:
    """Every request the pages of a context made: where, and with which headers."""

    requests: list[Request] = field(default_factory=list)

    def origins(self) -> set[tuple[str | None, int | None]]:
        """The host and port of every request that goes over the network."""
        parts = [urllib.parse.urlsplit(r.url) for r in self.requests if not _local(r.url)]
        return {(p.hostname, p.port) for p in parts}

    def authorized(self) -> list[str]:
        return [r.url for r in self.requests if "authorization" in r.headers]


def _local(url: str) -> bool:
    """Requests that go nowhere: the page's own blobs and data."""
    return url.startswith(("blob:", "data:", "about:"))


@contextmanager
def context(browser: Browser, traffic: Traffic, viewport: dict[str, int] = DESKTOP) -> Iterator[BrowserContext]:
    """A fresh context (no stored token) that records its requests and fails on a page error or on
    anything the page's Content-Security-Policy refused."""
    ctx = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    ctx.set_default_timeout(30_000)
    errors: list[str] = []
    ctx.on("request", lambda request: traffic.requests.append(request))
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    # What the page's Content-Security-Policy refused: something it tried to load from elsewhere.
    ctx.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    try:
        yield ctx
    finally:
        ctx.close()
    assert not errors, f"the page threw: {errors}"


#: For each canvas under the root (shadow roots included): whether any pixel is painted.
_DRAWN = """root => {
    const found = [];
    const walk = node => {
        for (const el of node.querySelectorAll('*')) {
            if (el.tagName === 'CANVAS') found.push(el);
            if (el.shadowRoot) walk(el.shadowRoot);
        }
    };
    walk(root);
    return found.filter(c => c.width > 0 && c.height > 0).map(c => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
        return false;
    });
}"""


def canvases_drawn(page: Page, selector: str) -> list[bool]:
    """For each canvas under ``selector`` (shadow roots included): whether any pixel is painted."""
    return page.eval_on_selector(selector, _DRAWN)


def wait_drawn(page: Page, selector: str, timeout: float = 30_000) -> None:
    """Until every element matching ``selector`` has a canvas with painted pixels."""
    page.wait_for_function(
        f"""s => {{
            const drawn = {_DRAWN};
            const roots = [...document.querySelectorAll(s)];
            return roots.length > 0 && roots.every(r => drawn(r).some(Boolean));
        }}""",
        arg=selector,
        timeout=timeout,
    )
