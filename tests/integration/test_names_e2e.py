"""Names producers send, end to end: Unicode, spaces, '%', '?', '#' in channels, through every way in and out.

Push (HTTP with percent-encoded levels, the Python client, ``livedata push``, line protocol with
escaped measurement names), then read back (``/api/stream``, WebSocket, ``/api/channels``,
``livedata tail``) and delete. And the names that are refused, each with a 400 that says why.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import yarl

from livedata.client import Client, LivedataError
from livedata.core.names import channel_path
from tests.conftest import KEEP_OLD, LiveServer
from tests.integration.test_ingest import history

NAMES = ["sensors/température 1", "a?b#c/100%", "cpu load", 'c,pu/"q"', "job:http_requests:rate5m", "データ/温度 🌡️"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(KEEP_OLD).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def channels(http: aiohttp.ClientSession, url: str) -> set[str]:
    async with http.get(f"{url}/api/channels") as r:
        return {c["name"] for c in (await r.json())["channels"]}


@pytest.mark.parametrize("name", NAMES)
async def test_http_push_read_list_delete(server: LiveServer, http: aiohttp.ClientSession, name: str) -> None:
    channel = f"http/{name}"
    url = yarl.URL(f"{server.url}/api/push/{channel_path(channel)}", encoded=True)
    async with http.post(url, json={"time": 1000, "v": 1.5}) as r:
        assert r.status == 204, await r.text()
    got = await history(http, server.url, channel)
    assert got.rows == [(1000, {"v": 1.5})]
    assert channel in await channels(http, server.url)
    async with http.delete(yarl.URL(f"{server.url}/api/channels/{channel_path(channel)}", encoded=True)) as r:
        assert r.status == 204
    assert channel not in await channels(http, server.url)


async def test_python_client_and_websocket(server: LiveServer) -> None:
    async with Client(server.url) as c:
        for i, name in enumerate(NAMES):
            await c.send(f"client/{name}", {"time": 2000 + i, "temp": float(i)})
        for i, name in enumerate(NAMES):
            sub = await c.subscribe(f"client/{name}", from_=0, to=now_ms())
            frames = [f async for f in sub.frames()]
            assert [p for f in frames for p in f.points()] == [{"time": 2000 + i, "temp": float(i)}]
        with pytest.raises(LivedataError, match=r"'\.\.' is not allowed") as info:
            await c.send("client/../etc", {"v": 1})
        assert info.value.status == 400


async def test_line_protocol_measurement_names_map_to_channels(server: LiveServer, http: aiohttp.ClientSession
                                                               ) -> None:
    body = "\n".join([
        r"cpu\ load,host=a value=1 1000",
        r"c\,pu value=2 1000",
        '"cpu" value=3 1000',
        "job:http_requests:rate5m value=4 1000",
        "température,pièce=salon valeur=21.5 1000",
        "km/h speed=5 1000",
        "% humidity=40 1000",
    ]).encode()
    async with http.post(f"{server.url}/api/push/lp?precision=ms", data=body) as r:
        assert r.status == 204, await r.text()
    expected = {
        "lp/cpu load": (1000, {'value {host="a"}': 1.0}),
        "lp/c,pu": (1000, {"value": 2.0}),
        'lp/"cpu"': (1000, {"value": 3.0}),
        "lp/job:http_requests:rate5m": (1000, {"value": 4.0}),
        "lp/température": (1000, {'valeur {pièce="salon"}': 21.5}),
        "lp/km/h": (1000, {"speed": 5.0}),
        "lp/%": (1000, {"humidity": 40.0}),
    }
    assert set(expected) <= await channels(http, server.url)
    for channel, row in expected.items():
        assert (await history(http, server.url, channel)).rows == [row]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("a/../b", "'..' is not allowed"),
        ("a/%2E%2E/b", "'..' is not allowed"),
        ("a%2F..%2Fb", "'..' is not allowed"),
        ("../etc", "'..' is not allowed"),
        ("a//b", "empty part"),
        ("a%00b", "U+0000"),
        ("a%0Ab", "U+000A"),
        ("a%E2%80%A8b", "U+2028"),
        ("x" * 257, "the limit is 256"),
    ],
)
def test_refused_channel_names_over_raw_http(server: LiveServer, path: str, why: str) -> None:
    # curl --path-as-is: no client-side normalisation of '..'
    out = subprocess.run(["curl", "-s", "--path-as-is", "-X", "POST", "-H", "Content-Type: application/json",
                          "-d", '{"v":1}', "-w", "\n%{http_code}", f"{server.url}/api/push/{path}"],
                         capture_output=True, text=True, timeout=10)
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "400", out.stdout
    assert why in json.loads(body)["error"]


async def test_refused_names_in_line_protocol_and_websocket(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/api/push/lpbad?precision=s", data=b"ok v=1 1\n.. v=1 1\n") as r:
        assert r.status == 400
        err = await r.json()
    assert err["line"] == 2 and "makes the channel name 'lpbad/..'" in err["error"]
    async with http.post(f"{server.url}/api/push/lpbad", data=b"ok v=1\nm\x01 v=1\n") as r:
        err = await r.json()
    assert (r.status, err["line"], err["column"]) == (400, 2, 2) and "U+0001" in err["error"]
    async with http.ws_connect(f"{server.url}/api/ws") as ws:
        await ws.receive_json()
        for sid, channel in (("a", "a/../b"), ("b", "x\x00"), ("c", "/lead")):
            await ws.send_json({"type": "subscribe", "id": sid, "channel": channel})
            reply = await asyncio.wait_for(ws.receive_json(), 10)
            assert (reply["type"], reply["id"]) == ("error", sid) and "invalid channel name" in reply["message"]
        await ws.send_str('{"type":"subscribe","id":"d","channel":"x\\ud800"}')  # not JSON: the socket closes
        closed = await asyncio.wait_for(ws.receive(), 10)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1008, closed
        assert "lone surrogate" in closed.extra


def test_cli_push_and_tail_unicode_channel(server: LiveServer) -> None:
    channel = "cli/température 1"
    p = subprocess.run([sys.executable, "-m", "livedata.cli", "push", channel, "-", "--url", server.url,
                        "--format", "ndjson"], input=b'{"time": 5000, "t": 21.5}\n', capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    t = subprocess.run([sys.executable, "-m", "livedata.cli", "tail", channel, "--url", server.url, "--from", "0",
                        "--to", str(now_ms()), "--json"], capture_output=True, timeout=30)
    assert t.returncode == 0, t.stderr
    rows: list[dict[str, Any]] = [json.loads(line) for line in t.stdout.splitlines() if line.strip()]
    assert [r["t"] for r in rows] == [21.5]


async def test_field_names_with_commas_over_the_http_stream(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/api/push/commas?precision=ms",
                         data=b"m,host=a\\,b usage=1,other=2 1000\nm,host=c usage=3 1000\n") as r:
        assert r.status == 204, await r.text()
    wanted = 'usage {host="a,b"}'
    got = await history(http, server.url, "commas/m", field=wanted)
    assert got.rows == [(1000, {wanted: 1.0})]
    got = await history(http, server.url, "commas/m", field='other {host="a,b"}', fields="usage {host=\"c\"}")
    assert got.rows == [(1000, {'other {host="a,b"}': 2.0, 'usage {host="c"}': 3.0})]
