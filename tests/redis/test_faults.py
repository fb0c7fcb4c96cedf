"""Redis going away under a real ``livedata serve``: clear errors, notices, no gap, durable with AOF."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from benchmarks.redis_server import RedisServer

from tests.conftest import LiveServer
from tests.integration.wsclient import Points, collect


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True, fsync="always").start()
    yield server
    server.close()


@pytest.fixture
def served(aof_redis: RedisServer) -> Iterator[LiveServer]:
    s = LiveServer(["--broker", aof_redis.url]).start()
    yield s
    s.stop()


@asynccontextmanager
async def ws(server: LiveServer) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.url + "/api/ws") as sock:
        assert json.loads((await sock.receive(timeout=5)).data)["type"] == "hello"
        yield sock


async def push(server: LiveServer, channel: str, rows: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.post(f"{server.url}/api/push/{channel}", json=rows) as r:
            body = await r.json() if r.status != 204 else {}
            assert time.monotonic() - t0 < 5, "a push must not hang while Redis is away"
            return r.status, body


async def healthy(server: LiveServer) -> bool:
    async with aiohttp.ClientSession() as s, s.get(server.url + "/api/health") as r:
        return r.status == 200


def notices(pts: Points, level: str) -> list[dict[str, Any]]:
    return [m for m in pts.of_type("notice") if m.get("level") == level]


async def test_redis_stops_mid_stream_then_returns_without_gap(aof_redis: RedisServer, served: LiveServer) -> None:
    base = time.time_ns() // 1_000_000 - 60_000
    stored: list[int] = []
    t = base

    async def push_some(n: int) -> list[int]:
        nonlocal t
        statuses = []
        for _ in range(n):
            t += 1
            status, body = await push(served, "f/x", [{"time": t, "v": float(t - base)}])
            statuses.append(status)
            if status == 204:
                stored.append(t)
            else:
                assert status == 503, body
                assert "broker" in body["error"] and "Redis" in body["error"] and "nothing was stored" in body["error"]
        return statuses

    await push_some(5)
    async with ws(served) as sock:
        await sock.send_json({"type": "subscribe", "id": "S", "channel": "f/x", "from": base})
        pts = Points()
        await collect(sock, pts, 5, until=lambda p: len(p.rows["S"]) >= 5)
        await push_some(20)
        aof_redis.stop()
        assert set(await push_some(5)) == {503}
        await collect(sock, pts, 8, until=lambda p: bool(notices(p, "warning")))
        assert notices(pts, "warning"), "subscribers are told the broker is away"
        assert "unreachable" in notices(pts, "warning")[0]["text"]
        assert await healthy(served)
        aof_redis.start()
        deadline = time.monotonic() + 10
        while 503 in await push_some(1):
            assert time.monotonic() < deadline, "pushes work again once Redis is back"
            await asyncio.sleep(0.1)
        await push_some(20)
        await collect(sock, pts, 10, until=lambda p: len(p.rows["S"]) >= len(stored) and bool(notices(p, "info")))
        assert pts.times("S") == stored, "every stored point once, in order: no gap at the outage"
        assert notices(pts, "info") and "back" in notices(pts, "info")[0]["text"]
        assert not pts.of_type("error")
    # A reader that joins now sees the same history.
    async with ws(served) as sock:
        await sock.send_json({"type": "subscribe", "id": "H", "channel": "f/x", "from": base, "to": t})
        later = Points()
        await collect(sock, later, 5, until=lambda p: bool(p.of_type("complete")))
        assert later.times("H") == stored


async def test_history_survives_kill_9_with_aof_always(aof_redis: RedisServer, served: LiveServer) -> None:
    base = time.time_ns() // 1_000_000 - 30_000
    want = []
    for i in range(30):
        rows = [{"time": base + i * 10 + k, "v": 1.0} for k in range(3)]
        status, _ = await push(served, "f/durable", rows)
        assert status == 204
        want += [r["time"] for r in rows]
    aof_redis.kill9()
    aof_redis.start()
    # The same server reconnects by itself; a new subscriber gets everything acknowledged before.
    deadline = time.monotonic() + 10
    while True:
        async with ws(served) as sock:
            await sock.send_json({"type": "subscribe", "id": "H", "channel": "f/durable",
                                  "from": base, "to": base + 1000})
            pts = Points()
            await collect(sock, pts, 5, until=lambda p: bool(p.of_type("complete") or p.of_type("error")))
        if pts.of_type("complete") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert pts.times("H") == want
