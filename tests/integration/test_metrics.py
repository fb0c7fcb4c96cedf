"""``GET /metrics`` counters move with real traffic: published, delivered, push errors, slow disconnects."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.conftest import LiveServer
from tests.integration.test_ingest import open_ws, subscribed

TOKEN = "metrics-writer"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--max-body-bytes", "4000", "--write-tokens", TOKEN, "--buffer-bytes", "4096"]).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    out: dict[str, float] = {}
    for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def test_points_published_and_delivered(server: LiveServer, http: aiohttp.ClientSession) -> None:
    w1 = await open_ws(http, server.url)
    w2 = await open_ws(http, server.url)
    s1 = await subscribed(w1, "A", "met/a")
    s2 = await subscribed(w2, "A", "met/a")
    before = await metrics(http, server.url)
    t0 = time.time_ns() // 1_000_000
    async with http.post(f"{server.url}/api/push/met/a", json={"time": [t0, t0 + 1, t0 + 2], "v": [1, 2, 3]},
                         headers=AUTH) as r:
        assert r.status == 204
    await w1.until(lambda: len(s1.rows) == 3)
    await w2.until(lambda: len(s2.rows) == 3)
    after = await metrics(http, server.url)
    key = 'livedata_points_published_total{channel="met/a"}'
    assert after[key] - before.get(key, 0) == 3
    key = 'livedata_points_delivered_total{channel="met/a"}'
    assert after[key] - before.get(key, 0) == 6  # two subscribers
    rounds = after["livedata_round_seconds_count"] - before.get("livedata_round_seconds_count", 0)
    assert rounds >= 1  # the push went out in (at least) one delivery round of the feed
    assert after['livedata_round_seconds_bucket{le="+Inf"}'] == after["livedata_round_seconds_count"]
    assert after["livedata_subscriptions"] >= 2
    await w1.ws.close()
    await w2.ws.close()


async def test_push_errors_by_reason(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async def send(channel: str, body: bytes, ctype: str = "application/json", auth: bool = True) -> int:
        async with http.post(f"{server.url}/api/push/{channel}", data=body,
                             headers={"Content-Type": ctype, **(AUTH if auth else {})}) as r:
            return r.status

    assert await send("met/e", b'{"v":1}') == 204
    before = await metrics(http, server.url)
    cases = {
        "auth": (await send("met/e", b'{"v":1}', auth=False), 401),
        "schema": (await send("met/e", b'{"v":"x"}'), 400),
        "size": (await send("met/e", b"[" + b'{"v":1},' * 600 + b'{"v":1}]'), 413),
        "points": (await send("met/e", b'[{"v":[]}]'), 400),
        "json": (await send("met/e", b"{oops"), 400),
        "lineprotocol": (await send("met/e", b"m v=", "text/plain"), 400),
        "channel": (await send("bad%00name", b'{"v":1}'), 400),
    }
    for reason, (got, want) in cases.items():
        assert got == want, reason
    after = await metrics(http, server.url)
    for reason in cases:
        key = f'livedata_push_errors_total{{reason="{reason}"}}'
        assert after[key] - before.get(key, 0) == 1, reason


def _raw_ws_subscribe(port: int, channel: str) -> socket.socket:
    """A WebSocket that subscribes and then never reads, with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    payload = json.dumps({"type": "subscribe", "id": "S", "channel": channel}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


async def test_slow_disconnects(server: LiveServer, http: aiohttp.ClientSession) -> None:
    before = (await metrics(http, server.url)).get("livedata_slow_disconnects_total", 0)
    sock = _raw_ws_subscribe(server.port, "met/slow")
    try:
        await asyncio.sleep(0.3)
        t0 = time.time_ns() // 1_000_000
        deadline = time.monotonic() + 20
        i = 0
        while time.monotonic() < deadline:
            body = {"time": [t0 + i * 100 + k for k in range(100)], "v": ["x" * 20] * 100}
            i += 1
            async with http.post(f"{server.url}/api/push/met/slow", json=body, headers=AUTH) as r:
                assert r.status == 204
            if i % 20 == 0:
                m = await metrics(http, server.url)
                if m.get("livedata_slow_disconnects_total", 0) > before:
                    break
        m = await metrics(http, server.url)
        assert m["livedata_slow_disconnects_total"] - before == 1
    finally:
        sock.close()
