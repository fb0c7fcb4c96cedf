"""Upstream stream sources against real servers: a ``livedata serve`` (reference stream, its own
protocol over NDJSON, SSE and WebSocket) and NDJSON/SSE/WebSocket servers written in the test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from livedata.brokers.base import Broker
from livedata.core.frames import Batch
from livedata.core.sourcespec import parse_stream
from livedata.sources.base import BrokerSink, PublishError
from livedata.sources.stream import StreamSource
from tests.conftest import LiveServer
from tests.sources.test_mqtt_source import count, rows, until


@pytest.fixture(scope="module")
def upstream() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()


def make(broker: Broker, **keys: Any) -> StreamSource:
    spec = parse_stream({"channel": "copy", **keys})
    return StreamSource(spec, BrokerSink(broker), last_time=broker.last_time)


async def test_the_reference_stream_becomes_rows_of_series(upstream: LiveServer, broker: Broker) -> None:
    src = make(broker, url=f"{upstream.url}/?numSeries=3")
    src.start()
    try:
        await until(lambda: count(broker, "copy"), what="rows")
        await asyncio.sleep(0.5)
        got = await rows(broker, "copy")
        assert len(got) >= 5
        assert all(set(v) == {"series0", "series1", "series2"} for _, v in got)  # whole rows, none split
        times = [t for t, _ in got]
        # In time order. Not necessarily distinct: a reference ticker that is late (a loaded machine)
        # sends its catch-up ticks back to back, and two may carry the same millisecond (each a whole row).
        assert times == sorted(times)
        assert src.decoder.kind == "reference" and src.status.state == "up"
    finally:
        await src.stop()


class AmbiguousSink(BrokerSink):
    """Every other write is stored and then fails as if its answer was lost (a Redis timeout)."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.writes = 0
        self.lost_answers = 0

    async def publish(self, channel: str, batch: Batch, key: str | None = None) -> None:
        await super().publish(channel, batch, key)
        self.writes += 1
        if self.writes % 2:
            self.lost_answers += 1
            raise PublishError("broker", "the broker did not answer: the outcome is unknown")


async def test_a_batch_whose_write_had_an_unknown_outcome_is_stored_once(upstream: LiveServer, broker: Broker) -> None:
    sink = AmbiguousSink(broker)
    src = StreamSource(parse_stream({"channel": "copy", "url": f"{upstream.url}/?numSeries=2"}), sink)
    src.start()
    try:
        await until(lambda: sink.lost_answers >= 5 and sink.writes >= 10, what="writes")
    finally:
        await src.stop()
    times = [t for t, _ in await rows(broker, "copy")]
    assert times and len(set(times)) == len(times), f"{len(times) - len(set(times))} rows stored twice"
    assert src.status.points <= len(times)  # a batch whose answer was lost at stop is not counted


