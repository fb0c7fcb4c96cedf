"""HTTP push and WebSocket publish against a real ``livedata serve``: shapes, limits, order, retries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from livedata.tasks import wait_event
from tests.conftest import LiveServer

Row = tuple[int, dict[str, Any]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


CENTURY_S = "3153600000"
"""--retention for servers whose tests push fixed timestamps from 2023 (1700000000000) and read
them back: retention is by point time, so the default hour would serve none of them."""


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--retention", CENTURY_S]).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(s: aiohttp.ClientSession, url: str, channel: str, body: Any = None, *, data: Any = None,
               content_type: str = "application/json", params: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(body).encode() if data is None else data
    h = {"Content-Type": content_type, **(headers or {})}
    async with s.post(f"{url}/api/push/{channel}", data=raw, headers=h, params=params) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else {})


class Messages:
    """Data messages of one subscription, decoded into rows; other messages kept as they came."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.schemas: list[list[dict[str, Any]]] = []
        self.keys: list[str] = []
        self.all: list[dict[str, Any]] = []
        self.late: list[Row] = []

    def add(self, m: dict[str, Any]) -> None:
        self.all.append(m)
        if m["type"] != "data":
            return
        frame = m["frame"]
        if "schema" in frame:
            fields = frame["schema"]["fields"][1:]
            self.schemas.append(fields)
            self.keys = [f["name"] for f in fields]
        values = frame["data"]["values"]
        for i, t in enumerate(values[0]):
            row = (t, {k: values[j + 1][i] for j, k in enumerate(self.keys) if values[j + 1][i] is not None})
            self.rows.append(row)
            if m.get("late"):
                self.late.append(row)

    def types(self) -> list[str]:
        return [m["type"] for m in self.all]


async def history(s: aiohttp.ClientSession, url: str, channel: str, **query: str) -> Messages:
    """Every point of ``channel`` up to now (a finite NDJSON stream)."""
    out = Messages()
    params = {"channel": channel, "from": "0", "to": str(now_ms() + 60_000 * 0), **query}
    async with s.get(f"{url}/api/stream", params=params) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if line.strip():
                out.add(json.loads(line))
    assert out.types()[-1] == "complete", out.all
    return out


async def channel_names(s: aiohttp.ClientSession, url: str) -> set[str]:
    async with s.get(f"{url}/api/channels") as r:
        return {c["name"] for c in (await r.json())["channels"]}


