"""The live protocol against a real ``livedata serve``: WebSocket, NDJSON and SSE."""

from __future__ import annotations

import asyncio
import json
import time
from itertools import pairwise

import aiohttp
import pytest

from tests.conftest import LiveServer
from tests.integration.wsclient import Points, collect


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def push(s: aiohttp.ClientSession, url: str, channel: str, points: object) -> None:
    async with s.post(f"{url}/api/push/{channel}", json=points) as r:
        assert r.status == 204, await r.text()


async def test_two_channels_backfill_then_live_then_resume_exactly_once(shared_server: LiveServer) -> None:
    url = shared_server.url
    subs = [
        {"type": "subscribe", "id": "rw", "channel": "random-walk", "params": {"series": 2}, "from": "now-10s"},
        {"type": "subscribe", "id": "sn", "channel": "sine", "from": "now-10s", "interval": 200},
    ]
    pts = Points()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{url}/api/ws", max_msg_size=0) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello"
            for m in subs:
                await ws.send_json(m)
            await collect(ws, pts, 1.5)
        # schema packet first, at once, with ten seconds of history
        for sid, nfields in (("rw", 2), ("sn", 1)):
            first = pts.first_data[sid]
            assert first["frame"]["schema"]["fields"][0] == {"name": "time", "type": "time"}
            assert len(first["frame"]["schema"]["fields"]) == 1 + nfields
            times = pts.times(sid)
            assert times[0] <= now_ms() - 9_000
            assert times[-1] >= now_ms() - 1_500  # and live points after it
            assert all(b - a == 50 for a, b in pairwise(times)), "a gap or duplicate"
        # cut, wait, resume with `since` on a new socket: every point exactly once
        await asyncio.sleep(0.6)
        async with s.ws_connect(f"{url}/api/ws", max_msg_size=0) as ws:
            await ws.receive_json(timeout=5)
            for m in subs:
                await ws.send_json({k: v for k, v in m.items() if k != "from"} | {"since": pts.position[m["id"]]})
            await collect(ws, pts, 1.0)
        for sid in ("rw", "sn"):
            times = pts.times(sid)
            assert all(b - a == 50 for a, b in pairwise(times)), f"{sid}: gap or duplicate across the resume"
            assert times[-1] >= now_ms() - 1_000
        assert not pts.of_type("error")


async def test_pushed_channel_history_live_and_late_points(shared_server: LiveServer) -> None:
    url = shared_server.url
    t0 = now_ms() - 5_000
    async with aiohttp.ClientSession() as s:
        await push(s, url, "test/late", [{"time": t0 + i * 100, "v": float(i)} for i in range(10)])
        async with s.ws_connect(f"{url}/api/ws") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "subscribe", "id": "A", "channel": "test/late", "from": t0 - 1})
            pts = Points()
            await collect(ws, pts, 2, until=lambda p: len(p.rows["A"]) >= 10)
            assert [v["v"] for _, v in pts.rows["A"]] == [float(i) for i in range(10)]
            await push(s, url, "test/late", [{"time": t0 + 2_000, "v": 20.0}])
            await push(s, url, "test/late", [{"time": t0 + 50, "v": 0.5}])  # older than the newest: late
            await push(s, url, "test/late", {"time": t0 + 3_000, "v": 30.0, "note": "new field"})
            await collect(ws, pts, 2, until=lambda p: len(p.rows["A"]) >= 13)
        data = pts.of_type("data", "A")
        late = [m for m in data if m.get("late")]
        assert len(late) == 1
        assert late[0]["frame"]["data"]["values"] == [[t0 + 50], [0.5]]
        on_time = [t for m in data if not m.get("late") for t in m["frame"]["data"]["values"][0]]
        assert on_time == sorted(on_time)
        # the new field came with a new schema
        assert [f["name"] for f in data[-1]["frame"]["schema"]["fields"]] == ["time", "v", "note"]
        assert pts.rows["A"][-1] == (t0 + 3_000, {"v": 30.0, "note": "new field"})


