"""The Python client (``livedata.client``) against a real ``livedata serve``.

Connection faults come from a small TCP proxy between the client and the server: it can cut every
connection, answer the next POST with 503, or forward a POST and drop the server's answer (the
case where only an idempotency key prevents a duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from livedata.client import Client, Field, Frame, LivedataError, Notice, Subscription, SyncClient, connect
from tests.conftest import LiveServer, free_port
from tests.integration.test_ingest import history


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Proxy:
    """A TCP proxy to ``127.0.0.1:target`` with fault injection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.fail_next_posts = 0
        self.drop_next_answers = 0
        self.posts = 0
        self.conns: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()

    def cut(self) -> None:
        """Close every connection now (both directions)."""
        for w in list(self.conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.add(writer)
        up_w: asyncio.StreamWriter | None = None
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
            self.conns.add(up_w)
            drop = asyncio.Event()
            done = asyncio.Event()

            async def upstream() -> None:  # client -> server; every request starts a read
                assert up_w is not None
                while data := await reader.read(1 << 16):
                    if data.startswith(b"POST"):
                        self.posts += 1
                        if self.fail_next_posts > 0:
                            self.fail_next_posts -= 1
                            body = b'{"error":"injected: the broker is unavailable"}'
                            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                            await writer.drain()
                            return
                        if self.drop_next_answers > 0:
                            self.drop_next_answers -= 1
                            drop.set()
                    up_w.write(data)
                    await up_w.drain()

            async def downstream() -> None:  # server -> client, unless this answer is to be lost
                while data := await up_r.read(1 << 16):
                    if drop.is_set():
                        return
                    writer.write(data)
                    await writer.drain()

            async def run(f: Any) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    await f()
                done.set()

            tasks = [asyncio.ensure_future(run(upstream)), asyncio.ensure_future(run(downstream))]
            await done.wait()
            for t in tasks:
                t.cancel()
        except OSError:
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    w.transport.abort()
                    self.conns.discard(w)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


@pytest.fixture
async def proxy(server: LiveServer) -> AsyncIterator[Proxy]:
    p = await Proxy(server.port).start()
    yield p
    await p.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def push(http: aiohttp.ClientSession, url: str, channel: str, points: Any) -> None:
    async with http.post(f"{url}/api/push/{channel}", json=points) as r:
        assert r.status == 204, await r.text()


async def take(sub: Subscription, n_points: int, within: float = 10.0) -> tuple[list[Frame], list[Notice]]:
    """Read ``sub`` until ``n_points`` points arrived."""
    frames: list[Frame] = []
    notices: list[Notice] = []

    async def run() -> None:
        got = 0
        async for item in sub:
            if isinstance(item, Notice):
                notices.append(item)
                continue
            frames.append(item)
            got += len(item)
            if got >= n_points:
                return

    await asyncio.wait_for(run(), within)
    return frames, notices


def rows(frames: list[Frame]) -> list[dict[str, Any]]:
    return [p for f in frames for p in f.points()]


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


# --- subscribe ---------------------------------------------------------------------------------------


async def test_typed_frames_history_then_live(server: LiveServer, http: aiohttp.ClientSession) -> None:
    t0 = now_ms() - 5_000
    async with http.post(f"{server.url}/api/push/cl", data=f"cpu,host=a usage=1.5 {t0}\ncpu,host=b usage=2 {t0}",
                         params={"precision": "ms"}, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 204
    async with Client(server.url) as c:
        sub = await c.subscribe("cl/cpu", from_="now-1m")
        [first], _ = await take(sub, 1)
        assert first.channel == "cl/cpu" and first.id == sub.id and not first.late
        assert first.schema_changed and first.position
        assert first.schema == [Field('usage {host="a"}', "number", {"host": "a"}),
                                Field('usage {host="b"}', "number", {"host": "b"})]
        assert first.times == [t0]  # two series at one time share a row
        assert first.fields == {'usage {host="a"}': [1.5], 'usage {host="b"}': [2]}
        assert first.points() == [{"time": t0, 'usage {host="a"}': 1.5, 'usage {host="b"}': 2}]
        async with http.post(f"{server.url}/api/push/cl", data=f"cpu,host=a usage=3 {t0 + 1}",
                             params={"precision": "ms"}, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204
        [live], _ = await take(sub, 1)
        assert live.points() == [{"time": t0 + 1, 'usage {host="a"}': 3.0}]
        assert not live.schema_changed and live.position != first.position
        await sub.close()


async def test_interleaved_series_missing_cells_are_none_and_series_drops_them(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    """The wire marks missing cells Undef (protocol.md); the client's Frame has None there."""
    t0 = now_ms() - 5_000
    lines = "\n".join(f"cpu,host={'ab'[i % 2]} usage={i} {t0 + i}" for i in range(6))
    async with http.post(f"{server.url}/api/push/il", data=lines, params={"precision": "ms"},
                         headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 204
    async with Client(server.url) as c:
        sub = await c.subscribe("il/cpu", from_="now-1m")
        [first], _ = await take(sub, 1)
        assert first.times == [t0 + i for i in range(6)]
        assert first.fields == {'usage {host="a"}': [0, None, 2, None, 4, None],
                                'usage {host="b"}': [None, 1, None, 3, None, 5]}
        assert first.series() == {'usage {host="a"}': ([t0, t0 + 2, t0 + 4], [0, 2, 4]),
                                  'usage {host="b"}': ([t0 + 1, t0 + 3, t0 + 5], [1, 3, 5])}
        await sub.close()


async def test_two_subscriptions_share_one_websocket(server: LiveServer, http: aiohttp.ClientSession) -> None:
    before = await metric(http, server.url, 'livedata_connections_total{carrier="ws"}')
    async with Client(server.url) as c:
        a = await c.subscribe("mux/a")
        b = await c.subscribe("mux/b", fields=["y"])
        t = now_ms()
        await push(http, server.url, "mux/a", [{"time": t, "x": 1}, {"time": t + 1, "x": 2}])
        await push(http, server.url, "mux/b", {"time": t, "y": "hi", "z": 0})
        fa, fb = await asyncio.gather(take(a, 2), take(b, 1))
        assert [p["x"] for p in rows(fa[0])] == [1, 2]
        assert rows(fb[0]) == [{"time": t, "y": "hi"}]
    after = await metric(http, server.url, 'livedata_connections_total{carrier="ws"}')
    assert after - before == 1


async def test_finite_subscription_completes_and_error_raises(server: LiveServer,
                                                              http: aiohttp.ClientSession) -> None:
    t = now_ms() - 2_000
    await push(http, server.url, "fin/a", [{"time": t, "v": 1}, {"time": t + 1, "v": 2}])
    async with Client(server.url) as c:
        sub = await c.subscribe("fin/a", from_=t - 10, to=t + 10)
        got = [p async for f in sub.frames() for p in f.points()]
        assert got == [{"time": t, "v": 1}, {"time": t + 1, "v": 2}]
        bad = await c.subscribe("random-walk", params={"colour": "red"})
        with pytest.raises(LivedataError, match="unknown param 'colour'"):
            async for _ in bad:
                pass
        # the socket is still fine for others
        ok = await c.subscribe("random-walk", from_="now-1s", to="now")
        assert sum([len(f) async for f in ok.frames()]) > 5


async def test_deleted_channel_gives_notice_then_ends(server: LiveServer, http: aiohttp.ClientSession) -> None:
    await push(http, server.url, "cdel/a", {"v": 1})
    notices: list[Notice] = []
    async with Client(server.url, on_notice=notices.append) as c:
        sub = await c.subscribe("cdel/a", from_="now-1m")
        frames = sub.frames()
        rows = 0
        while rows == 0:  # subscribed and the point backfilled before the channel goes
            rows += len(await asyncio.wait_for(anext(frames), 10))
        async with http.delete(f"{server.url}/api/channels/cdel/a") as r:
            assert r.status == 204
        rows += sum([len(f) async for f in frames])
        assert rows == 1
        assert len(notices) == 1 and "deleted" in notices[0].text


async def test_resume_after_connection_cut_every_point_exactly_once(
        server: LiveServer, proxy: Proxy, http: aiohttp.ClientSession) -> None:
    notices: list[Notice] = []
    t0 = now_ms() - 10_000
    await push(http, server.url, "resume/a", [{"time": t0 + i, "v": i} for i in range(10)])
    async with Client(proxy.url, reconnect_initial_s=0.05, on_notice=notices.append) as c:
        sub = await c.subscribe("resume/a", from_=t0)
        got: list[int] = []

        async def reader() -> None:
            async for f in sub.frames():
                got.extend(p["v"] for p in f.points())  # type: ignore[misc]
                if len(got) >= 60:
                    return

        task = asyncio.ensure_future(reader())
        for k in range(1, 6):
            await asyncio.sleep(0.1)
            proxy.cut()  # the client reconnects and resumes with since
            base = 10 * k
            await push(http, server.url, "resume/a", [{"time": t0 + base + i, "v": base + i} for i in range(10)])
        await asyncio.wait_for(task, 15)
        assert got == list(range(60)), "a gap or a duplicate across the reconnects"
        assert c.reconnects >= 5
        assert notices == []


async def test_resume_after_server_restart_on_same_port(http: aiohttp.ClientSession) -> None:
    """Memory broker: a restart loses history, so the client says so (lost=-1: unknown), then goes on."""
    port = free_port()
    s = LiveServer(port=port).start()
    try:
        async with Client(s.url, reconnect_initial_s=0.05, reconnect_max_s=0.5) as c:
            sub = await c.subscribe("restart/a")
            await push(http, s.url, "restart/a", {"time": now_ms(), "v": 1})
            frames, _ = await take(sub, 1)
            assert rows(frames)[0]["v"] == 1
            s.stop()
            await asyncio.sleep(0.3)
            s = LiveServer(port=port).start()
            deadline = time.monotonic() + 10
            while c.reconnects < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await push(http, s.url, "restart/a", {"time": now_ms(), "v": 2})
            frames, notices = await take(sub, 1)
            assert [p["v"] for p in rows(frames)] == [2]
            assert len(notices) == 1
            assert notices[0].lost == -1 and "another broker epoch" in notices[0].text
    finally:
        s.stop()


async def test_cannot_connect_is_a_clear_error() -> None:
    async with Client(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(LivedataError, match="cannot connect"):
            await c.subscribe("x")


# --- push ----------------------------------------------------------------------------------------------


async def test_push_batches_by_size_and_time(server: LiveServer, proxy: Proxy, http: aiohttp.ClientSession) -> None:
    async with Client(proxy.url, batch_points=10, batch_ms=50) as c:
        t0 = now_ms() - 1_000
        for i in range(25):
            await c.push_point("batch/a", time=t0 + i, v=i)
        assert proxy.posts == 2  # two full batches went at once
        await asyncio.sleep(0.3)  # the rest within batch_ms
        assert proxy.posts == 3
        await c.push("batch/a", {"time": [t0 + 25, t0 + 26], "v": [25, 26]})
        await c.push("batch/a", [{"time": t0 + 27, "v": 27, "w": "x"}])
        await c.flush()
        assert proxy.posts == 4
    h = await history(http, server.url, "batch/a")
    assert [r["v"] for _, r in h.rows] == list(range(28))
    assert h.rows[-1][1] == {"v": 27, "w": "x"}


async def test_push_point_without_time_gets_the_client_clock(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with Client(server.url, batch_ms=1_000) as c:
        t1 = now_ms()
        await c.push_point("batch/clock", v=1)
        await asyncio.sleep(0.2)
        await c.push_point("batch/clock", v=2)
        t2 = now_ms()
    (ta, _), (tb, _) = (await history(http, server.url, "batch/clock")).rows
    assert t1 <= ta < tb <= t2 and tb - ta >= 150


async def test_push_retries_503_and_lost_answers_without_duplicates(
        server: LiveServer, proxy: Proxy, http: aiohttp.ClientSession) -> None:
    t0 = now_ms() - 1_000
    async with Client(proxy.url) as c:
        proxy.fail_next_posts = 2
        await c.send("retry/a", [{"time": t0, "v": 0}])
        assert proxy.posts == 3
        proxy.drop_next_answers = 2  # stored, but the client never hears it: it must retry with the same key
        await c.send("retry/a", [{"time": t0 + 1, "v": 1}, {"time": t0 + 2, "v": 2}])
        assert proxy.posts == 6
    assert [r["v"] for _, r in (await history(http, server.url, "retry/a")).rows] == [0, 1, 2]


async def test_push_rejection_raises_with_status_and_field(server: LiveServer) -> None:
    async with Client(server.url) as c:
        await c.send("rej/a", {"v": 1})
        t = time.monotonic()
        with pytest.raises(LivedataError) as info:
            await c.send("rej/a", [{"v": 2}, {"v": "two"}])
        assert info.value.status == 400 and info.value.line == 2
        assert time.monotonic() - t < 5, "a 4xx is not retried (retrying cannot change the answer)"
        await c.push_point("rej/a", v="three")
        with pytest.raises(LivedataError) as info:
            await c.flush()
        assert info.value.status == 400 and info.value.field == "v"
    assert time.monotonic() - t < 10


async def test_push_gives_up_after_retry_window() -> None:
    async with Client(f"http://127.0.0.1:{free_port()}", retry_for_s=0.3) as c:
        t = time.monotonic()
        with pytest.raises(LivedataError, match=r"push to x failed: .*connection refused.*\(retried for 0.3 s\)"):
            await c.send("x", {"v": 1})
        assert time.monotonic() - t < 3


async def test_connect_helper(server: LiveServer) -> None:
    """``connect`` gives an opened client (its HTTP session exists before any call) that pushes
    and subscribes; ``close`` releases the session and ends its subscriptions."""
    t0 = now_ms() - 1_000
    c = await connect(server.url.replace("http://", "ws://") + "/api/ws")  # any spelling of the server
    try:
        assert c.url == server.url and c.session is not None and not c.session.closed
        session = c.session
        await c.send("conn/a", {"time": t0, "v": 1})
        sub = await c.subscribe("conn/a", from_=0)
        frame = await asyncio.wait_for(anext(aiter(sub.frames())), 10)
        assert frame.times == [t0] and frame.fields == {"v": [1]}
    finally:
        await c.close()
    assert session.closed and c.session is None
    assert sub.done
    async with aiohttp.ClientSession() as s:
        assert [r["v"] for _, r in (await history(s, server.url, "conn/a")).rows] == [1]


def test_sync_client_for_scripts(server: LiveServer) -> None:
    t0 = now_ms() - 1_000
    with SyncClient(server.url, batch_points=100) as c:
        for i in range(5):
            c.push_point("sync/a", time=t0 + i, v=i)
        c.push("sync/a", [{"time": t0 + 5, "v": 5}])
    with SyncClient(server.url) as c:
        c.push_point("sync/a", v="bad")
        with pytest.raises(LivedataError):
            c.flush()

    async def check() -> list[int]:
        async with aiohttp.ClientSession() as s:
            return [r["v"] for _, r in (await history(s, server.url, "sync/a")).rows]

    assert asyncio.run(check()) == [0, 1, 2, 3, 4, 5]
