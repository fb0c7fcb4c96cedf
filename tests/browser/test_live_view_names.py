"""The live view with channel names producers send: Unicode, spaces, commas, '%' (real Chromium)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, quote, urlparse

from playwright.async_api import Page

from livedata.core.names import channel_path
from tests.browser.conftest import http_json
from tests.conftest import LiveServer

UNICODE = "lv/température, ünïcødé 🌡️"
PERCENT = "lv/100% c,pu"


def push(url: str, name: str, points: list[dict[str, object]]) -> None:
    http_json("POST", f"{url}/api/push/{channel_path(name)}", points)


def rows_of(channel: str, at_least: int = 1) -> str:
    return f"() => {{ const c = window.__livedata?.channel({channel!r}); return !!c && c.rows >= {at_least}; }}"


async def test_unicode_and_comma_names_are_listed_drawn_and_kept_in_the_url(page: Page, server: LiveServer) -> None:
    now = int(time.time() * 1000)
    push(server.url, UNICODE, [{"time": now - 1000 + i * 100, "temp": 20 + i} for i in range(10)])
    push(server.url, PERCENT, [{"time": now - 1000 + i * 100, "load": i} for i in range(5)])

    await page.goto(f"{server.url}/?channel={quote(UNICODE)}")
    await page.wait_for_function(rows_of(UNICODE, 10), timeout=5000)
    assert await page.evaluate("window.__livedata.selected") == [UNICODE]
    title = page.locator(".panel", has_text="température")
    assert await title.count() == 1

    item = page.locator("#channels li", has_text="100% c,pu")
    await item.wait_for(timeout=5000)
    await item.locator("input[type=checkbox]").check()
    await page.wait_for_function(rows_of(PERCENT, 5), timeout=5000)
    assert await page.evaluate("window.__livedata.selected") == [UNICODE, PERCENT]
    query = parse_qs(urlparse(page.url).query)
    assert query["channel"] == [UNICODE, PERCENT]  # one parameter per name: the comma stays in its name

    await page.reload()
    await page.wait_for_function(rows_of(PERCENT, 5), timeout=5000)
    assert await page.evaluate("window.__livedata.selected") == [UNICODE, PERCENT]
    push(server.url, UNICODE, [{"time": int(time.time() * 1000), "temp": 42.5}])
    await page.wait_for_function(rows_of(UNICODE, 11), timeout=5000)
    errors: list[str] = page.errors.messages  # type: ignore[attr-defined]
    assert not errors, errors