async def test_finite_range_is_history_then_complete(shared_server: LiveServer) -> None:
    url = shared_server.url
    t0 = now_ms() - 60_000
    async with aiohttp.ClientSession() as s:
        await push(s, url, "test/finite", {"time": list(range(t0, t0 + 1000, 10)), "v": list(range(100))})
        async with s.ws_connect(f"{url}/api/ws") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "subscribe", "id": "F", "channel": "test/finite",
                                "from": t0 + 100, "to": t0 + 199})
            pts = Points()
            await collect(ws, pts, 3, until=lambda p: bool(p.of_type("complete")))
    assert pts.times("F") == list(range(t0 + 100, t0 + 200, 10))
    assert pts.of_type("complete", "F")


async def test_bad_input_gets_errors_and_other_subscriptions_keep_streaming() -> None:
    server = LiveServer(["--max-subscriptions", "4"]).start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "subscribe", "id": "ok", "channel": "random-walk"})
            bad = [
                ({"type": "launch"}, "unknown message type"),
                ({"type": "subscribe", "id": "b1", "channel": "a//b"}, "invalid channel name"),
                ({"type": "subscribe", "id": "b2", "channel": "random-walk", "params": {"x": 1}}, "unknown param"),
                ({"type": "subscribe", "id": "b3", "channel": "c", "from": "now", "to": "now-1h"}, "is after to"),
                ({"type": "subscribe", "id": "ok", "channel": "sine"}, "duplicate subscription id"),
                ({"type": "unsubscribe", "id": "nope"}, "no subscription"),
                ({"type": "subscribe", "id": "b4", "channel": "c", "since": "garbage"}, "invalid position"),
            ]
            for msg, _ in bad:
                await ws.send_json(msg)
            await ws.send_json({"no": "type"})  # a JSON object that is not a message: an error, the socket goes on
            for i in range(3):
                await ws.send_json({"type": "subscribe", "id": f"m{i}", "channel": "sine"})
            await ws.send_json({"type": "subscribe", "id": "m9", "channel": "sine"})
            pts = Points()
            await collect(ws, pts, 2.0)
            errors = pts.of_type("error")
            texts = " | ".join(e["message"] for e in errors)
            for _, needle in bad:
                assert needle in texts
            assert "a message needs a string 'type'" in texts
            assert any("too many subscriptions" in e["message"] and e["id"] == "m9" for e in errors)
            assert len(pts.rows["ok"]) >= 10, "the good subscription stopped"
        # a frame that is not a JSON object, or a binary frame, is a broken frame: close 1008 with the reason
        for frame, reason in (("{not json", "invalid message: malformed JSON"), ("[1]", "must be a JSON object"),
                              (b"\x00\x01", "binary frames are not accepted")):
            async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws") as ws:
                await ws.receive_json()
                await ws.send_json({"type": "subscribe", "id": "ok", "channel": "random-walk"})
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
                msg = await ws.receive(timeout=5)
                while msg.type == aiohttp.WSMsgType.TEXT:  # packets already on their way
                    msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1008
                assert reason in msg.extra
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/api/health") as r:
            assert r.status == 200
    finally:
        server.stop()


