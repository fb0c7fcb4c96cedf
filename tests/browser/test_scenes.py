"""The BUILT plugin under Grafana's dashboard engine, ``@grafana/scenes``, in Chromium.

The page (grafana-plugin/scenes/, bundled with esbuild into dist-scenes/) is an ``EmbeddedScene``
with a ``SceneTimeRange``, a time picker, a ``SceneRefreshPicker``, a ``SceneQueryRunner`` and a
``VizPanel`` drawing @grafana/ui's time series graph; it loads dist/module.js as Grafana does (AMD)
and plays Grafana's shell (data source and template services, ``runRequest``). Each render of the
panel is recorded after the query runner and the field config did their part: which frames it
got, the display names Grafana computes (``getFieldDisplayName``), null cells inside a series.
The test serves the page from a static server of its own (another origin, allowed with
``--cors-origin``) against a real ``livedata serve``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import PLUGIN_DIR, PLUGIN_MODULE, RESULTS, require_built
from tests.conftest import LiveServer

SCENES_DIR = PLUGIN_DIR / "dist-scenes"
ICONS = "/public/build/img/icons/"
# A few of the icons Grafana serves from its own public/ folder are not in @grafana/ui's package.
BLANK_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16"></svg>'

THREE_QUERIES: list[dict[str, Any]] = [
    {"channel": "random-walk", "params": {"series": 3}},
    {"channel": "sine", "params": {"series": 2}},
    {"channel": "random-walk"},
]
THREE_NAMES = [
    "random-walk/series=3 series0",
    "random-walk/series=3 series1",
    "random-walk/series=3 series2",
    "sine/series=2 series0",
    "sine/series=2 series1",
    "random-walk series0",
]


class SceneFiles(SimpleHTTPRequestHandler):
    """dist-scenes/ at ``/``, the built plugin (dist/) at ``/plugin/``."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if path.startswith("/plugin/"):
            return str(PLUGIN_MODULE.parent / path.removeprefix("/plugin/"))
        return super().translate_path(path)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == 404 and self.path.startswith(ICONS) and self.path.endswith(".svg"):
            self.send_response(200)
            self.send_header("Content-Type", "image/svg+xml")
            self.send_header("Content-Length", str(len(BLANK_SVG)))
            self.end_headers()
            self.wfile.write(BLANK_SVG)
            return
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def scenes_origin() -> Iterator[str]:
    require_built(PLUGIN_MODULE, SCENES_DIR / "scenes.js", SCENES_DIR / "index.html")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SceneFiles, directory=str(SCENES_DIR)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def scenes_server(scenes_origin: str) -> Iterator[LiveServer]:
    s = LiveServer(["--cors-origin", scenes_origin]).start()
    yield s
    s.stop()


@pytest.fixture
async def scene(page: Page, scenes_origin: str) -> Page:
    await page.goto(f"{scenes_origin}/index.html")
    await page.evaluate("() => window.scenes.ready")
    assert await page.evaluate("window.scenes.loaded"), await page.evaluate("window.scenes.error")
    return page


async def start(page: Page, server: LiveServer, queries: list[dict[str, Any]], frm: str = "now-1m",
                **opts: Any) -> None:
    await page.evaluate("([url, queries, from, opts]) => window.scenes.start({ url, queries, from, ...opts })",
                        [server.url, queries, frm, opts])