class WS:
    """A raw WebSocket with a reader that files messages by subscription id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.subs: dict[str, Messages] = {}
        self.other: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            m = json.loads(msg.data)
            sid = m.get("id")
            if isinstance(sid, str):
                self.subs.setdefault(sid, Messages()).add(m)
            else:
                self.other.append(m)
            self.changed.set()

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_json(obj)

    async def until(self, cond: Any, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not cond():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; subs={ {k: v.all for k, v in self.subs.items()} } other={self.other}")
            await wait_event(self.changed, left)

    def sub(self, sid: str) -> Messages:
        return self.subs.setdefault(sid, Messages())


async def open_ws(s: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> WS:
    ws = await s.ws_connect(f"{url}/api/ws", max_msg_size=0, headers=headers)
    w = WS(ws)
    await w.until(lambda: any(m["type"] == "hello" for m in w.other))
    return w


async def subscribed(w: WS, sid: str, channel: str, **extra: Any) -> Messages:
    await w.send({"type": "subscribe", "id": sid, "channel": channel, **extra})
    await w.until(lambda: bool(w.sub(sid).all))
    return w.sub(sid)


# --- JSON shapes -------------------------------------------------------------------------------------


async def test_json_shapes_one_point_list_columnar_rfc3339_and_missing_time(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    url = server.url
    assert (await post(http, url, "shapes/one", {"time": 1_000, "temp": 21.5}))[0] == 204
    assert (await post(http, url, "shapes/list", [{"time": 1_000, "temp": 1}, {"time": 2_000, "temp": 2.5,
                                                                               "door": "open"}]))[0] == 204
    assert (await post(http, url, "shapes/cols", {"time": [1_000, 2_000, 3_000], "a": [1, 2, 3],
                                                  "ok": [True, None, False]}))[0] == 204
    assert (await post(http, url, "shapes/rfc", {"time": "2024-01-01T00:00:00.250Z", "x": 1}))[0] == 204
    before = now_ms()
    assert (await post(http, url, "shapes/now", {"x": 7}))[0] == 204
    after = now_ms()

    assert (await history(http, url, "shapes/one")).rows == [(1_000, {"temp": 21.5})]
    assert (await history(http, url, "shapes/list")).rows == [(1_000, {"temp": 1}),
                                                              (2_000, {"temp": 2.5, "door": "open"})]
    cols = await history(http, url, "shapes/cols")
    assert cols.rows == [(1_000, {"a": 1, "ok": True}), (2_000, {"a": 2}), (3_000, {"a": 3, "ok": False})]
    assert cols.schemas[0] == [{"name": "a", "type": "number"}, {"name": "ok", "type": "boolean"}]
    assert (await history(http, url, "shapes/rfc")).rows == [(1_704_067_200_250, {"x": 1})]
    [(t, fields)] = (await history(http, url, "shapes/now")).rows
    assert before <= t <= after and fields == {"x": 7}


async def test_ndjson_body(server: LiveServer, http: aiohttp.ClientSession) -> None:
    body = b'{"time":1,"v":1}\n\n{"time":2,"v":2}\n'
    status, _ = await post(http, server.url, "shapes/ndjson", data=body, content_type="application/x-ndjson")
    assert status == 204
    assert [t for t, _ in (await history(http, server.url, "shapes/ndjson")).rows] == [1, 2]


async def test_bad_json_and_content_type_are_clear_400_and_415(server: LiveServer,
                                                               http: aiohttp.ClientSession) -> None:
    status, body = await post(http, server.url, "bad/json", data=b"{not json", content_type="application/json")
    assert status == 400 and "malformed JSON" in body["error"]
    status, body = await post(http, server.url, "bad/json", data=b"x", content_type="image/png")
    assert status == 415 and "text/plain" in body["error"]
    status, body = await post(http, server.url, "bad/json", [{"time": 1}])
    assert status == 400 and "no fields" in body["error"] and body["line"] == 1
    status, body = await post(http, server.url, "bad/json", {"time": "yesterday", "x": 1})
    assert status == 400 and "RFC 3339" in body["error"]


# --- line protocol -------------------------------------------------------------------------------------


async def test_line_protocol_channels_per_measurement_tags_as_labels(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    body = (b"cpu,host=a usage=1.5 1700000000000000000\n"
            b"cpu,host=b usage=2i 1700000000000000000\n"
            b"\n# a comment\n"
            b"mem,host=a free=10,swap=false 1700000001000000000\n")
    status, _ = await post(http, server.url, "lp", data=body, content_type="text/plain")
    assert status == 204
    names = await channel_names(http, server.url)
    assert {"lp/cpu", "lp/mem"} <= names
    cpu = await history(http, server.url, "lp/cpu")
    assert cpu.schemas[0] == [
        {"name": 'usage {host="a"}', "type": "number", "labels": {"host": "a"},
         "config": {"displayNameFromDS": 'usage {host="a"}'}},
        {"name": 'usage {host="b"}', "type": "number", "labels": {"host": "b"},
         "config": {"displayNameFromDS": 'usage {host="b"}'}},
    ]
    # Both hosts at one time (one gather): one row of the wide frame, no nulls between them.
    assert cpu.rows == [(1_700_000_000_000, {'usage {host="a"}': 1.5, 'usage {host="b"}': 2})]
    mem = await history(http, server.url, "lp/mem")
    assert mem.rows == [(1_700_000_001_000, {'free {host="a"}': 10.0, 'swap {host="a"}': False})]


@pytest.mark.parametrize(("precision", "stamp"), [("ns", "1700000000123000000"), ("us", "1700000000123000"),
                                                   ("ms", "1700000000123"), ("s", "1700000000")])
async def test_line_protocol_precision(server: LiveServer, http: aiohttp.ClientSession, precision: str,
                                       stamp: str) -> None:
    channel = f"prec/{precision}"
    status, _ = await post(http, server.url, channel, data=f"m v=1 {stamp}".encode(), content_type="text/plain",
                           params={"precision": precision})
    assert status == 204
    [(t, _)] = (await history(http, server.url, f"{channel}/m")).rows
    assert t == (1_700_000_000_000 if precision == "s" else 1_700_000_000_123)


async def test_line_protocol_bad_precision(server: LiveServer, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, server.url, "prec/bad", data=b"m v=1", content_type="text/plain",
                              params={"precision": "h"})
    assert status == 400 and "precision" in body["error"]


# --- all or nothing, schema -------------------------------------------------------------------------------


async def test_all_or_nothing_json_and_line_protocol(server: LiveServer, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, server.url, "aon/json", [{"time": 1, "v": 1}, {"time": 2, "v": [1]},
                                                             {"time": 3, "v": 3}])
    assert status == 400 and body["line"] == 2 and "'v'" in body["error"]
    status, body = await post(http, server.url, "aon/lp", data=b"m v=1 1\nm v=oops 2\nm v=3 3\n",
                              content_type="text/plain")
    assert status == 400 and body["line"] == 2 and "line 2" in body["error"]
    names = await channel_names(http, server.url)
    assert "aon/json" not in names and "aon/lp/m" not in names
    # a line protocol body over two channels, one of them conflicting: neither stores anything
    assert (await post(http, server.url, "aon/two", data=b"a v=1 1", content_type="text/plain"))[0] == 204
    status, body = await post(http, server.url, "aon/two", data=b"b v=1 2\na v=\"s\" 2",
                              content_type="text/plain")
    assert status == 400 and body["field"] == "v"
    assert "aon/two/b" not in await channel_names(http, server.url)


async def test_large_line_protocol_body_parsed_in_slices_is_all_or_nothing(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    # 20,000 lines: several parse slices with yields to the loop in between (ingest.PARSE_SLICE_LINES).
    lines = [f"big,host=h{i % 4} v={i}i {1_700_000_000_000 + i // 4}" for i in range(20_000)]
    bad = list(lines)
    bad[17_000] = "big,host=h0 v=oops 1"
    status, body = await post(http, server.url, "slices", data="\n".join(bad).encode(),
                              content_type="text/plain", params={"precision": "ms"})
    assert status == 400 and body["line"] == 17_001 and "line 17001" in body["error"]
    assert "slices/big" not in await channel_names(http, server.url)
    status, _ = await post(http, server.url, "slices", data="\n".join(lines).encode(),
                           content_type="text/plain", params={"precision": "ms"})
    assert status == 204
    got = await history(http, server.url, "slices/big")
    # Four hosts per millisecond: one row each, every value in place.
    assert len(got.rows) == 5_000
    assert [row[1][f'v {{host="h{i % 4}"}}'] for row in got.rows for i in range(4)] == list(range(20_000))


async def test_schema_conflict_names_the_field(server: LiveServer, http: aiohttp.ClientSession) -> None:
    assert (await post(http, server.url, "schema/c", {"time": 1, "temp": 20.5}))[0] == 204
    status, body = await post(http, server.url, "schema/c", [{"time": 2, "temp": 21}, {"time": 3, "temp": "hot"}])
    assert status == 400
    assert "'temp'" in body["error"]
    status, body = await post(http, server.url, "schema/c", {"time": 4, "temp": "hot"})
    assert status == 400 and body["field"] == "temp" and "number" in body["error"]
    assert (await history(http, server.url, "schema/c")).rows == [(1, {"temp": 20.5})]


async def test_new_field_sends_subscribers_a_new_schema(server: LiveServer, http: aiohttp.ClientSession) -> None:
    await post(http, server.url, "schema/grow", {"time": 1, "a": 1})
    w = await open_ws(http, server.url)
    sub = await subscribed(w, "g", "schema/grow")
    await post(http, server.url, "schema/grow", {"time": 2, "a": 2})
    await post(http, server.url, "schema/grow", {"time": 3, "a": 3, "b": "x"})
    await w.until(lambda: len(sub.rows) == 2)
    assert [[f["name"] for f in s] for s in sub.schemas] == [["a"], ["a", "b"]]
    assert sub.rows == [(2, {"a": 2}), (3, {"a": 3, "b": "x"})]
    await w.ws.close()


# --- limits ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> Iterator[LiveServer]:
    s = LiveServer(["--max-body-bytes", "2000", "--max-channels", "3"],
                   env={"LIVEDATA_MAX_POINTS_PER_REQUEST": "50"}).start()
    yield s
    s.stop()


async def test_body_size_limit_declared_and_chunked(small: LiveServer, http: aiohttp.ClientSession) -> None:
    big = json.dumps([{"time": i, "value": "x" * 20} for i in range(60)]).encode()
    assert len(big) > 2000
    status, body = await post(http, small.url, "lim/a", data=big)
    assert status == 413 and "2000 bytes" in body["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the actual read size counts
        for i in range(0, len(big), 500):
            yield big[i:i + 500]

    async with http.post(f"{small.url}/api/push/lim/a", data=chunks(),
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        assert "2000 bytes" in (await r.json())["error"]
    assert "lim/a" not in await channel_names(http, small.url)


async def test_points_per_request_limit(small: LiveServer, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, small.url, "lim/p", {"time": list(range(51)), "v": [1] * 51})
    assert status == 413 and "51 > 50" in body["error"]
    status, body = await post(http, small.url, "lim/p", data=b"".join(b"m v=1\n" for _ in range(51)),
                              content_type="text/plain")
    assert status == 413 and "51 > 50" in body["error"]


async def test_channel_name_and_channel_count(small: LiveServer, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, small.url, "x" * 257, {"v": 1})
    assert status == 400 and "channel name" in body["error"]
    status, body = await post(http, small.url, "bad%00name", {"v": 1})
    assert status == 400 and "channel name" in body["error"]
    status, body = await post(http, small.url, "random-walk", {"v": 1})
    assert status == 400 and "generated" in body["error"]
    existing = {n for n in await channel_names(http, small.url) if not n.startswith(("random-walk", "sine"))}
    for i in range(3 - len(existing)):
        assert (await post(http, small.url, f"count/{i}", {"v": 1}))[0] == 204
    status, body = await post(http, small.url, "count/extra", {"v": 1})
    assert status == 429 and "--max-channels" in body["error"]
    # pushing to an existing channel still works
    assert (await post(http, small.url, sorted(existing)[0] if existing else "count/0", {"v": 2}))[0] == 204


# --- live delivery -----------------------------------------------------------------------------------------


async def test_push_reaches_websocket_subscriber_in_order(server: LiveServer, http: aiohttp.ClientSession) -> None:
    w = await open_ws(http, server.url)
    sub = await subscribed(w, "A", "live/order")
    t0 = now_ms()
    for i in range(20):
        await post(http, server.url, "live/order", [{"time": t0 + 2 * i, "v": 2 * i},
                                                    {"time": t0 + 2 * i + 1, "v": 2 * i + 1}])
    await w.until(lambda: len(sub.rows) == 40)
    assert [v["v"] for _, v in sub.rows] == list(range(40))
    assert not sub.late
    await w.ws.close()


async def test_late_point_is_marked_late(server: LiveServer, http: aiohttp.ClientSession) -> None:
    w = await open_ws(http, server.url)
    sub = await subscribed(w, "L", "live/late")
    t0 = now_ms() - 10_000  # within retention: history keeps both
    await post(http, server.url, "live/late", {"time": t0 + 2_000, "v": 2})
    await post(http, server.url, "live/late", {"time": t0 + 1_000, "v": 1})
    await w.until(lambda: len(sub.rows) == 2)
    data = [m for m in sub.all if m["type"] == "data" and m["frame"]["data"]["values"][0]]
    assert "late" not in data[0]
    assert data[1]["late"] is True
    assert sub.late == [(t0 + 1_000, {"v": 1})]
    assert [t for t, _ in (await history(http, server.url, "live/late")).rows] == [t0 + 1_000, t0 + 2_000]
    await w.ws.close()


async def test_websocket_publish_and_ack_on_the_subscribed_socket(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    w = await open_ws(http, server.url)
    sub = await subscribed(w, "P", "ws/pub")
    await w.send({"type": "publish", "channel": "ws/pub", "points": [{"time": 5, "v": 1}], "ack": "p1"})
    await w.send({"type": "publish", "channel": "ws/pub", "points": {"time": [6, 7], "v": [2, 3]}, "ack": "p2"})
    await w.send({"type": "publish", "channel": "ws/pub", "points": [{"time": 8, "v": "x"}], "ack": "p3"})
    await w.until(lambda: len([m for m in w.other if m.get("ack")]) == 3 and len(sub.rows) == 3)
    acks = [m for m in w.other if m.get("ack")]
    assert acks[0] == {"type": "ack", "ack": "p1"}
    assert acks[1] == {"type": "ack", "ack": "p2"}
    assert acks[2]["type"] == "error" and acks[2]["ack"] == "p3" and "'v'" in acks[2]["message"]
    assert sub.rows == [(5, {"v": 1}), (6, {"v": 2}), (7, {"v": 3})]
    await w.ws.close()


async def test_delete_channel_notifies_and_completes_subscribers(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    await post(http, server.url, "del/me", {"time": 1, "v": 1})
    w = await open_ws(http, server.url)
    sub = await subscribed(w, "D", "del/me", **{"from": 0})
    async with http.delete(f"{server.url}/api/channels/del/me") as r:
        assert r.status == 204
    await w.until(lambda: "complete" in sub.types())
    notice = next(m for m in sub.all if m["type"] == "notice")
    assert "deleted" in notice["text"]
    assert sub.types()[-2:] == ["notice", "complete"]
    assert "del/me" not in await channel_names(http, server.url)
    async with http.delete(f"{server.url}/api/channels/del/me") as r:
        assert r.status == 404
    await w.ws.close()


# --- idempotency, reorder ----------------------------------------------------------------------------------


async def test_repeated_idempotency_key_is_stored_once(server: LiveServer, http: aiohttp.ClientSession) -> None:
    headers = {"Idempotency-Key": "batch-0001"}
    t0 = now_ms() - 10_000  # recent: retention would hide a duplicate chunk of ancient points
    for _ in range(3):
        async with http.post(f"{server.url}/api/push/idem/a", json=[{"time": t0 + 1, "v": 1}, {"time": t0 + 2, "v": 2}],
                             headers=headers) as r:
            assert r.status == 204
    assert len((await history(http, server.url, "idem/a")).rows) == 2
    # the same key on another channel is another batch
    assert (await post(http, server.url, "idem/b", {"time": t0 + 1, "v": 1}, headers=headers))[0] == 204
    assert len((await history(http, server.url, "idem/b")).rows) == 1
    # a rejected batch does not burn its key: fixed and retried, it is stored
    h2 = {"Idempotency-Key": "batch-0002"}
    assert (await post(http, server.url, "idem/c", {"time": t0 + 1, "v": [1]}, headers=h2))[0] == 400
    assert (await post(http, server.url, "idem/c", {"time": t0 + 1, "v": 1}, headers=h2))[0] == 204
    assert len((await history(http, server.url, "idem/c")).rows) == 1


async def test_concurrent_retries_with_one_key_store_once(server: LiveServer, http: aiohttp.ClientSession) -> None:
    headers = {"Idempotency-Key": "same-key-concurrent"}
    t0 = now_ms() - 10_000
    body = [{"time": t0 + i, "v": i} for i in range(500)]
    results = await asyncio.gather(*(post(http, server.url, "idem/conc", body, headers=headers) for _ in range(8)))
    assert all(status == 204 for status, _ in results)
    assert len((await history(http, server.url, "idem/conc")).rows) == 500


async def test_reorder_window_publishes_sorted(server: LiveServer, http: aiohttp.ClientSession) -> None:
    w = await open_ws(http, server.url)
    sub = await subscribed(w, "R", "reorder/a")
    t0 = now_ms()
    order = [3, 1, 4, 0, 2]
    for i in order:
        status, _ = await post(http, server.url, "reorder/a", {"time": t0 + i, "v": i},
                               params={"reorder_ms": "400"})
        assert status == 204
    await asyncio.sleep(0.15)
    assert sub.rows == [], "held for the window"
    await w.until(lambda: len(sub.rows) == 5, within=3)
    assert [v["v"] for _, v in sub.rows] == [0, 1, 2, 3, 4]
    assert not sub.late
    status, body = await post(http, server.url, "reorder/a", {"v": 1}, params={"reorder_ms": "-1"})
    assert status == 400 and "reorder_ms" in body["error"]
    await w.ws.close()


async def test_line_protocol_with_curls_default_content_type(shared_server: LiveServer) -> None:
    """``curl --data-binary`` sends x-www-form-urlencoded: it is line protocol, as in Influx."""
    import aiohttp as _aiohttp

    async with _aiohttp.ClientSession() as s:
        async with s.post(f"{shared_server.url}/api/push/curl?precision=s", data=b"m,host=a v=1.5 1700000000",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 204, await r.text()
        async with s.get(f"{shared_server.url}/api/channels") as r:
            names = {c["name"]: c for c in (await r.json())["channels"]}
    assert names["curl/m"]["schema"][0]["labels"] == {"host": "a"}
