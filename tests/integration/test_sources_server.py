"""Sources in a real ``livedata serve --config``: MQTT from mosquitto_pub and paho-mqtt to WebSocket
readers, /api/sources, ``livedata sources``, /metrics, notices while a source is down, status channels."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import pytest
from benchmarks.mosquitto import Mosquitto

from tests.conftest import LiveServer
from tests.integration.wsclient import Points, collect


@pytest.fixture
def mosq() -> Iterator[Mosquitto]:
    m = Mosquitto().start()
    yield m
    m.close()


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "livedata.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def server(mosq: Mosquitto, tmp_path: Path) -> Iterator[LiveServer]:
    path = config(tmp_path, f"""
[[sources.mqtt]]
name = "plant"
url = "{mosq.url}"
topics = ["plant/#"]
channel = "{{topic}}"
""")
    srv = LiveServer(["--config", path]).start()
    yield srv
    srv.stop()


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def source_status(srv: LiveServer, name: str) -> dict[str, Any]:
    doc = await get_json(f"{srv.url}/api/sources")
    return next(s for s in doc["sources"] if s["name"] == name)


async def wait_for(cond: Any, wait_s: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def up(srv: LiveServer, name: str = "plant") -> None:
    async def is_up() -> bool:
        return (await source_status(srv, name))["state"] == "up"

    await wait_for(is_up, what=f"source {name} up")
    await asyncio.sleep(0.2)  # SUBACK


def paho_publish(port: int, messages: list[tuple[str, str]]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


async def test_mqtt_messages_reach_websocket_readers_with_history(server: LiveServer, mosq: Mosquitto) -> None:
    await up(server)
    now = int(time.time() * 1000)
    await asyncio.to_thread(mosq.pub, "plant/line1", json.dumps({"ts": now - 2000, "speed": 1.5, "state": "run"}))
    await asyncio.to_thread(paho_publish, mosq.port, [("plant/line1", json.dumps({"ts": now - 1000, "speed": 2.5}))])
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws") as ws:
        pts = Points()
        await ws.send_json({"type": "subscribe", "id": "A", "channel": "plant/line1", "from": "now-1m"})
        await collect(ws, pts, 10, until=lambda p: len(p.rows["A"]) >= 2)
        assert pts.rows["A"] == [(now - 2000, {"speed": 1.5, "state": "run"}),
                                 (now - 1000, {"speed": 2.5, "state": None})]
        await asyncio.to_thread(mosq.pub, "plant/line1", "3.5")  # a bare number: another field, 'value'
        await collect(ws, pts, 10, until=lambda p: len(p.rows["A"]) >= 3)
        assert pts.rows["A"][-1][1]["value"] == 3.5
    listed = {c["name"]: c for c in (await get_json(f"{server.url}/api/channels"))["channels"]}
    assert listed["plant/line1"]["source"] == "plant"  # the live view shows "source plant"
    assert listed["_sources/plant"]["source"] == "plant"
    assert "source" not in listed["random-walk"]
    st = await source_status(server, "plant")
    assert st["messages"] == 3 and st["points"] == 3 and st["error_count"] == 0 and st["here"] is True
    assert st["topics"] == ["plant/#"] and st["last_message"] >= now


async def test_malformed_payloads_are_counted_in_sources_and_metrics(server: LiveServer, mosq: Mosquitto) -> None:
    await up(server)
    await asyncio.to_thread(mosq.pub_lines, "plant/x", ['{"v": 1}', '{"v": ', '{"v": 2}', '{"v": "str"}', '{"v": 3}'])

    async def three_points() -> bool:
        return (await source_status(server, "plant"))["points"] == 3

    await wait_for(three_points, what="three points")
    st = await source_status(server, "plant")
    assert st["errors"] == {"json": 1, "schema": 1} and st["state"] == "up"
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/metrics") as r:
        text = await r.text()
    assert re.search(r'^livedata_source_messages_total\{source="plant"\} 5\.0$', text, re.M)
    assert re.search(r'^livedata_source_errors_total\{reason="json",source="plant"\} 1\.0$', text, re.M) or \
        re.search(r'^livedata_source_errors_total\{source="plant",reason="json"\} 1\.0$', text, re.M)
    assert re.search(r'^livedata_source_up\{source="plant"\} 1\.0$', text, re.M)
    assert re.search(r'^livedata_points_published_total\{channel="plant/x"\} 3\.0$', text, re.M)


async def test_a_source_down_and_back_notifies_its_readers(server: LiveServer, mosq: Mosquitto) -> None:
    await up(server)
    await asyncio.to_thread(mosq.pub, "plant/a", '{"v": 1}')
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{server.url}/api/ws")
        other = await s.ws_connect(f"{server.url}/api/ws")
        pts, pts_other = Points(), Points()
        await ws.send_json({"type": "subscribe", "id": "A", "channel": "plant/a", "from": "now-1m"})
        await other.send_json({"type": "subscribe", "id": "B", "channel": "random-walk"})
        await collect(ws, pts, 10, until=lambda p: len(p.rows["A"]) >= 1)
        mosq.stop()
        await collect(ws, pts, 15, until=lambda p: any(m.get("level") == "warning" for m in p.of_type("notice")))
        warning = [m for m in pts.of_type("notice") if m.get("level") == "warning"]
        assert warning and "source plant is down" in warning[0]["text"] and warning[0]["id"] == "A"
        # a new subscriber while it is down is told at once
        late = await s.ws_connect(f"{server.url}/api/ws")
        pts_late = Points()
        await late.send_json({"type": "subscribe", "id": "L", "channel": "plant/a", "from": "now-1m"})
        await collect(late, pts_late, 10, until=lambda p: bool(p.of_type("notice")))
        assert "source plant is down" in pts_late.of_type("notice")[0]["text"]
        st = await source_status(server, "plant")
        assert st["state"] in ("down", "connecting") and st["last_error"]
        await asyncio.to_thread(mosq.start)
        await collect(ws, pts, 30, until=lambda p: any(m.get("level") == "info" for m in p.of_type("notice")))
        assert any("source plant is back" in m["text"] for m in pts.of_type("notice"))
        await asyncio.to_thread(mosq.pub, "plant/a", '{"v": 2}')
        await collect(ws, pts, 10, until=lambda p: len(p.rows["A"]) >= 2)
        assert [v["v"] for _, v in pts.rows["A"]] == [1, 2]
        await collect(other, pts_other, 1)
        assert not pts_other.of_type("notice"), "readers of other channels are not told"
        for w in (ws, other, late):
            await w.close()


async def test_livedata_sources_command(server: LiveServer) -> None:
    await up(server)
    r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "livedata.cli", "sources", "--url", server.url],
                                capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    head, row = r.stdout.splitlines()[:2]
    assert head.split()[:3] == ["name", "kind", "state"]
    assert row.split()[:3] == ["plant", "mqtt", "up"]
    r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "livedata.cli", "sources", "--url", server.url,
                                                 "--json"], capture_output=True, text=True, timeout=20)
    assert json.loads(r.stdout)["sources"][0]["name"] == "plant"


async def test_status_channels_cannot_be_pushed_to(server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{server.url}/api/push/_sources/plant",
                                                     json={"up": True}) as r:
        assert r.status == 400
        assert "source" in (await r.json())["error"]


async def test_an_upstream_livedata_reference_stream_as_a_source(tmp_path: Path) -> None:
    upstream = LiveServer().start()
    try:
        path = config(tmp_path, f"""
[[sources.stream]]
name = "seed"
url = "{upstream.url}/?numSeries=3"
channel = "seed"
""")
        srv = LiveServer(["--config", path]).start()
        try:
            await up(srv, "seed")
            async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.url}/api/ws") as ws:
                pts = Points()
                await ws.send_json({"type": "subscribe", "id": "A", "channel": "seed", "from": "now-10s"})
                await collect(ws, pts, 10, until=lambda p: len(p.rows["A"]) >= 10)
            assert all(set(v) == {"series0", "series1", "series2"} for _, v in pts.rows["A"])
            assert all(10 * i <= v[f"series{i}"] <= 10 * i + 9 for _, v in pts.rows["A"] for i in range(3))
        finally:
            srv.stop()
    finally:
        upstream.stop()