async def renders(page: Page, start_at: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = await page.evaluate("(n) => window.scenes.renders(n)", start_at)
    return out


async def wait_render(page: Page, condition: str, within_ms: int = 10_000, since: int | None = None) -> dict[str, Any]:
    """The first render (from now on, or from render ``since``) for which ``condition`` (JS, of ``r``) holds."""
    n: int = await page.evaluate("window.scenes.renderCount()") if since is None else since
    await page.wait_for_function(
        f"(n) => window.scenes.renders(n).some((r) => {condition})", arg=n, timeout=within_ms
    )
    found: dict[str, Any] = await page.evaluate(
        f"(n) => window.scenes.renders(n).find((r) => {condition})", n
    )
    return found


def no_page_errors(page: Page) -> None:
    errors = [m for m in page.errors.messages if "favicon" not in m]  # type: ignore[attr-defined]
    assert errors == []


def post(url: str, body: bytes, content_type: str) -> None:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204, resp.status


async def test_display_names_unique_across_three_queries(scene: Page, scenes_server: LiveServer) -> None:
    await start(scene, scenes_server, THREE_QUERIES)
    r = await wait_render(scene, "r.refIds.length === 3 && r.rows.every((n) => n > 100)")
    assert r["names"] == THREE_NAMES
    assert len(set(r["names"])) == len(r["names"])
    assert r["frameTypes"] == ["timeseries-wide"] * 3
    # The legend Grafana draws says the same.
    await scene.wait_for_function("(n) => window.scenes.legend().length === n", arg=len(THREE_NAMES))
    assert await scene.evaluate("window.scenes.legend()") == THREE_NAMES
    # Every render of the panel had all three queries: none drew a subset on the way in.
    drawn = [x for x in await renders(scene) if x["series"] > 0]
    assert drawn and all(x["refIds"] == ["A", "B", "C"] and x["series"] == 6 for x in drawn), drawn[:3]
    no_page_errors(scene)


async def test_interleaved_labelled_series_draw_without_null_cells(scene: Page, scenes_server: LiveServer) -> None:
    """Line protocol of two hosts at different times, and JSON fields arriving apart: no null inside a span."""
    base = scenes_server.url
    now = int(time.time() * 1000)
    suffix = f"{now % 1_000_000}"
    lines = []
    hist: list[dict[str, Any]] = []
    for i in range(40, 0, -1):  # history: hosts interleaved 250 ms apart
        t = now - i * 500
        lines.append(f"cpu,host=a usage={i % 7 + 10} {t * 1_000_000}")
        lines.append(f"cpu,host=b usage={i % 5 + 20} {(t + 250) * 1_000_000}")
        hist.append({"time": t, "temp": 20 + i % 3} if i % 2 else {"time": t, "hum": 40 + i % 4})
    post(f"{base}/api/push/lp{suffix}", "\n".join(lines).encode(), "text/plain")
    post(f"{base}/api/push/json{suffix}", json.dumps(hist).encode(), "application/json")
    await start(scene, scenes_server, [
        {"channel": f"lp{suffix}/cpu"},
        {"channel": f"json{suffix}", "alias": "{{field}} ({{channel}})"},
    ])
    await wait_render(scene, "r.refIds.length === 2 && r.rows[0] >= 80")
    # Live: more interleaved points.
    for k in range(6):
        t = int(time.time() * 1000)
        post(f"{base}/api/push/lp{suffix}", f"cpu,host={'ab'[k % 2]} usage={k} {t * 1_000_000}".encode(), "text/plain")
        post(f"{base}/api/push/json{suffix}", json.dumps({"time": t, ("temp" if k % 2 else "hum"): k}).encode(),
             "application/json")
        await asyncio.sleep(0.15)
    last = await wait_render(scene, "r.rows[0] >= 86 && r.rows[1] >= 46", since=0)
    # Two frames with different names: Grafana puts the frame (channel) name first.
    assert last["names"] == [f"lp{suffix}/cpu usage a", f"lp{suffix}/cpu usage b",
                             f"hum (json{suffix})", f"temp (json{suffix})"]
    assert last["undefinedCells"] > 80  # the rows are interleaved: each has the other series' cell empty
    for r in await renders(scene):
        assert r["nullsInSpan"] == 0, r
    no_page_errors(scene)


async def test_range_change_never_renders_fewer_series(scene: Page, scenes_server: LiveServer) -> None:
    await start(scene, scenes_server, THREE_QUERIES)
    await wait_render(scene, "r.refIds.length === 3 && r.rows.every((n) => n > 100)")
    # maxDataPoints is 1000 (scenes/main.tsx): 50 ms points over these ranges come as buckets
    # (issue 20), two rows each: 5 min in 500 ms buckets; 4 min keeps that width (the rows held
    # are resumed); 2 min needs narrower ones (200 ms) and 15 min wider ones (1 s): both start over.
    for frm, resumes in (("now-5m", False), ("now-4m", True), ("now-2m", False), ("now-15m", False)):
        n: int = await scene.evaluate("window.scenes.renderCount()")
        subscribes_before = len(await scene.evaluate("window.scenes.sent('subscribe')"))
        start_ms = int(time.time() * 1000) - int(frm.removeprefix("now-").removesuffix("m")) * 60_000
        await scene.evaluate("(f) => window.scenes.setRange(f)", frm)
        # The new range's history arrives: every series starts at the range's start (a bucket's
        # width, or the rows trimmed to the range) and no panel has more rows than buckets allow.
        await wait_render(
            scene,
            f"r.spans.every(([lo]) => lo !== null && Math.abs(lo - {start_ms}) < 5000)"
            " && r.rows.every((n) => n > 200 && n <= 2 * 1000 + 4)",
            within_ms=15_000,
        )
        after = await renders(scene, n)
        assert after
        for r in after:
            assert r["refIds"] == ["A", "B", "C"] and r["series"] == 6, (frm, r)
            assert r["names"] == THREE_NAMES
        subs = (await scene.evaluate("window.scenes.sent('subscribe')"))[subscribes_before:]
        # One subscription per query (not one started and ended at once: see panel.ts).
        assert len(subs) == 3, [(s["id"], s["at"], s.get("from"), s.get("since")) for s in subs]
        # A resume names the rows' width; its `from` is only for a lost position (protocol.md).
        assert all(("since" in s) == resumes and "from" in s and "resolution_ms" in s for s in subs), subs
    no_page_errors(scene)


async def test_refresh_keeps_the_rows_and_resumes(scene: Page, scenes_server: LiveServer) -> None:
    await start(scene, scenes_server, THREE_QUERIES[:2])
    first = await wait_render(scene, "r.refIds.length === 2 && r.rows.every((n) => n > 0)")
    # Backfill: the first render already spans (nearly) the whole minute.
    for lo, hi in first["spans"]:
        assert hi - lo >= 55_000, first["spans"]
    before = await wait_render(scene, "r.rows.every((n) => n >= 1100)")
    subscribes = await scene.evaluate("window.scenes.sent('subscribe')")
    assert [("from" in s, "since" in s) for s in subscribes] == [(True, False)] * 2
    n: int = await scene.evaluate("window.scenes.renderCount()")
    await scene.click('[data-testid="data-testid RefreshPicker run button"]')
    await wait_render(scene, f"r.spans.every(([, hi], i) => hi > {max(hi for _, hi in before['spans'])})")
    resumed = (await scene.evaluate("window.scenes.sent('subscribe')"))[2:]
    # Only what came after the rows held: `since`. Buckets (maxDataPoints 1000 over a minute of
    # 50 ms points: 100 ms wide) resume at the width held, with `from` only for a lost position
    # (protocol.md).
    assert len(resumed) == 2 and all("since" in s for s in resumed), resumed
    assert all(s["resolution_ms"] == 100 and "max_points" not in s for s in resumed), resumed
    after = await renders(scene, n)
    for r in after:
        # The buffer stays: no render after the refresh starts over or drops a query.
        assert r["refIds"] == ["A", "B"], r
        assert min(r["rows"]) >= min(before["rows"]) - 50, (before["rows"], r["rows"])
    no_page_errors(scene)


async def test_screenshot_for_the_readme(scene: Page, scenes_server: LiveServer) -> None:
    """The README's picture of the panel (to LIVEDATA_SCREENSHOT=path, else test-results/)."""
    target = os.environ.get("LIVEDATA_SCREENSHOT")
    await scene.set_viewport_size({"width": 900, "height": 470})
    await start(scene, scenes_server, THREE_QUERIES, title="livedata: three queries", height=400)
    await wait_render(scene, "r.refIds.length === 3 && r.rows.every((n) => n > 1000)")
    await scene.wait_for_function("(n) => window.scenes.legend().length === n", arg=len(THREE_NAMES))
    await asyncio.sleep(0.5)
    shot = await scene.screenshot(type="png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    path = Path(target) if target else RESULTS / "scenes-panel.png"
    await scene.screenshot(type="png", path=str(path))
    no_page_errors(scene)
