"""Browser tests: Debian's Chromium (never a downloaded browser), driven headless by Playwright.

The live view and the plugin harness are webpack bundles built by ``make plugin`` (``npm run
build`` in grafana-plugin/). The tests fail with that instruction when a bundle is missing.
On failure, a screenshot of every open page is saved under ``test-results/``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tests.conftest import ROOT, LiveServer

CHROMIUM = os.environ.get("LIVEDATA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWER_JS = ROOT / "src" / "livedata" / "server" / "static" / "dist" / "viewer.js"
PLUGIN_DIR = ROOT / "grafana-plugin"
PLUGIN_MODULE = PLUGIN_DIR / "dist" / "module.js"
HARNESS_DIR = PLUGIN_DIR / "dist-harness"
RESULTS = ROOT / "test-results"
VIEWPORT = {"width": 1280, "height": 760}


def require_built(*paths: Path) -> None:
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make plugin` (npm run build in grafana-plugin/) first",
                    pytrace=False)


@pytest.fixture(scope="session")
def viewer_built() -> None:
    """The live view bundle must exist before a server starts (``/static/`` is mounted at startup)."""
    require_built(VIEWER_JS)


@pytest.fixture(scope="session")
def harness_built() -> None:
    require_built(PLUGIN_MODULE, HARNESS_DIR / "harness.js", HARNESS_DIR / "index.html")


@pytest.fixture(scope="module")
def server(viewer_built: None) -> Iterator[LiveServer]:
    """One ``livedata serve`` for a test module."""
    s = LiveServer().start()
    yield s
    s.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make system-deps)", pytrace=False)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


class PageErrors:
    """Console errors and uncaught exceptions of a page (a CSP violation is a console error)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.messages.append(f"console: {msg.text}")

    def error(self, exc: Exception) -> None:
        self.messages.append(f"pageerror: {exc}")


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh page; ``page.errors`` collects console errors. Screenshot on failure."""
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    p = await context.new_page()
    errors = PageErrors()
    p.on("console", errors.console)
    p.on("pageerror", errors.error)
    p.errors = errors  # type: ignore[attr-defined]
    yield p
    if _failed(request):
        RESULTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        for i, open_page in enumerate(context.pages):
            try:
                await open_page.screenshot(path=str(RESULTS / f"{name}-{i}.png"), full_page=True)
            except Exception as exc:  # the page may have crashed: keep the original failure
                print(f"screenshot failed: {exc}")
        if errors.messages:
            (RESULTS / f"{name}-console.txt").write_text("\n".join(errors.messages))
    await context.close()


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def metrics(url: str) -> dict[str, float]:
    """The server's ``/metrics`` as ``{name: value}`` (label-less samples only)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
