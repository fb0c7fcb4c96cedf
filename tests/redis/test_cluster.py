"""Three real ``livedata serve`` processes sharing one real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from benchmarks.redis_server import RedisServer

import redis
from tests.conftest import LiveServer
from tests.integration.wsclient import Points, collect

_n = itertools.count()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[tuple[list[LiveServer], str]]:
    prefix = f"cluster{os.getpid()}:"
    args = ["--broker", redis_server.url, "--redis-prefix", prefix, "--log-level", "info"]
    servers = [LiveServer(args) for _ in range(3)]
    try:
        for s in servers:
            s.start()
        yield servers, prefix
    finally:
        for s in servers:
            s.stop()


@asynccontextmanager
async def ws(server: LiveServer) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.url + "/api/ws") as sock:
        hello = json.loads((await sock.receive(timeout=5)).data)
        assert hello["type"] == "hello"
        yield sock


async def push(server: LiveServer, channel: str, rows: list[dict[str, Any]]) -> int:
    async with aiohttp.ClientSession() as s, s.post(f"{server.url}/api/push/{channel}", json=rows) as r:
        return r.status


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_push_to_one_reaches_subscribers_on_the_others_in_order(cluster: Any) -> None:
    (a, b, c), _ = cluster
    channel = f"cl/{next(_n)}"
    base = now_ms() - 10_000
    assert await push(a, channel, [{"time": base, "v": 0.0}]) == 204
    async with ws(b) as wb, ws(c) as wc:
        for sock in (wb, wc):
            await sock.send_json({"type": "subscribe", "id": "S", "channel": channel, "from": base})
        pb, pc = Points(), Points()
        await collect(wb, pb, 5, until=lambda p: len(p.rows["S"]) >= 1)
        await collect(wc, pc, 5, until=lambda p: len(p.rows["S"]) >= 1)
        for i in range(1, 41):
            rows = [{"time": base + i * 10 + k, "v": float(i * 10 + k)} for k in range(5)]
            assert await push(a, channel, rows) == 204
        want = [base] + [base + i * 10 + k for i in range(1, 41) for k in range(5)]
        for sock, pts in ((wb, pb), (wc, pc)):
            await collect(sock, pts, 10, until=lambda p: len(p.rows["S"]) >= len(want))
            assert pts.times("S") == want, "every point once, in order"
            assert [v["v"] for _, v in pts.rows["S"]] == [0.0] + [float(t - base) for t in want[1:]]
            assert not pts.of_type("notice") and not pts.of_type("error")


async def test_backfill_and_since_resume_on_another_instance(cluster: Any) -> None:
    (a, b, c), _ = cluster
    channel = f"cl/{next(_n)}"
    base = now_ms() - 60_000
    for i in range(10):
        assert await push(a, channel, [{"time": base + i * 10 + k, "v": 1.0} for k in range(3)]) == 204
    first = [base + i * 10 + k for i in range(10) for k in range(3)]
    async with ws(b) as wb:
        await wb.send_json({"type": "subscribe", "id": "S", "channel": channel, "from": base})
        pb = Points()
        await collect(wb, pb, 5, until=lambda p: len(p.rows["S"]) >= len(first))
        assert pb.times("S") == first
        position = pb.position["S"]
    # More points arrive while the client is away; it resumes on another server.
    more = [base + 1000 + i for i in range(50)]
    for i in range(0, 50, 10):
        assert await push(c, channel, [{"time": t, "v": 2.0} for t in more[i:i + 10]]) == 204
    async with ws(c) as wc:
        await wc.send_json({"type": "subscribe", "id": "R", "channel": channel, "since": position})
        pc = Points()
        await collect(wc, pc, 5, until=lambda p: len(p.rows["R"]) >= len(more))
        live = [base + 2000 + i for i in range(5)]
        assert await push(a, channel, [{"time": t, "v": 3.0} for t in live]) == 204
        await collect(wc, pc, 5, until=lambda p: len(p.rows["R"]) >= len(more) + len(live))
        assert pc.times("R") == more + live, "exactly the points after the position, then live"
        assert not pc.of_type("notice")


async def _generated(server: LiveServer, seconds: float) -> Points:
    async with ws(server) as sock:
        await sock.send_json({"type": "subscribe", "id": "G", "channel": "random-walk",
                              "params": {"series": 2}, "from": "now-3s"})
        pts = Points()
        await collect(sock, pts, seconds)
        return pts


def _check_stream(times: list[int], interval: int = 50) -> None:
    assert times, "no points"
    assert all(t % interval == 0 for t in times)
    assert all(b - a == interval for a, b in itertools.pairwise(times)), "a duplicate or a gap"


async def test_generated_channel_runs_once_in_the_cluster(cluster: Any) -> None:
    servers, _ = cluster
    got = await asyncio.gather(*(_generated(s, 2.5) for s in servers))
    rows = [dict(p.rows["G"]) for p in got]
    for p in got:
        _check_stream(p.times("G"))
    common = set(rows[0]) & set(rows[1]) & set(rows[2])
    assert len(common) >= 20
    for t in common:  # one generator: every server shows the same values
        assert rows[0][t] == rows[1][t] == rows[2][t]


async def test_when_the_generator_owner_dies_another_takes_over(cluster: Any) -> None:
    servers, prefix = cluster
    url = servers[0].args[1]
    async with ws(servers[0]) as w0, ws(servers[1]) as w1, ws(servers[2]) as w2:
        socks = [w0, w1, w2]
        for sock in socks:
            await sock.send_json({"type": "subscribe", "id": "G", "channel": "random-walk",
                                  "params": {"series": 2}, "from": "now-1s"})
        pts = [Points() for _ in socks]
        await asyncio.gather(*(collect(s, p, 1.0) for s, p in zip(socks, pts, strict=True)))
        owner = redis.Redis.from_url(url).get(f"{prefix}lease:random-walk/series=2")
        assert owner is not None
        pid = int(owner.decode().split(":")[1])
        dead = next(i for i, s in enumerate(servers) if s.proc is not None and s.proc.pid == pid)
        servers[dead].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        servers[dead].proc.wait()  # type: ignore[union-attr]
        killed_at = now_ms()
        alive = [i for i in range(3) if i != dead]
        await asyncio.gather(*(collect(socks[i], pts[i], 6.0) for i in alive))
        for i in alive:
            times = pts[i].times("G")
            _check_stream(times)  # the new owner filled the outage: no gap, no duplicate
            assert times[-1] > killed_at + 1000, "the stream went on after the owner died"
        new_owner = redis.Redis.from_url(url).get(f"{prefix}lease:random-walk/series=2")
        assert new_owner is not None and new_owner != owner
