"""Exactly once at the edges, on both brokers, against real servers: resuming from any message,
idempotency keys, and reorder windows that are stored, bounded and published once.

Hostile cases beyond the issue's examples: a key reused on another channel, a key reused while the
first request is still in flight with another body, a key reused with another precision, a resume
from the middle of a backfill, a resume from the late message of a batch that mixes late and
on-time points (over WebSocket and NDJSON), a push past the held-points bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from benchmarks.redis_server import RedisServer

from livedata.client import Client, LivedataError
from tests.conftest import LiveServer

_serial = iter(range(1, 1 << 30))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(params=["memory", "redis"], scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    args = ["--max-held-bytes", "200000", "--retention-points", "2000000"]
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        args += ["--broker", redis.url, "--redis-prefix", f"wo{os.getpid()}-{next(_serial)}:"]
    live = LiveServer(args).start()
    yield live
    live.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(read_bufsize=1 << 24) as s:
        yield s


def channel(name: str) -> str:
    return f"wo/{name}{next(_serial)}"


async def post(s: aiohttp.ClientSession, url: str, ch: str, body: Any, key: str | None = None,
               **params: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with s.post(f"{url}/api/push/{ch}", json=body, headers=headers, params=params) as r:
        info = await r.json() if r.status != 204 else {}
        return r.status, info, dict(r.headers)


async def stream(s: aiohttp.ClientSession, url: str, ch: str, **query: str) -> list[dict[str, Any]]:
    """A finite stream's data messages (``to`` defaults to now)."""
    query.setdefault("to", str(now_ms()))
    out = []
    async with s.get(f"{url}/api/stream", params={"channel": ch, **query}) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            m = json.loads(line)
            if m["type"] == "data":
                out.append(m)
            elif m["type"] == "complete":
                return out
    raise AssertionError("no complete")


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    out: list[int] = []
    names = ["time", "seq"]
    for m in messages:
        if "schema" in m["frame"]:
            names = [f["name"] for f in m["frame"]["schema"]["fields"]]
        values = m["frame"]["data"]["values"]
        if values[0]:
            out.extend(int(v) for v in values[names.index("seq")])
    return out


# --- resume from any message ---------------------------------------------------------------------


@pytest.mark.parametrize("carrier", ["ws", "ndjson"])
async def test_resume_from_the_late_message_of_a_mixed_batch_gets_its_on_time_points(
        server: LiveServer, http: aiohttp.ClientSession, carrier: str) -> None:
    """The issue's example: one batch holds a late point and an on-time one."""
    ch = channel("mixed")
    t = now_ms()
    assert (await post(http, server.url, ch, {"time": t, "seq": 1}))[0] == 204

    async def first_message_after(sub: dict[str, Any], then: Any) -> dict[str, Any]:
        if carrier == "ws":
            async with http.ws_connect(f"{server.url}/api/ws") as ws:
                await ws.send_json({"type": "subscribe", "id": "A", "channel": ch, **sub})
                while (m := await ws.receive_json(timeout=5))["type"] != "data":
                    pass
                await then()
                while (m := await ws.receive_json(timeout=5))["type"] != "data":
                    pass
                return m  # the connection drops here: whatever came after is lost
        async with http.get(f"{server.url}/api/stream", params={"channel": ch, **sub}) as r:
            lines = r.content.__aiter__()
            while (m := json.loads(await lines.__anext__()))["type"] != "data":
                pass
            await then()
            while (m := json.loads(await lines.__anext__()))["type"] != "data":
                pass
            return m

    async def push_mixed() -> None:
        assert (await post(http, server.url, ch, [{"time": t - 10_000, "seq": 2}, {"time": t + 5, "seq": 3}]))[0] == 204

    m = await first_message_after({}, push_mixed)
    assert m["late"] is True and m["frame"]["data"]["values"][0] == [t - 10_000, t + 5]  # one message, both rows
    rest = await stream(http, server.url, ch, since=m["position"])
    assert seqs(rest) == []  # nothing is owed after it: seq 3 came with seq 2
    # seq 3 is 5 ms ahead of the test's start: a run quicker than that asked for history up to a
    # "now" before it (CI, once). Ask once its time has passed.
    await asyncio.sleep(max(0.0, (t + 6 - now_ms()) / 1000))
    assert sorted(seqs(await stream(http, server.url, ch, **{"from": "0"}))) == [1, 2, 3]


