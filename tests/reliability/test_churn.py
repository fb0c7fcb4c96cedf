"""Churn: 10,000 connect / subscribe / disconnect cycles leave no trace on the server."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path

import aiohttp

from tests.conftest import LiveServer, gauge


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert m
    return int(m.group(1))


async def cycles(url: str, n: int, concurrency: int = 16) -> None:
    rng = random.Random(n)
    channels = ["random-walk", "sine", "churn/pushed"]
    todo = iter(range(n))

    async def worker(s: aiohttp.ClientSession) -> None:
        for i in todo:
            kind = i % 3
            if kind == 0:
                async with s.ws_connect(f"{url}/api/ws") as ws:
                    await ws.send_json({"type": "subscribe", "id": "A", "channel": rng.choice(channels),
                                        "from": "now-1s", "interval": rng.choice([0, 100])})
                    await ws.receive()  # hello
                    await ws.receive()  # the schema packet
            elif kind == 1:
                async with s.get(f"{url}/api/stream", params={"channel": rng.choice(channels)}) as r:
                    await r.content.readline()
            else:
                async with s.get(f"{url}/?numSeries={rng.randint(1, 5)}") as r:
                    await r.content.readline()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


async def test_10000_cycles_leave_rss_and_tasks_at_baseline() -> None:
    server = LiveServer(["--max-connections-per-ip", "100000"]).start()
    try:
        assert server.proc is not None
        url = server.url
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/api/push/churn/pushed", json={"v": 1}) as r:
                assert r.status == 204
            await cycles(url, 1_500)  # warm up: generators, caches, allocator arenas
            await asyncio.sleep(1.0)
            base_rss = rss_kib(server.proc.pid)
            base_tasks = await gauge(s, url, "livedata_asyncio_tasks")
            await cycles(url, 10_000)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                tasks = await gauge(s, url, "livedata_asyncio_tasks")
                conns = await gauge(s, url, "livedata_connections_open")
                if tasks <= base_tasks and conns == 0:
                    break
                await asyncio.sleep(0.2)
            rss = rss_kib(server.proc.pid)
            assert conns == 0
            assert await gauge(s, url, "livedata_subscriptions") == 0
            assert tasks <= base_tasks, f"tasks {tasks} > baseline {base_tasks}"
            assert rss <= base_rss * 1.05, f"RSS grew from {base_rss} KiB to {rss} KiB"
    finally:
        server.stop()