async def _push(url: str, channel: str, points: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/api/push/{channel}", json=points) as r:
        assert r.status == 204, await r.text()


class Proxy:
    """A TCP proxy in front of a server whose connections the test can cut."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server: asyncio.Server | None = None
        self.conns: list[asyncio.StreamWriter] = []
        self.accepted = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self.conns += [w, uw]

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            try:
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            except OSError:
                pass
            finally:
                b.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def cut(self) -> None:
        for w in self.conns:
            w.transport.abort()
        self.conns.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(upstream: LiveServer) -> AsyncIterator[Proxy]:
    p = Proxy(upstream.port)
    await p.start()
    yield p
    await p.close()


@pytest.mark.parametrize("carrier", ["ndjson", "sse", "ws"])
async def test_one_livedata_follows_another_and_resumes_with_since(
        upstream: LiveServer, proxy: Proxy, broker: Broker, carrier: str) -> None:
    channel = f"follow/{carrier}/{time.time_ns()}"
    port = proxy.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    t0 = int(time.time() * 1000) - 10_000
    await _push(upstream.url, channel, [{"time": t0 + i, "n": i, "host": "a"} for i in range(50)])
    if carrier == "ws":
        keys: dict[str, Any] = {"url": f"ws://127.0.0.1:{port}/api/ws",
                                "subscribe": {"type": "subscribe", "id": "A", "channel": channel, "from": "now-1m"}}
    else:
        keys = {"url": f"http://127.0.0.1:{port}/api/stream?channel={channel}&from=now-1m"}
        if carrier == "sse":
            keys["headers"] = {"Accept": "text/event-stream"}
    src = make(broker, **keys)
    src.start()
    try:
        await until(lambda: src.status.points >= 50, what="the backfill")
        assert src.decoder.kind == "livedata" and src.decoder.position
        proxy.cut()
        await _push(upstream.url, channel, [{"time": t0 + i, "n": i, "host": "a"} for i in range(50, 100)])
        await until(lambda: src.status.points >= 100 and proxy.accepted >= 2, what="the resumed stream")
        await asyncio.sleep(0.3)
        got = await rows(broker, "copy")
        assert [v["n"] for _, v in got] == list(range(100))  # nothing missed, nothing twice
        assert [t for t, _ in got] == [t0 + i for i in range(100)]
        assert got[0][1]["host"] == "a"
        fields = {f.key: f.type for f in await broker.fields("copy") or []}
        assert fields == {"n": "number", "host": "string"}
    finally:
        await src.stop()


async def test_a_restarted_follower_resumes_from_its_channels_last_time(upstream: LiveServer, broker: Broker) -> None:
    channel = f"restart/{time.time_ns()}"
    t0 = int(time.time() * 1000) - 10_000
    await _push(upstream.url, channel, [{"time": t0 + i, "n": i} for i in range(10)])
    url = f"{upstream.url}/api/stream?channel={channel}&from=now-1m"
    first = make(broker, url=url)
    first.start()
    await until(lambda: first.status.points >= 10, what="the first run")
    await first.stop()
    await _push(upstream.url, channel, [{"time": t0 + i, "n": i} for i in range(10, 20)])
    second = make(broker, url=url)  # a new process would start like this: no position known
    second.start()
    try:
        await until(lambda: second.status.points >= 10, what="the second run")
        await asyncio.sleep(0.3)
        assert [v["n"] for _, v in await rows(broker, "copy")] == list(range(20))
    finally:
        await second.stop()


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


async def test_json_lines_over_ndjson_sse_and_websocket_with_a_bad_line(broker: Broker) -> None:
    done = asyncio.Event()
    t0 = int(time.time()) - 60  # seconds, recent: within the broker's retention
    lines = [b'{"ts": %d, "temp": 20.5}' % t0, b'{"ts": %d, "temp": ' % (t0 + 1), b'{"ts": %d, "temp": 21}' % (t0 + 2),
             b'{"ts": %d, "temp": "hot"}' % (t0 + 3), b'{"ts": %d, "temp": 22, "unit": "C"}' % (t0 + 4)]

    async def ndjson(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in lines:
            await resp.write(line[:7])  # lines split across writes
            await resp.write(line[7:] + b"\r\n")
        await done.wait()
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": hello\n\n")
        for i, line in enumerate(lines):
            await resp.write(b"id: %d\ndata: %s\n\n" % (i, line))
        await done.wait()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        w = web.WebSocketResponse()
        await w.prepare(request)
        msg = await w.receive_str()
        assert json.loads(msg) == {"subscribe": "temps"}
        for line in lines:
            await w.send_str(line.decode())
        await done.wait()
        return w

    app = web.Application()
    app.router.add_get("/ndjson", ndjson)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws)
    runner, port = await _serve(app)
    srcs: list[StreamSource] = []
    try:
        for path in ("ndjson", "sse", "ws"):
            keys: dict[str, Any] = {"url": f"http://127.0.0.1:{port}/{path}", "channel": f"j/{path}", "name": path}
            if path == "ws":
                keys.update(url=f"ws://127.0.0.1:{port}/ws", subscribe='{"subscribe": "temps"}')
            spec = parse_stream(keys)
            src = StreamSource(spec, BrokerSink(broker))
            src.start()
            srcs.append(src)
        for path, src in zip(("ndjson", "sse", "ws"), srcs, strict=True):
            await until(lambda s=src: sum(s.status.errors.values()) >= 2 and s.status.points >= 3,  # type: ignore[misc]
                        what=f"{path}: 3 points and 2 errors")
            got = await rows(broker, f"j/{path}")
            assert [t for t, _ in got] == [t0 * 1000, (t0 + 2) * 1000, (t0 + 4) * 1000], path
            assert got[-1][1] == {"temp": 22, "unit": "C"}
            assert src.status.errors == {"json": 1, "schema": 1}, path
            assert src.decoder.kind == "json" and src.status.state == "up"
    finally:
        for src in srcs:
            await src.stop()
        done.set()
        await runner.cleanup()


async def test_an_upstream_error_status_is_reported_and_retried(broker: Broker) -> None:
    hits = 0

    async def missing(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({"error": "no such stream"}, status=404)

    app = web.Application()
    app.router.add_get("/gone", missing)
    runner, port = await _serve(app)
    src = StreamSource(parse_stream({"url": f"http://127.0.0.1:{port}/gone", "channel": "x"}), BrokerSink(broker))
    src.start()
    try:
        await until(lambda: hits >= 2, what="a retry")
        assert src.status.state in ("down", "connecting")
        assert "404" in (src.status.last_error or "") and "no such stream" in (src.status.last_error or "")
    finally:
        await src.stop()
        await runner.cleanup()
