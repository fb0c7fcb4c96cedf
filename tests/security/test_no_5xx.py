"""No 5xx for any client input (issue 16): every hostile class is a 400 (HTTP), an ``error`` or a 1008
close (WebSocket) with a sentence, nothing is stored, and the server keeps serving everyone else.
Real server, real HTTP and WebSocket clients; raw sockets where a library would refuse to send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import LiveServer
from tests.security.rawhttp import get, request

UNICODE_DIGITS = [  # superscript two, Arabic-Indic, fullwidth, mathematical double-struck digits
    "\u00b2", "\u0661\u0662\u0663", "\uff11\uff12\uff13", "-\u00b2", "\U0001d7d9\U0001d7da", "now-\u00b2m",
    "now-\u0661m", "1\u00b2", "\u0663" + "\u0660" * 12,
]
DEEP = 100_000
DECODABLE = 900  # nested, but within what the JSON decoder takes: must not crash what comes after it


def nest(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()
    log = s.log_path.read_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def answer(r: aiohttp.ClientResponse) -> dict[str, Any]:
    assert r.status < 500, (r.status, await r.text())
    body: dict[str, Any] = await r.json() if r.content_type == "application/json" else {}
    return body


async def channels(http: aiohttp.ClientSession, url: str) -> set[str]:
    async with http.get(f"{url}/api/channels") as r:
        return {c["name"] for c in (await r.json())["channels"]}


# --- HTTP ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", UNICODE_DIGITS)
async def test_unicode_digits_in_time_are_400(server: LiveServer, http: aiohttp.ClientSession, value: str) -> None:
    for body in ({"time": value, "v": 1}, [{"time": value, "v": 1}], {"time": [value], "v": [1]}):
        async with http.post(f"{server.url}/api/push/n5/digits", json=body) as r:
            assert r.status == 400
            assert "time must be epoch ms" in (await answer(r))["error"]
    for key in ("from", "to"):
        async with http.get(f"{server.url}/api/stream", params={"channel": "random-walk", key: value}) as r:
            assert r.status == 400
            assert f"{key} must be epoch ms" in (await answer(r))["error"]
    assert "n5/digits" not in await channels(http, server.url)


@pytest.mark.parametrize(("param", "value"), [("series", "1e400"), ("series", "nan"), ("series", "inf"),
                                              ("series", "-inf"), ("series", "\u0661"), ("spread", "1e400"),
                                              ("spread", "nan"), ("interval", "\u00b2"), ("series", "9" * 400)])
async def test_odd_numbers_in_params_are_400(server: LiveServer, http: aiohttp.ClientSession, param: str,
                                             value: str) -> None:
    async with http.get(f"{server.url}/api/stream", params={"channel": "random-walk", param: value}) as r:
        assert r.status == 400, await r.text()
        assert param in (await answer(r))["error"]


@pytest.mark.parametrize("since", ["\u00b2", "a:\u0661-2:3", "a:99999999999999999999999-0:0", "\x00", ":", "a:1-2",
                                   "a:-1-2:3", "x" * 8000, "a:1-2:3\r\nX: y", "\udcff"])
async def test_last_event_id_garbage_is_400(server: LiveServer, since: str) -> None:
    raw = get("/api/stream?channel=random-walk", server.port, "Accept: text/event-stream",
              f"Last-Event-ID: {since}".replace("\r\n", " "))
    got = await request(server.port, raw)
    assert got.status == 400, got
    assert b"invalid position" in got.body or b"Last-Event-ID" in got.body or got.status == 400


async def test_deep_nesting_over_http_is_400(server: LiveServer, http: aiohttp.ClientSession) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{server.url}/api/push/n5/deep", data=nest(DEEP), headers=headers) as r:
        assert r.status == 400
        assert "nested too deeply" in (await answer(r))["error"]
    async with http.post(f"{server.url}/api/push/n5/deep", data='{"v":1}\n' + nest(DEEP) + "\n",
                         headers={"Content-Type": "application/x-ndjson"}) as r:
        assert r.status == 400
        body = await answer(r)
        assert "nested too deeply" in body["error"] and body["line"] == 2
    for doc in (nest(DECODABLE), '{"time":' + nest(DECODABLE) + ',"v":1}', '{"v":' + nest(DECODABLE) + "}",
                '{"time":[' + nest(DECODABLE) + '],"v":[1]}', '[{"v":1},' + nest(DECODABLE) + "]",
                '{"v":[' + nest(DECODABLE) + "]}"):
        async with http.post(f"{server.url}/api/push/n5/deep", data=doc, headers=headers) as r:
            assert r.status == 400, doc[:40]
            assert (await answer(r))["error"]
    assert "n5/deep" not in await channels(http, server.url)


@pytest.mark.parametrize("doc", ['{"v\\ud800":1}', '{"v":"\\udc00"}', '{"v":"\\ud800\\u0041"}', '"\\ud800"'])
async def test_lone_surrogates_in_json_are_400(server: LiveServer, http: aiohttp.ClientSession, doc: str) -> None:
    async with http.post(f"{server.url}/api/push/n5/sur", data=doc, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert "malformed JSON" in (await answer(r))["error"]


@pytest.mark.parametrize("path", ["/api/push/%ED%A0%80", "/api/push/a%00b", "/api/push/a%0d%0aX-Injected:%20yes",
                                  "/api/push/a%0aX-Injected:%20yes", "/api/push/%FF", "/api/push/" + "%C0%AF" * 3,
                                  "/api/channels/%ED%A0%80", "/api/stream?channel=%ED%A0%80",
                                  "/api/stream?channel=a%0d%0aX-Injected:%20yes",
                                  "/api/stream?channel=random-walk&%FF=1"])
async def test_odd_bytes_in_names_never_5xx_or_inject_headers(server: LiveServer, path: str) -> None:
    method = "POST" if "/push/" in path else "DELETE" if path.startswith("/api/channels/") else "GET"
    extra = ("Content-Type: application/json", "Content-Length: 7") if method == "POST" else ()
    raw = get(path, server.port, *extra, method=method) + (b'{"v":1}' if method == "POST" else b"")
    got = await request(server.port, raw)
    assert got.status < 500, got
    assert "x-injected" not in got.headers


async def test_oversized_and_odd_headers(server: LiveServer) -> None:
    for big in (9_000, 100_000):
        got = await request(server.port, get("/api/health", server.port, "X-Big: " + "a" * big))
        assert got.status == 0 or 400 <= got.status < 500, got  # refused (or reset): no 5xx, nothing served
    many = tuple(f"X-{i}: {i}" for i in range(500))
    got = await request(server.port, get("/api/health", server.port, *many))
    assert got.status == 0 or 400 <= got.status < 500, got
    for header in ("Content-Type: application/json;;;charset=\x7f", "Content-Type: \xff/\xfe",
                   "Idempotency-Key: " + "k" * 500, "Idempotency-Key: \xff\xfe",
                   "Content-Type: text/plain; charset=ebcdic"):
        raw = get("/api/push/n5/hdr", server.port, header, "Content-Length: 7", method="POST") + b'{"v":1}'
        got = await request(server.port, raw)
        assert got.status < 500, (header, got)


async def test_broken_bodies(server: LiveServer) -> None:
    gz = get("/api/push/n5/gz", server.port, "Content-Type: application/json", "Content-Encoding: gzip",
             "Content-Length: 7", method="POST") + b'{"v":1}'
    got = await request(server.port, gz)
    assert 400 <= got.status < 500, got
    chunked = get("/api/push/n5/ch", server.port, "Content-Type: application/json", "Transfer-Encoding: chunked",
                  method="POST") + b"zz\r\n{}\r\n0\r\n\r\n"
    got = await request(server.port, chunked)
    assert 400 <= got.status < 500, got
    both = get("/api/push/n5/both", server.port, "Content-Type: application/json", "Transfer-Encoding: chunked",
               "Content-Length: 7", method="POST") + b"7\r\n{\"v\":1}\r\n0\r\n\r\n"
    got = await request(server.port, both)
    assert 400 <= got.status < 500, got  # request smuggling: both framings at once is refused


async def test_a_gzip_bomb_is_413_without_holding_its_size(server: LiveServer) -> None:
    """200 MiB of zeros in 200 KiB of gzip: refused as soon as the decompressed body passes the limit."""
    import gzip

    import psutil

    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    body = gzip.compress(b"0" * (200 << 20), compresslevel=9)
    rss = proc.memory_info().rss
    raw = get("/api/push/n5/bomb", server.port, "Content-Type: text/plain", "Content-Encoding: gzip",
              f"Content-Length: {len(body)}", method="POST") + body
    got = await request(server.port, raw)
    assert got.status == 413, got
    assert proc.memory_info().rss - rss < 64 << 20  # not the 200 MiB


# --- WebSocket ----------------------------------------------------------------------------------------


async def open_ws(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{url}/api/ws", max_msg_size=0)
    assert (await ws.receive_json())["type"] == "hello"
    return ws


async def replies_until_pong(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Everything the server says until it answers a ping: it is alive and read what came before."""
    await ws.send_json({"type": "ping"})
    got = []
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg, ws.close_code)
        m = json.loads(msg.data)
        if m["type"] == "pong":
            return got
        got.append(m)


