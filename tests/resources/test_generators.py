"""Readers cannot start unbounded work: generators have their own budget, finite subscriptions do
not keep one running, and generated channels never use up the channels writers need."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from tests.resources.conftest import metric, resource_server, victim, watch


async def test_distinct_generator_params_with_a_read_token_stop_at_max_generators(tmp_path: Path) -> None:
    """30 subscriptions with distinct params kept a core busy and filled --max-channels, and writers
    got 429; now at most --max-generators run, the rest get an error, and writers still push."""
    server = resource_server("--max-generators", "4", "--max-channels", "3", "--read-tokens", "r",
                             "--write-tokens", "w", "--retention", "5")
    try:
        async with aiohttp.ClientSession() as s:
            with watch(server, tmp_path, token="r") as w:
                read = {"Authorization": "Bearer r"}
                async with s.ws_connect(f"{server.url}/api/ws", headers=read, max_msg_size=0) as ws:
                    await ws.receive_json()
                    for i in range(30):
                        await ws.send_json({"type": "subscribe", "id": f"g{i}", "channel": "random-walk",
                                            "params": {"series": 1 + i % 10, "spread": 1 + i}, "from": "now-1s"})
                    first: dict[str, str] = {}
                    deadline = time.monotonic() + 30
                    while len(first) < 30 and time.monotonic() < deadline:
                        m = await asyncio.wait_for(ws.receive_json(), 30)
                        if m.get("id") and m["id"] not in first and m["type"] in ("data", "error"):
                            first[m["id"]] = m["type"] if m["type"] == "data" else m["message"]
                    assert list(first.values()).count("data") == 4
                    errors = [v for v in first.values() if v != "data"]
                    assert len(errors) == 26 and all("--max-generators" in e for e in errors)
                    assert await metric(s, server.url, "livedata_generators_running", token="r") == 4
                    for i in range(3):  # writers get every channel the limit gives them
                        async with s.post(f"{server.url}/api/push/w/{i}", json={"v": 1},
                                          headers={"Authorization": "Bearer w"}) as r:
                            assert r.status == 204
            w.check()
    finally:
        server.stop()


async def test_a_finite_subscription_does_not_keep_a_generator_alive(tmp_path: Path) -> None:
    server = resource_server("--retention", "3600")
    try:
        async with aiohttp.ClientSession() as s, victim(server.url):
            async with s.get(f"{server.url}/api/stream?channel=sine&series=2&from=now-10s&to=now") as r:
                lines = [line async for line in r.content]
            assert b'"complete"' in lines[-1]
            assert await metric(s, server.url, "livedata_generators_running") == 1
            deadline = time.monotonic() + 45  # stopped 30 s after its last (finite) reader, not an hour
            while await metric(s, server.url, "livedata_generators_running") and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(1)
            assert await metric(s, server.url, "livedata_generators_running") == 0
            async with s.get(f"{server.url}/api/channels") as r:  # and its channel is gone
                names = [c["name"] for c in (await r.json())["channels"]]
            assert "sine/series=2" not in names
    finally:
        server.stop()
