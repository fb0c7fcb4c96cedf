"""Delivery under faults, on every broker, against real servers.

1. 1,000 random cycles of publish / kill the reader's connection (RST, no close frame) / resume
   with ``since``: every point exactly once, in order.
2. ``kill -9`` of ``livedata serve`` on Redis and on a data directory: the Python client
   reconnects to a restarted server and resumes without a gap.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from benchmarks.redis_server import RedisServer

from livedata.client import Client, Frame
from tests.conftest import LiveServer

_serial = iter(range(1, 1 << 30))


@pytest.fixture(params=["memory", "redis", "disk"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    args: list[str] = []
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        args = ["--broker", redis.url, "--redis-prefix", f"rel{os.getpid()}-{next(_serial)}:"]
    elif request.param == "disk":
        args = ["--data-dir", str(tmp_path / "data")]
    live = LiveServer(args).start()
    yield live
    live.stop()


class Reader:
    def __init__(self) -> None:
        self.values: list[int] = []
        self.position: str | None = None
        self.last_time: int | None = None

    def take(self, m: dict[str, Any]) -> None:
        if m["type"] != "data":
            assert m["type"] in ("hello", "heartbeat"), m
            return
        times, values = m["frame"]["data"]["values"]
        if not m.get("late"):
            for t in times:
                assert self.last_time is None or t >= self.last_time, "points went backwards"
                self.last_time = t
        self.values.extend(values)
        if m.get("position"):
            self.position = m["position"]


async def test_1000_cycles_of_publish_kill_resume_deliver_every_point_once(server: LiveServer) -> None:
    rng = random.Random(11)
    url, channel = server.url, f"faults/cycles{next(_serial)}"
    t0 = time.time_ns() // 1_000_000 - 60_000
    published: list[int] = []
    reader = Reader()
    async with aiohttp.ClientSession() as s:

        async def publish(n: int) -> None:
            start = len(published)
            values = list(range(start, start + n))
            async with s.post(f"{url}/api/push/{channel}",
                              json={"time": [t0 + v for v in values], "v": values}) as r:
                assert r.status == 204, await r.text()
            published.extend(values)

        await publish(1)
        for _ in range(1000):
            ws = await s.ws_connect(f"{url}/api/ws", max_msg_size=0)
            sub: dict[str, Any] = {"type": "subscribe", "id": "A", "channel": channel}
            if reader.position is None:
                sub["from"] = 0
            else:
                sub["since"] = reader.position
            await ws.send_json(sub)
            if rng.random() < 0.7:
                await publish(rng.randint(1, 4))
            for _ in range(rng.randint(0, 4)):  # read a little, maybe not everything
                try:
                    msg = await ws.receive(timeout=0.02)
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                reader.take(msg.json())
            ws._conn.transport.abort()  # type: ignore[union-attr]  # RST: no close frame
            await ws.close()
        # a last, patient reader gets the rest
        async with s.ws_connect(f"{url}/api/ws", max_msg_size=0) as ws:
            await ws.send_json({"type": "subscribe", "id": "A", "channel": channel, "since": reader.position})
            deadline = time.monotonic() + 20
            while len(reader.values) < len(published) and time.monotonic() < deadline:
                reader.take(await ws.receive_json(timeout=20))
    assert reader.values == published


@pytest.mark.parametrize("store", ["redis", "disk"])
def test_kill_9_the_client_resumes_on_a_restarted_server(store: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    if store == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        args = ["--broker", redis.url, "--redis-prefix", f"k9{os.getpid()}:"]
    else:
        args = ["--data-dir", str(tmp_path / "data")]
    server = LiveServer(args).start()
    channel = "faults/kill9"

    async def run() -> list[int]:
        got: list[int] = []
        t0 = time.time_ns() // 1_000_000 - 30_000
        async with aiohttp.ClientSession() as s:

            async def publish(values: list[int]) -> None:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        async with s.post(f"{server.url}/api/push/{channel}",
                                          json={"time": [t0 + v for v in values], "v": values}) as r:
                            assert r.status == 204
                            return
                    except aiohttp.ClientConnectionError:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.1)

            await publish(list(range(0, 50)))
            async with Client(server.url) as client:
                sub = await client.subscribe(channel, from_=0)

                async def consume() -> None:
                    async for item in sub:
                        if isinstance(item, Frame):
                            got.extend(int(v) for v in item.fields["v"] if v is not None)  # type: ignore[arg-type]
                            if len(got) >= 150:
                                return

                task = asyncio.create_task(consume())
                await asyncio.sleep(0.5)
                await publish(list(range(50, 100)))
                await asyncio.sleep(0.5)
                server.stop(signal.SIGKILL)
                await asyncio.sleep(0.3)
                server.start()
                await publish(list(range(100, 150)))
                await asyncio.wait_for(task, 30)
        return got

    try:
        got = asyncio.run(run())
    finally:
        server.stop()
    assert got == list(range(150)), "a gap or a duplicate across kill -9"
    assert all(b > a for a, b in pairwise(got))
