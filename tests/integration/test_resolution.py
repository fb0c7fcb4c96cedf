"""Resolution-aware subscriptions end to end, on every broker (memory, Redis, a data directory):
a ``max_points`` backfill plus the aggregated live tail equal the raw points re-aggregated.

The reference here is independent of the server's code: plain loops over the raw points (read
back as a raw subscription), grouped by bucket, each bucket as two rows (its start: the extreme
that came first, its middle: the other), exactly as docs/protocol.md describes the shape.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from livedata.client import Client, Frame
from tests.conftest import LiveServer

_serial = iter(range(1, 1 << 30))


@pytest.fixture(scope="module", params=["memory", "redis", "disk"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    args: list[str] = []
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        args = ["--broker", redis.url, "--redis-prefix", f"res{os.getpid()}-{next(_serial)}:"]
    elif request.param == "disk":
        args = ["--data-dir", str(tmp_path_factory.mktemp("data"))]
    live = LiveServer([*args, "--retention-points", "1000000"]).start()
    yield live
    live.stop()


def post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def reference(points: list[tuple[int, dict[str, Any]]], keys: list[str], width: int) -> dict[int, tuple[Any, ...]]:
    """Rows by time: per bucket of ``width`` with data, (min, max) of each key in time order."""
    by: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for t, row in sorted(points, key=lambda p: p[0]):  # stable: log order among equal times
        by.setdefault(t - t % width, []).append((t, row))
    out: dict[int, tuple[Any, ...]] = {}
    for b, pts in by.items():
        first, second = [], []
        for k in keys:
            vals = [(t, r[k]) for t, r in pts if isinstance(r.get(k), int | float)]
            if not vals:
                first.append(None)
                second.append(None)
                continue
            lo = min(vals, key=lambda p: (p[1], p[0]))
            hi = min(vals, key=lambda p: (-p[1], p[0]))
            a, z = (hi, lo) if hi[0] < lo[0] else (lo, hi)
            first.append(float(a[1]))
            second.append(float(z[1]))
        if any(v is not None for v in first):
            out[b] = tuple(first)
            out[b + width // 2] = tuple(second)
    return out


def test_max_points_backfill_and_live_buckets_equal_the_raw_points_reaggregated(server: LiveServer) -> None:
    channel = f"res/e2e{next(_serial)}"
    rng = random.Random(5)
    now = int(time.time() * 1000)
    start = (now - 600_000) // 10_000 * 10_000  # a bucket boundary for any width this test can get

    def rows(t0: int, n: int, step: int) -> dict[str, list[Any]]:
        times = [t0 + i * step for i in range(n)]
        return {"time": times,
                "a": [round(rng.uniform(-10, 10), 3) for _ in times],
                "b": [None if rng.random() < 0.2 else rng.randint(0, 100) for _ in times],
                "s": ["x"] * n}

    body = rows(start + 1000, 5000, 100)  # 500 s of history at 10 Hz
    post(f"{server.url}/api/push/{channel}", body)

    async def run() -> tuple[list[int], dict[str, list[Any]], int]:
        async with Client(server.url) as c:
            sub = await c.subscribe(channel, from_=start, max_points=200, interval=100)
            it = sub.__aiter__()
            first = await asyncio.wait_for(it.__anext__(), 20)
            assert isinstance(first, Frame) and first.bucket_ms == 5000  # 600 s / 200 = 3 s -> 5 s
            assert [f.name for f in first.schema] == ["a", "b"], "buckets carry the numeric fields only"
            assert len(first.times) <= 2 * 200
            for k in range(8):  # live: on time, across bucket boundaries, and late into old buckets
                n, step = rng.randint(1, 40), rng.choice([10, 300])
                t0 = int(time.time() * 1000) - n * step - (rng.randint(60_000, 400_000) if k % 3 == 2 else 0)
                post(f"{server.url}/api/push/{channel}", rows(t0, n, step))
                await asyncio.sleep(0.15)

            async def drain() -> None:
                while True:
                    await it.__anext__()

            try:
                await asyncio.wait_for(drain(), 1.5)  # the feed sends what the last pushes touched
            except TimeoutError:
                pass
            times, cols = sub.buckets()
            return times, cols, sub.bucket_ms

    times, cols, width = asyncio.run(run())
    got = {t: (cols["a"][i], cols["b"][i]) for i, t in enumerate(times)}
    # the raw points, read back as a raw subscription
    with urllib.request.urlopen(f"{server.url}/api/stream?channel={channel}&from={start}&to=now", timeout=20) as r:
        msgs = [json.loads(line) for line in r]
    names: list[str] = []
    raw: list[tuple[int, dict[str, Any]]] = []
    for m in msgs:
        if m["type"] != "data":
            continue
        if "schema" in m["frame"]:
            names = [f["name"] for f in m["frame"]["schema"]["fields"][1:]]
        ts, *vals = m["frame"]["data"]["values"]
        raw.extend((t, {n: v[i] for n, v in zip(names, vals, strict=True)}) for i, t in enumerate(ts))
    want = reference(raw, ["a", "b"], width)
    assert got == want


def test_the_http_stream_takes_max_points_and_says_what_is_wrong(server: LiveServer) -> None:
    channel = f"res/http{next(_serial)}"
    now = int(time.time() * 1000)
    post(f"{server.url}/api/push/{channel}", {"time": list(range(now - 100_000, now, 10)), "v": list(range(10_000))})
    url = f"{server.url}/api/stream?channel={channel}&from=now-100s&to=now&max_points=50"
    with urllib.request.urlopen(url, timeout=20) as r:
        msgs = [json.loads(line) for line in r]
    data = [m for m in msgs if m["type"] == "data"]
    assert msgs[-1]["type"] == "complete"
    assert all(m["bucket_ms"] == 2000 for m in data)  # 100 s / 50 = 2 s
    times = [t for m in data for t in m["frame"]["data"]["values"][0]]
    assert len(times) <= 2 * 50 + 2 and len(times) % 2 == 0  # at most max_points buckets (+1 partial at each end)
    for bad, why in (("max_points=0", "max_points must be 1..100000"),
                     ("max_points=lots", "max_points"),
                     ("resolution_ms=-5", "resolution_ms must be"),
                     ("max_points=10&from=", "from must be"),
                     ("max_points=10", "max_points needs from")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}/api/stream?channel={channel}&{bad}", timeout=10)
        assert err.value.code == 400
        assert why in json.loads(err.value.read())["error"], bad