async def test_ndjson_stream_and_finite_end(shared_server: LiveServer) -> None:
    url = shared_server.url
    t0 = now_ms() - 10_000
    async with aiohttp.ClientSession() as s:
        await push(s, url, "test/ndjson", {"time": [t0, t0 + 1, t0 + 2], "v": [1, 2, 3]})
        async with s.get(f"{url}/api/stream", params={"channel": "test/ndjson", "from": str(t0),
                                                      "to": str(t0 + 5)}) as r:
            assert r.headers["Content-Type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in (await r.read()).splitlines()]
        assert [m["type"] for m in lines] == ["hello", "data", "complete"]
        assert lines[1]["frame"]["data"]["values"] == [[t0, t0 + 1, t0 + 2], [1, 2, 3]]
        async with s.get(f"{url}/api/stream", params={"channel": "random-walk", "series": "500"}) as r:
            assert r.status == 400
            assert "series" in (await r.json())["error"]


async def test_sse_with_last_event_id_resumes(shared_server: LiveServer) -> None:
    url = shared_server.url
    t0 = now_ms() - 10_000
    async with aiohttp.ClientSession() as s:
        await push(s, url, "test/sse", {"time": [t0], "v": [1]})
        headers = {"Accept": "text/event-stream"}
        async with s.get(f"{url}/api/stream", params={"channel": "test/sse", "from": str(t0)}, headers=headers) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            text = ""
            while "data: {\"type\":\"data\"" not in text or "\n\n" not in text.split('"type":"data"')[1]:
                text += (await r.content.readany()).decode()
        event_id = next(line[4:] for line in text.splitlines() if line.startswith("id: "))
        await push(s, url, "test/sse", {"time": [t0 + 1, t0 + 2], "v": [2, 3]})
        headers["Last-Event-ID"] = event_id
        async with s.get(f"{url}/api/stream", params={"channel": "test/sse"}, headers=headers) as r:
            text = ""
            while text.count("\n\n") < 3:
                text += (await r.content.readany()).decode()
        datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        rows = [v for m in datas if m["type"] == "data" for v in m["frame"]["data"]["values"][1]]
        assert rows == [2, 3]


async def test_stalled_reader_is_closed_as_slow_and_others_keep_up() -> None:
    import socket

    server = LiveServer(["--buffer-bytes", "65536"]).start()
    try:
        async with aiohttp.ClientSession() as s:
            # a raw socket that subscribes and then never reads (small receive window)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(f"GET /api/stream?channel=test/flood HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
                         .encode())
            async with s.ws_connect(f"{server.url}/api/ws", max_msg_size=0) as ws:
                await ws.receive_json()
                await ws.send_json({"type": "subscribe", "id": "fast", "channel": "test/flood"})
                pts = Points()
                await collect(ws, pts, 2, until=lambda p: "fast" in p.first_data)
                t0 = now_ms()
                n = 0
                for _ in range(40):
                    await push(s, server.url, "test/flood", {"time": list(range(t0 + n, t0 + n + 5000)),
                                                             "v": list(range(n, n + 5000))})
                    n += 5000
                    await collect(ws, pts, 0.05)
                await collect(ws, pts, 10, until=lambda p: len(p.rows["fast"]) >= n)
                assert [v["v"] for _, v in pts.rows["fast"]] == list(range(n)), "the fast reader lost points"
            async with s.get(f"{server.url}/metrics") as r:
                text = await r.text()
            assert "livedata_slow_disconnects_total 1.0" in text
            assert "livedata_connections_open 0.0" in text
            sock.close()
    finally:
        server.stop()


async def test_heartbeat_on_an_idle_subscription() -> None:
    server = LiveServer(["--heartbeat", "0.3"]).start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "subscribe", "id": "A", "channel": "nothing/here"})
            pts = Points()
            await collect(ws, pts, 1.5, until=lambda p: bool(p.of_type("heartbeat")))
            assert pts.of_type("heartbeat")
            assert pts.first_data["A"]["frame"]["data"]["values"] == [[]]
    finally:
        server.stop()


async def test_channels_listing(shared_server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s:
        await push(s, shared_server.url, "test/listed", {"time": now_ms(), "temp": 21.5})
        async with s.get(f"{shared_server.url}/api/channels") as r:
            body = await r.json()
    by_name = {c["name"]: c for c in body["channels"]}
    assert by_name["test/listed"]["schema"] == [{"name": "temp", "type": "number"}]
    assert by_name["test/listed"]["last_time"] is not None
    assert by_name["random-walk"]["generated"] is True


@pytest.mark.parametrize("origin", ["http://evil.example"])
async def test_websocket_origin_is_checked(shared_server: LiveServer, origin: str) -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(f"{shared_server.url}/api/ws", headers={"Origin": origin})
        assert err.value.status == 403
        async with s.ws_connect(f"{shared_server.url}/api/ws", headers={"Origin": "http://localhost:3000"}) as ws:
            assert (await ws.receive_json())["type"] == "hello"


async def test_websocket_accepts_its_own_origin_but_not_a_rebound_dns_name(shared_server: LiveServer) -> None:
    port = shared_server.port
    async with aiohttp.ClientSession() as s:
        own = f"http://localhost:{port}"
        async with s.ws_connect(f"http://localhost:{port}/api/ws", headers={"Origin": own}) as ws:
            assert (await ws.receive_json())["type"] == "hello"
        # DNS rebinding: the page's name resolves to 127.0.0.1, Origin and Host agree, but the name is foreign
        rebound = f"http://evil.example:{port}"
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(f"http://127.0.0.1:{port}/api/ws",
                               headers={"Origin": rebound, "Host": f"evil.example:{port}"})
        assert err.value.status == 403
