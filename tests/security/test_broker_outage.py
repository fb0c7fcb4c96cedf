"""A broker outage is a 503 on every route that needs the broker, never a 500 (issue 16), and
/api/health says so. A real redis-server is stopped under a real ``livedata serve``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import aiohttp
import pytest
from benchmarks.redis_server import RedisServer

from tests.conftest import LiveServer


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True, fsync="always").start()  # the data is there again after the outage
    yield server
    server.close()


@pytest.fixture
def served(redis: RedisServer) -> Iterator[LiveServer]:
    s = LiveServer(["--broker", redis.url]).start()
    yield s
    s.stop()


async def health(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    t0 = time.monotonic()
    async with http.get(f"{url}/api/health") as r:
        assert r.status == 200  # liveness: the process serves
        body: dict[str, object] = await r.json()
    assert time.monotonic() - t0 < 5, "health must answer within the broker's command timeout"
    return body


async def test_every_broker_route_is_503_while_redis_is_down(redis: RedisServer, served: LiveServer) -> None:
    url = served.url
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/push/out/a", json={"time": 1_000, "v": 1}) as r:
            assert r.status == 204
        body = await health(http, url)
        assert (body["status"], body["broker"]) == ("ok", "ok")
        ws = await http.ws_connect(f"{url}/api/ws")
        assert (await ws.receive_json())["type"] == "hello"

        redis.stop()

        body = await health(http, url)
        assert (body["status"], body["broker"]) == ("degraded", "unavailable")
        for method, path, kw in (
            ("GET", "/api/channels", {}),
            ("DELETE", "/api/channels/out/a", {}),
            ("POST", "/api/push/out/a", {"json": {"v": 2}}),
            ("POST", "/api/push/out/lp", {"data": b"m v=1", "headers": {"Content-Type": "text/plain"}}),
            ("GET", "/api/stream?channel=out/a&from=0", {}),
            ("HEAD", "/api/stream?channel=out/a", {}),
        ):
            async with http.request(method, url + path, **kw) as r:  # type: ignore[arg-type]
                assert r.status == 503, (method, path, await r.text())
                if method != "HEAD":
                    error = (await r.json())["error"]
                    assert "unavailable" in error and "Redis" in error, error
                    assert "Traceback" not in error

        # WebSocket: a subscription and a publish each get an error; the socket itself stays up
        await ws.send_json({"type": "subscribe", "id": "A", "channel": "out/a", "from": "0"})
        await ws.send_json({"type": "publish", "channel": "out/a", "points": {"v": 3}, "ack": "p"})
        await ws.send_json({"type": "ping"})
        seen = []
        while not any(m["type"] == "pong" for m in seen) or len([m for m in seen if m["type"] == "error"]) < 2:
            seen.append(json.loads((await ws.receive(timeout=10)).data))
        errors = {m.get("id") or m.get("ack"): m["message"] for m in seen if m["type"] == "error"}
        assert "unavailable" in errors["A"] and "unavailable" in errors["p"], errors

        redis.start()
        body = await health(http, url)
        assert (body["status"], body["broker"]) == ("ok", "ok")
        async with http.get(f"{url}/api/channels") as r:
            assert r.status == 200
            assert "out/a" in {c["name"] for c in (await r.json())["channels"]}
        await ws.close()
    log = served.log()
    assert "Traceback" not in log and "unhandled error" not in log, log
