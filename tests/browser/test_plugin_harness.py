"""The BUILT Grafana plugin (grafana-plugin/dist/module.js) running ``query()`` in Chromium.

The harness page (grafana-plugin/harness/, built into dist-harness/) plays Grafana's shell: it
provides the real ``@grafana/data`` and ``rxjs`` to a tiny AMD loader, loads the shipped module.js
and constructs the ``DataSource`` with instance settings pointing at a real ``livedata serve``.
The test serves the harness itself from a tiny static HTTP server of its own (another origin,
allowed with ``--cors-origin``), so the product server needs no test route.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import HARNESS_DIR, PLUGIN_MODULE, metrics
from tests.conftest import LiveServer


class HarnessFiles(SimpleHTTPRequestHandler):
    """dist-harness/ at ``/``, the built plugin (dist/) at ``/plugin/``."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if path.startswith("/plugin/"):
            return str(PLUGIN_MODULE.parent / path.removeprefix("/plugin/"))
        return super().translate_path(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def harness_origin(harness_built: None) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(HarnessFiles, directory=str(HARNESS_DIR)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def harness_server(harness_origin: str) -> Iterator[LiveServer]:
    s = LiveServer(["--cors-origin", harness_origin]).start()
    yield s
    s.stop()


@pytest.fixture
async def harness(page: Page, harness_server: LiveServer, harness_origin: str) -> Page:
    """The harness page, its plugin loaded, with one data source (index 0) for the server."""
    await page.goto(f"{harness_origin}/index.html")
    await page.evaluate("() => window.harness.ready")
    assert await page.evaluate("window.harness.loaded"), await page.evaluate("window.harness.error")
    await page.evaluate("(url) => window.harness.createDataSource({ url, throttleMs: 100 })", harness_server.url)
    return page


async def run(page: Page, target: dict[str, Any], frm: str = "now-1m") -> int:
    rid: int = await page.evaluate(
        "([t, f]) => window.harness.run(0, [t], { from: f, to: 'now' })", [target, frm]
    )
    return rid


async def wait_rows(page: Page, rid: int) -> dict[str, Any]:
    try:
        await page.wait_for_function(
            "(r) => { const e = window.harness.last(r); return !!e && e.rows > 0 && e.state === 'Streaming'; }",
            arg=rid,
            timeout=5000,
        )
    except PlaywrightTimeout:
        state = await page.evaluate("(r) => JSON.stringify(window.harness.last(r) ?? null)", rid)
        raise AssertionError(f"no streaming rows within 5 s; the query's last state: {state}") from None
    last: dict[str, Any] = await page.evaluate("(r) => window.harness.last(r)", rid)
    return last


async def wait_metric(url: str, name: str, value: float, within_s: float = 5.0) -> dict[str, float]:
    """Poll ``/metrics`` until ``name`` is ``value`` (or the time is up); returns the last scrape."""
    deadline = time.monotonic() + within_s
    while True:
        m = await asyncio.to_thread(metrics, url)
        if m.get(name) == value or time.monotonic() > deadline:
            return m
        await asyncio.sleep(0.1)


async def test_frames_arrive(harness: Page) -> None:
    rid = await run(harness, {"channel": "random-walk"}, "now-10s")
    first = await wait_rows(harness, rid)
    assert first["rows"] >= 150  # the 10 s backfill at 50 ms
    assert first["lastTime"] - first["firstTime"] >= 9000
    await harness.wait_for_timeout(500)
    later = await harness.evaluate("(r) => window.harness.last(r)", rid)
    assert later["lastTime"] > first["lastTime"]
    assert later["error"] is None
    assert (await harness.evaluate("window.harness.sent('subscribe')"))[0]["channel"] == "random-walk"


async def data_messages(page: Page) -> int:
    """``data`` messages the page received so far, every socket and subscription."""
    received: dict[str, int] = await page.evaluate("window.harness.received()")
    return sum(n for key, n in received.items() if key.startswith("data:"))


async def test_repaints_are_throttled(harness: Page, harness_server: LiveServer) -> None:
    # 100 points/s, each sent at once (interval 0): without the throttle, up to 100 emissions/s.
    # A 300 ms throttle (at most 3.3 emissions/s) stays well below what the server sends even on a
    # loaded machine, where the generator's ticks coalesce (12-19 messages/s seen at load 17 on 2
    # cores; at 100 ms the two rates met and the test could not tell).
    ds = await harness.evaluate("(url) => window.harness.createDataSource({ url, throttleMs: 300 })",
                                harness_server.url)
    rid: int = await harness.evaluate(
        "([ds, t]) => window.harness.run(ds, [t], { from: 'now-5s', to: 'now' })",
        [ds, {"channel": "random-walk", "params": {"interval": 10}, "interval": 0}],
    )
    await wait_rows(harness, rid)
    await harness.wait_for_timeout(700)
    n0 = await harness.evaluate("(r) => window.harness.count(r)", rid)
    raw0 = await data_messages(harness)
    t0 = time.monotonic()
    await harness.wait_for_timeout(4000)
    n1 = await harness.evaluate("(r) => window.harness.count(r)", rid)
    raw1 = await data_messages(harness)
    secs = time.monotonic() - t0
    rate = (n1 - n0) / secs
    raw_rate = (raw1 - raw0) / secs
    print(f"throttle: {rate:.1f} emissions/s, {raw_rate:.1f} server messages/s")
    assert 1.5 <= rate <= 4.5, f"{rate:.1f} emissions/s at a 300 ms throttle"
    assert raw_rate >= 2 * rate, f"the server sent only {raw_rate:.1f} messages/s: the throttle was not tested"


async def test_query_change_restarts_the_subscription(harness: Page, harness_server: LiveServer) -> None:
    a = await run(harness, {"channel": "random-walk"})
    await wait_rows(harness, a)
    await harness.evaluate("(r) => window.harness.stop(r)", a)
    b = await run(harness, {"channel": "sine", "params": {"period": 2000}})
    first_b = await wait_rows(harness, b)
    assert not first_b["sync"]  # nothing cached for the new query: it waits for the server
    subscribes = await harness.evaluate("window.harness.sent('subscribe')")
    assert [s["channel"] for s in subscribes] == ["random-walk", "sine"]
    assert subscribes[1]["params"] == {"period": 2000}
    assert "since" not in subscribes[1] and isinstance(subscribes[1]["from"], int)
    unsubscribes = await harness.evaluate("window.harness.sent('unsubscribe')")
    assert [u["id"] for u in unsubscribes] == [subscribes[0]["id"]]
    # On the server: exactly the new subscription is open, on the same socket.
    m = await wait_metric(harness_server.url, "livedata_subscriptions", 1.0)
    assert m["livedata_subscriptions"] == 1.0
    assert m["livedata_connections_open"] == 1.0


async def test_refresh_reuses_the_cache(harness: Page) -> None:
    target = {"channel": "random-walk", "params": {"series": 2}}
    a = await run(harness, target)
    await wait_rows(harness, a)
    await harness.wait_for_timeout(1000)
    await harness.evaluate("(r) => window.harness.stop(r)", a)
    last_a = await harness.evaluate("(r) => window.harness.last(r)", a)
    cache = await harness.evaluate("window.harness.cache(0)")
    assert len(cache) == 1 and cache[0]["position"] and not cache[0]["active"]

    b = await run(harness, target)
    first_b = (await harness.evaluate("(r) => window.harness.emissions(r)", b))[0]
    # At once, with the old rows: right after subscribe() (not inside it, where Grafana's request
    # runner would start the query twice: see src/panel.ts), before any server message.
    assert first_b["sync"] is False and first_b["messages"] == 0, first_b
    # (The cached frame may hold a few rows more than run A's last, throttled, emission.)
    assert first_b["rows"] >= last_a["rows"] - 50
    assert last_a["lastTime"] <= first_b["lastTime"] < last_a["lastTime"] + 1000
    assert first_b["firstTime"] <= last_a["lastTime"] - 55_000
    subscribes = await harness.evaluate("window.harness.sent('subscribe')")
    assert len(subscribes) == 2
    assert subscribes[1]["since"] == cache[0]["position"]
    # The harness asks with maxDataPoints 1000 and intervalMs 1000 (harness/main.ts): 1 s buckets,
    # resumed at that width; `from` is there only for a lost position (protocol.md, buckets).
    assert subscribes[0]["resolution_ms"] == 1000 and subscribes[0]["max_points"] == 1000
    assert subscribes[1]["resolution_ms"] == 1000 and "max_points" not in subscribes[1]
    # ...and it goes on from there.
    await harness.wait_for_function(
        f"(r) => window.harness.last(r).lastTime > {last_a['lastTime']}", arg=b, timeout=3000
    )


async def test_socket_closes_after_unsubscribe(harness: Page, harness_server: LiveServer) -> None:
    rid = await run(harness, {"channel": "random-walk"})
    await wait_rows(harness, rid)
    m = await wait_metric(harness_server.url, "livedata_connections_open", 1.0)
    assert m["livedata_connections_open"] == 1.0
    await harness.evaluate("(r) => window.harness.stop(r)", rid)
    m = await wait_metric(harness_server.url, "livedata_connections_open", 0.0)
    assert m["livedata_connections_open"] == 0.0, m
    assert m["livedata_subscriptions"] == 0.0
    sockets = await harness.evaluate("window.harness.sockets()")
    assert len(sockets) == 1 and sockets[0]["readyState"] == 3  # CLOSED
