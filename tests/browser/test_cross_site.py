"""A page of another origin, in a real Chromium, tries to write to and read from a local livedata
(issue 16): fetch push with each simple content type, a form POST, a WebSocket publish, and
/metrics. All are refused, and the server (asked afterwards) stored nothing. The same page
against a server that allows its origin gets through: the test can tell the two apart.

The attacker's page is served by a second local HTTP server on another port: another origin.
Served as ``localhost`` it is another site as well (Sec-Fetch-Site: cross-site); as
``127.0.0.1`` it is the same site on another port (same-site, but a foreign Origin)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.conftest import LiveServer, free_port

ATTACK = """<!doctype html><meta charset="utf-8"><title>not evil at all</title>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" target="sink" enctype="text/plain"><input name="formpush v" value="1"></form>
<script>
const target = new URL(location.href).searchParams.get("target");
const wsTarget = target.replace(/^http/, "ws");
const tag = new URL(location.href).searchParams.get("tag");
window.results = {};
async function attempt(name, fn) {
  try { window.results[name] = await fn(); } catch (e) { window.results[name] = "error: " + e; }
}
(async () => {
  const bodies = {
    "text/plain": "m v=1",
    "application/x-www-form-urlencoded": "m v=1",
    "multipart/form-data; boundary=b":
      '--b\\r\\nContent-Disposition: form-data; name="m v"\\r\\n\\r\\n1\\r\\n--b--\\r\\n',
  };
  let i = 0;
  for (const [ctype, body] of Object.entries(bodies)) {
    const channel = `${tag}/fetch${i++}`;
    // no-cors: the page cannot read the answer, but the request is sent: the attack
    await attempt(`no-cors ${ctype}`, async () => (await fetch(`${target}/api/push/${channel}`, {
      method: "POST", mode: "no-cors", headers: {"Content-Type": ctype}, body})).type);
  }
  await attempt("cors json", async () => (await fetch(`${target}/api/push/${tag}/json`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: '{"v":1}'})).status);
  // DELETE is not a simple method: the browser asks first (a CORS preflight)
  await attempt("delete", async () => (await fetch(`${target}/api/channels/${tag}/keep`, {method: "DELETE"})).status);
  await attempt("metrics", async () => (await (await fetch(`${target}/metrics`)).text()).slice(0, 40));
  await attempt("channels", async () => (await (await fetch(`${target}/api/channels`)).text()).slice(0, 40));
  await attempt("form", () => new Promise((resolve) => {
    const form = document.getElementById("form");
    form.action = `${target}/api/push/${tag}/form`;
    document.querySelector("iframe").addEventListener("load", () => resolve("loaded"), {once: true});
    form.submit();
    setTimeout(() => resolve("timeout"), 3000);
  }));
  await attempt("websocket", () => new Promise((resolve) => {
    const ws = new WebSocket(`${wsTarget}/api/ws`);
    ws.onopen = () => ws.send(JSON.stringify({type: "publish", channel: `${tag}/ws`, points: {v: 1}, ack: "a"}));
    ws.onmessage = (e) => { if (JSON.parse(e.data).type === "ack") { resolve("published"); ws.close(); } };
    ws.onclose = (e) => resolve(`closed ${e.code}`);
    setTimeout(() => resolve("timeout"), 3000);
  }));
  window.done = true;
})();
</script>"""


@pytest.fixture
async def attacker() -> AsyncIterator[int]:
    """The other origin: an HTTP server of its own on another port, serving the page above."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


def text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def get_json(url: str) -> Any:
    return json.loads(text(url))


def names(url: str) -> set[str]:
    return {c["name"] for c in get_json(f"{url}/api/channels")["channels"]}


def push(url: str, channel: str) -> None:
    req = urllib.request.Request(f"{url}/api/push/{channel}", data=b'{"v":1}', method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204


async def run_attack(page: Page, page_host: str, attacker: int, target: str, tag: str) -> dict[str, str]:
    await page.goto(f"http://{page_host}:{attacker}/?target={target}&tag={tag}")
    await page.wait_for_function("() => window.done === true", timeout=20_000)
    results: dict[str, str] = await page.evaluate("() => window.results")
    return results


@pytest.mark.parametrize("page_host", ["localhost", "127.0.0.1"])  # cross-site; same site, other port
async def test_a_foreign_page_can_neither_write_nor_read(page: Page, attacker: int, page_host: str) -> None:
    server = LiveServer().start()
    try:
        push(server.url, "xsb/keep")
        results = await run_attack(page, page_host, attacker, server.url, "xsb")
        # what the page saw: opaque answers (no-cors), failed reads, a refused socket
        assert results["cors json"].startswith("error: TypeError"), results
        assert results["metrics"].startswith("error: TypeError"), results
        assert results["channels"].startswith("error: TypeError"), results
        assert results["delete"].startswith("error: TypeError"), results  # the preflight was refused
        assert results["websocket"] == "closed 1006", results
        # what the server stored: nothing, and deleted nothing
        stored = names(server.url)
        assert not {n for n in stored if n.startswith("xsb/") and n != "xsb/keep"}, stored
        assert "xsb/keep" in stored
        metrics = text(f"{server.url}/metrics")
        published = re.findall(r'^livedata_points_published_total\{channel="(xsb/[^"]*)"', metrics, re.M)
        assert published == ["xsb/keep"], published
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log


async def test_the_same_page_gets_through_when_its_origin_is_allowed(page: Page, attacker: int) -> None:
    """The control: with the page's origin in --cors-origin, the same requests store data, so the
    test above fails if the server stops refusing."""
    server = LiveServer(["--cors-origin", f"http://localhost:{attacker}"]).start()
    try:
        push(server.url, "ok/keep")
        results = await run_attack(page, "localhost", attacker, server.url, "ok")
        assert results["cors json"] == 204, results
        assert results["delete"] == 204, results
        assert results["websocket"] == "published", results
        assert results["metrics"].startswith("# HELP"), results
        stored = names(server.url)
        assert {"ok/fetch0/m", "ok/fetch1/m", "ok/json", "ok/ws", "ok/form/formpush"} <= stored, (stored, results)
        assert "ok/keep" not in stored  # the DELETE went through too
    finally:
        server.stop()