async def live_data(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The ``live`` subscription (random-walk, a point every 50 ms) still streams after what was sent:
    three more rows arrive (a dead subscription times out here)."""
    rows = 0
    while rows < 3:
        m = json.loads((await ws.receive(timeout=10)).data)
        if m["type"] == "data" and m["id"] == "live":
            rows += len(m["frame"]["data"]["values"][0])


async def close_reason(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return ws.close_code, str(msg.extra)


@pytest.mark.parametrize("frame", [nest(DEEP), '{"type":"ping","x":' + nest(DEEP) + "}", "{not json", "[1]", '"x"',
                                   '{"type":"ping","s":"\\ud800"}', "", "\x00"])
async def test_frames_that_are_not_json_objects_close_1008(server: LiveServer, http: aiohttp.ClientSession,
                                                           frame: str) -> None:
    ws = await open_ws(http, server.url)
    await ws.send_str(frame)
    code, reason = await close_reason(ws)
    assert code == 1008
    assert reason.startswith("invalid message: ") and len(reason.encode()) <= 123


@pytest.mark.parametrize("key", ["id", "channel", "params", "from", "to", "since", "fields", "interval", "points",
                                 "ack", "token", "type"])
async def test_decodable_deep_values_in_every_field_get_an_error(server: LiveServer, http: aiohttp.ClientSession,
                                                                key: str) -> None:
    """A value nested 900 deep decodes, and then must not crash whatever reads it or prints it."""
    ws = await open_ws(http, server.url)
    deep = json.loads(nest(DECODABLE))
    await ws.send_json({"type": "subscribe", "id": "live", "channel": "random-walk"})
    for kind in ("subscribe", "publish", "unsubscribe", "nope"):
        msg: dict[str, Any] = {"type": kind, "id": "x", "channel": "n5/wsdeep", "points": {"v": 1}}
        msg[key] = deep
        await ws.send_str(json.dumps(msg))
    got = await replies_until_pong(ws)
    errors = [m for m in got if m["type"] == "error"]
    assert errors, got
    assert not [m for m in errors if "internal error" in m["message"]]
    await live_data(ws)
    await ws.close()


async def test_publish_with_a_bad_time_is_an_error_and_the_socket_lives(server: LiveServer,
                                                                         http: aiohttp.ClientSession) -> None:
    ws = await open_ws(http, server.url)
    await ws.send_json({"type": "subscribe", "id": "live", "channel": "random-walk"})
    for value in UNICODE_DIGITS:
        await ws.send_json({"type": "publish", "channel": "n5/wspub", "points": {"time": value, "v": 1}, "ack": value})
    got = await replies_until_pong(ws)
    errors = [m for m in got if m["type"] == "error"]
    assert [e["ack"] for e in errors] == UNICODE_DIGITS
    assert all("time must be epoch ms" in e["message"] for e in errors)
    await live_data(ws)  # the subscription on the same socket keeps streaming
    await ws.close()
    assert "n5/wspub" not in await channels(http, server.url)


@pytest.mark.parametrize("ack", [[1], {"a": 1}, True, "a" * 129, "", 2**60])
async def test_acks_are_short_strings_or_numbers(server: LiveServer, http: aiohttp.ClientSession, ack: Any) -> None:
    ws = await open_ws(http, server.url)
    await ws.send_json({"type": "publish", "channel": "n5/ack", "points": {"v": 1}, "ack": ack})
    got = await replies_until_pong(ws)
    assert len(got) == 1 and got[0]["type"] == "error" and "ack must be" in got[0]["message"]
    await ws.close()


async def test_server_kept_serving(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/api/health") as r:
        assert r.status == 200
