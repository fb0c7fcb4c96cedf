"""An MQTT source in a cluster: two real ``livedata serve`` on one real Redis, one real mosquitto.

The source runs on one server only (the lease), every message is stored once, both servers show
its status and tell their readers when it is down, and the other server takes over when the one
running it dies.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from benchmarks.mosquitto import Mosquitto
from benchmarks.redis_server import RedisServer

from tests.conftest import LiveServer
from tests.integration.wsclient import Points, collect


@pytest.fixture
def mosq() -> Iterator[Mosquitto]:
    m = Mosquitto().start()
    yield m
    m.close()


@pytest.fixture
def pair(redis_server: RedisServer, mosq: Mosquitto, tmp_path: Path) -> Iterator[list[LiveServer]]:
    path = tmp_path / "livedata.toml"
    path.write_text(f"""
broker = "{redis_server.url}"
redis_prefix = "src{os.getpid()}-{time.monotonic_ns()}:"

[[sources.mqtt]]
name = "plant"
url = "{mosq.url}"
topics = ["plant/#"]
""")
    servers = [LiveServer(["--config", str(path)]) for _ in range(2)]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()


async def status(srv: LiveServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/api/sources") as r:
        return (await r.json())["sources"][0]  # type: ignore[no-any-return]


async def wait_for(cond: Any, wait_s: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        got = await cond()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def holder(servers: list[LiveServer]) -> tuple[LiveServer, LiveServer]:
    async def find() -> tuple[LiveServer, LiveServer] | None:
        here = [(await status(s))["here"] for s in servers]
        if here.count(True) == 1 and (await status(servers[here.index(True)]))["state"] == "up":
            a = servers[here.index(True)]
            return a, servers[1 - here.index(True)]
        return None

    found: tuple[LiveServer, LiveServer] = await wait_for(find, what="one server running the source")
    return found


async def count(srv: LiveServer, channel: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/api/channels") as r:
        for c in (await r.json())["channels"]:
            if c["name"] == channel:
                return int(c["points"])
    return 0


async def test_the_source_runs_once_and_the_other_server_takes_over(pair: list[LiveServer], mosq: Mosquitto) -> None:
    running, other = await holder(pair)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(mosq.pub_lines, "plant/a", [json.dumps({"i": i}) for i in range(50)])

    async def fifty() -> bool:
        return await count(other, "plant/a") >= 50

    await wait_for(fifty, what="50 points")
    await asyncio.sleep(1.0)
    assert await count(other, "plant/a") == 50  # stored once, not once per server
    mine, theirs = await status(running), await status(other)
    assert mine["messages"] == 50 and mine["here"] and not theirs["here"]

    async def reported() -> bool:
        return (await status(other))["messages"] == 50

    await wait_for(reported, wait_s=15, what="the other server to show the counts from the status channel")
    assert (await status(other))["state"] == "up"

    assert running.proc is not None
    running.proc.send_signal(signal.SIGKILL)
    running.proc.wait()

    async def took_over() -> bool:
        st = await status(other)
        return bool(st["here"] and st["state"] == "up")

    await wait_for(took_over, wait_s=20, what="the other server to take the source over")
    await asyncio.sleep(0.3)
    await asyncio.to_thread(mosq.pub_lines, "plant/a", [json.dumps({"i": i}) for i in range(50, 60)])

    async def sixty() -> bool:
        return await count(other, "plant/a") >= 60

    await wait_for(sixty, what="the messages after the take-over")


async def test_readers_on_the_other_server_hear_that_the_source_is_down(pair: list[LiveServer],
                                                                       mosq: Mosquitto) -> None:
    _running, other = await holder(pair)
    await asyncio.to_thread(mosq.pub, "plant/b", '{"v": 1}')
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{other.url}/api/ws") as ws:
        pts = Points()
        await ws.send_json({"type": "subscribe", "id": "A", "channel": "plant/b", "from": "now-1m"})
        await collect(ws, pts, 10, until=lambda p: len(p.rows["A"]) >= 1)
        mosq.stop()
        await collect(ws, pts, 20, until=lambda p: any(m.get("level") == "warning" for m in p.of_type("notice")))
        assert any("source plant is down" in m["text"] for m in pts.of_type("notice"))
        await asyncio.to_thread(mosq.start)
        await collect(ws, pts, 40, until=lambda p: any(m.get("level") == "info" for m in p.of_type("notice")))
        assert any("source plant is back" in m["text"] for m in pts.of_type("notice"))