async def test_resume_from_the_middle_of_a_backfill(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """A backfill bigger than one packet: each piece carries a position, and resuming from the
    first piece's gets exactly the rest. A late batch in the middle of the log makes its history
    disordered, and a point older than the range shows the range is kept on resume."""
    ch = channel("big")
    t0 = now_ms() - 1_000_000
    n = 130_000  # 260,000 values with time: two packets of at most 250,000
    assert (await post(http, server.url, ch, {"time": [t0 - 5000], "seq": [-1]}))[0] == 204  # before the range
    for part in range(2):
        body = {"time": [t0 + part * n + i for i in range(n)], "seq": list(range(part * n, (part + 1) * n))}
        assert (await post(http, server.url, ch, body))[0] == 204
        if part == 0:  # a late point in range, then one before the range, between the two big batches
            assert (await post(http, server.url, ch, {"time": [t0 + 10, t0 - 4000], "seq": [-2, -3]}))[0] == 204
    every = await stream(http, server.url, ch, **{"from": str(t0)})
    assert len(every) >= 2 and all(m.get("position") for m in every)
    want = sorted(seqs(every))
    assert want == sorted([-2, *range(2 * n)])
    first = every[0]
    assert "~" in first["position"], "a piece before the last names its backfill"
    rest = await stream(http, server.url, ch, since=first["position"])
    assert sorted(seqs([first]) + seqs(rest)) == want, "the rest of the backfill, exactly"


# --- idempotency keys ----------------------------------------------------------------------------


async def test_a_key_reused_for_another_body_is_refused_with_the_reason(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    ch = channel("reuse")
    t = now_ms() - 1000
    assert (await post(http, server.url, ch, {"time": t, "seq": 1}, key="k1"))[0] == 204
    status, info, headers = await post(http, server.url, ch, {"time": t, "seq": 1}, key="k1")
    assert status == 204 and headers.get("Idempotent-Replayed") == "true"
    status, info, _ = await post(http, server.url, ch, {"time": t + 1, "seq": 2}, key="k1")
    assert status == 422 and "already used" in info["error"] and "different request" in info["error"]
    # the same body with another precision, or in a reorder window, is another request too
    status, _, _ = await post(http, server.url, ch, {"time": t, "seq": 1}, key="k1", precision="s")
    assert status == 422
    assert seqs(await stream(http, server.url, ch, **{"from": "0"})) == [1]
    # the key on another channel is another key
    other = channel("reuse-other")
    assert (await post(http, server.url, other, {"time": t + 1, "seq": 2}, key="k1"))[0] == 204
    assert seqs(await stream(http, server.url, other, **{"from": "0"})) == [2]


async def test_one_key_in_flight_twice_with_two_bodies_stores_one_of_them(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    ch = channel("inflight")
    t = now_ms() - 10_000
    a = {"time": [t + i for i in range(2000)], "seq": list(range(2000))}
    b = {"time": [t], "seq": [-1]}
    results = await asyncio.gather(post(http, server.url, ch, a, key="twice"),
                                   post(http, server.url, ch, b, key="twice"))
    assert sorted(s for s, _, _ in results) == [204, 422]
    stored = seqs(await stream(http, server.url, ch, **{"from": "0"}))
    assert stored in (list(range(2000)), [-1]), (len(stored), stored[:5], stored[-5:])
    # and the same body sent eight times at once is stored once
    same = channel("inflight-same")
    results = await asyncio.gather(*(post(http, server.url, same, a, key="same") for _ in range(8)))
    assert [s for s, _, _ in results] == [204] * 8
    assert sum(h.get("Idempotent-Replayed") == "true" for _, _, h in results) == 7
    assert seqs(await stream(http, server.url, same, **{"from": "0"})) == list(range(2000))


@pytest.mark.parametrize("bad", ["", "x" * 201, "tab\there"])
async def test_a_bad_key_is_a_400(server: LiveServer, http: aiohttp.ClientSession, bad: str) -> None:
    async with http.post(f"{server.url}/api/push/{channel('badkey')}", json={"v": 1},
                         headers={"Idempotency-Key": bad}) as r:
        assert r.status == 400 and "Idempotency-Key" in (await r.json())["error"]


async def test_websocket_publish_with_a_key_is_stored_once(server: LiveServer, http: aiohttp.ClientSession) -> None:
    ch = channel("wspub")
    t = now_ms() - 1000
    async with http.ws_connect(f"{server.url}/api/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        for i in range(3):
            await ws.send_json({"type": "publish", "channel": ch, "points": [{"time": t, "seq": 1}], "key": "p1",
                                "ack": f"a{i}"})
            assert await ws.receive_json() == {"type": "ack", "ack": f"a{i}"}
        await ws.send_json({"type": "publish", "channel": ch, "points": [{"time": t, "seq": 2}], "key": "p1",
                            "ack": "x"})
        err = await ws.receive_json()
        assert err["type"] == "error" and err["ack"] == "x" and "different request" in err["message"]
    assert seqs(await stream(http, server.url, ch, **{"from": "0"})) == [1]


# --- reorder windows -----------------------------------------------------------------------------


async def test_held_points_are_answered_once_stored_and_published_sorted_when_due(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    ch = channel("held")
    t = now_ms() - 1000
    for i, (time_, key) in enumerate([(t + 30, "h1"), (t + 10, "h2"), (t + 20, "h3")]):
        status, _, _ = await post(http, server.url, ch, {"time": time_, "seq": i}, key=key, reorder_ms="300")
        assert status == 204
    status, _, headers = await post(http, server.url, ch, {"time": t + 30, "seq": 0}, key="h1", reorder_ms="300")
    assert status == 204 and headers.get("Idempotent-Replayed") == "true"
    assert seqs(await stream(http, server.url, ch, **{"from": "0"})) == []  # held: not in history yet
    await asyncio.sleep(1.5)  # due after 300 ms; the server looks at least every second
    msgs = await stream(http, server.url, ch, **{"from": "0"})
    assert seqs(msgs) == [1, 2, 0] and not any(m.get("late") for m in msgs)


async def test_held_points_are_bounded_in_bytes(server: LiveServer, http: aiohttp.ClientSession) -> None:
    ch = channel("bound")
    t = now_ms() - 10_000
    big = {"time": [t + i for i in range(3000)], "seq": list(range(3000))}  # about 300 kB held: past 200,000
    status, info, _ = await post(http, server.url, ch, big, reorder_ms="60000")
    assert status == 413 and "--max-held-bytes" in info["error"] and "split it" in info["error"]
    third = {"time": [t + i for i in range(1000)], "seq": list(range(1000))}  # about 72 kB each
    for _ in range(2):
        assert (await post(http, server.url, ch, third, reorder_ms="60000"))[0] == 204
    status, info, headers = await post(http, server.url, ch, third, key="full", reorder_ms="60000")
    assert status == 429 and headers.get("Retry-After") == "1" and "retry in a moment" in info["error"]
    assert (await post(http, server.url, ch, third, key="full"))[0] == 204  # without a window it goes straight in
    assert len(seqs(await stream(http, server.url, ch, **{"from": "0"}))) == 1000


# --- same input, same answer on every broker -------------------------------------------------------


def _shapes(t: int, value: int) -> list[Any]:
    return [
        {"time": t, "v": value},  # one point
        [{"time": t, "v": 1.5}, {"time": t + 1, "v": value}],  # a list of points
        {"time": [t, t + 1], "v": [1.5, value]},  # columns, mixed with a float (the example)
        {"time": [t, t + 1], "v": [1, value]},  # columns of integers only
    ]


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
async def test_integers_beyond_64_bits_are_a_400_in_every_shape_and_store_nothing(
        server: LiveServer, http: aiohttp.ClientSession, value: int) -> None:
    ch = channel("bigint")
    t = now_ms() - 1000
    for i, body in enumerate(_shapes(t, value)):
        status, info, _ = await post(http, server.url, ch, body, key=f"big{i}")
        assert status == 400, (i, status, info)
        assert "64" in info["error"] and "v" in info["error"], info
    async with http.post(f"{server.url}/api/push/{ch}", data=f"m v={value}i {t}".encode(),
                         params={"precision": "ms"}, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 400, await r.text()
    async with http.ws_connect(f"{server.url}/api/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_json({"type": "publish", "channel": ch, "points": _shapes(t, value)[2], "ack": "a"})
        reply = await ws.receive_json()
        assert reply["type"] == "error" and reply["ack"] == "a" and "64" in reply["message"], reply
    async with http.get(f"{server.url}/api/channels") as r:
        assert ch not in {c["name"] for c in (await r.json())["channels"]}  # nothing was stored


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63)])
async def test_integers_at_the_64_bit_bounds_are_stored_in_every_shape(
        server: LiveServer, http: aiohttp.ClientSession, value: int) -> None:
    ch = channel("edgeint")
    t = now_ms() - 1000
    for i, body in enumerate(_shapes(t + 10 * i, value) for i in range(4)):
        status, info, _ = await post(http, server.url, ch, body[i])
        assert status == 204, (i, info)
    got = [v for m in await stream(http, server.url, ch, **{"from": "0"}) for v in m["frame"]["data"]["values"][1]]
    assert got.count(value) == 4, got


async def test_the_client_waits_out_a_full_reorder_window_and_stores_once() -> None:
    """A 429 with Retry-After (the held-points bound) is retried by the Python client with the same
    key until the held points are published; a 400 is raised at once."""
    live = LiveServer(["--max-held-bytes", "200000"]).start()
    try:
        t = now_ms() - 10_000
        third = {"time": [t + i for i in range(1000)], "seq": list(range(1000))}  # about 72 kB held each
        async with Client(live.url, retry_for_s=15) as c:
            await c.send("wo/full", third, reorder_ms=300)
            await c.send("wo/full", third, reorder_ms=300)
            started = time.monotonic()
            last = {"time": [t + 5000 + i for i in range(1000)], "seq": list(range(2000, 3000))}
            await c.send("wo/full", last, reorder_ms=300)  # 429 first: the bound is full
            waited = time.monotonic() - started
            with pytest.raises(LivedataError) as info:
                await c.send("wo/full", {"time": t, "seq": "seven"})
            assert info.value.status == 400 and time.monotonic() - started - waited < 5
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(1.5)
            got = seqs(await stream(http, live.url, "wo/full", **{"from": "0"}))
        assert sorted(got) == sorted([*range(1000), *range(1000), *range(2000, 3000)]), len(got)
        assert 0.5 < waited < 12, waited  # it waited for the window (Retry-After: 1), then stored once
    finally:
        live.stop()
