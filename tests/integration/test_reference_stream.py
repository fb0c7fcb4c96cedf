"""The original reference stream against a real ``livedata serve``."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import statistics
import time

import aiohttp
import pytest

from tests.conftest import LiveServer, gauge


async def read_ticks(url: str, n_series: int, ticks: int) -> tuple[list[list[dict[str, int]]], list[bytes]]:
    chunks: list[bytes] = []
    async with aiohttp.ClientSession() as s, s.get(f"{url}/?numSeries={n_series}") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/x-ndjson"
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["Transfer-Encoding"] == "chunked"
        buf = b""
        async for data, end_of_chunk in r.content.iter_chunks():
            buf += data
            if end_of_chunk:
                chunks.append(buf)
                buf = b""
                if len(chunks) == ticks:
                    break
    return [[json.loads(line) for line in c.splitlines()] for c in chunks], chunks


async def test_format_one_chunk_per_tick_n_lines_each(shared_server: LiveServer) -> None:
    ticks, _ = await read_ticks(shared_server.url, 3, 10)
    for tick in ticks:
        assert [p["series"] for p in tick] == [0, 1, 2]
        assert len({p["timestamp"] for p in tick}) == 1
        for p in tick:
            assert 10 * p["series"] <= p["value"] <= 10 * p["series"] + 9
    stamps = [t[0]["timestamp"] for t in ticks]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_tick_spacing_median_is_50ms(shared_server: LiveServer) -> None:
    ticks, _ = await read_ticks(shared_server.url, 1, 41)
    stamps = [t[0]["timestamp"] for t in ticks]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert 35 <= statistics.median(gaps) <= 65


async def test_clients_connected_together_share_tick_timestamps(shared_server: LiveServer) -> None:
    (a, _), (b, _) = await asyncio.gather(read_ticks(shared_server.url, 2, 20), read_ticks(shared_server.url, 5, 20))
    common = {t[0]["timestamp"] for t in a} & {t[0]["timestamp"] for t in b}
    assert len(common) >= 15


@pytest.mark.parametrize("query", ["numSeries=0", "numSeries=1001", "numSeries=abc", "numSeries=-3", "numSeries=2.5"])
async def test_bad_num_series_is_400_json(shared_server: LiveServer, query: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{shared_server.url}/?{query}") as r:
        assert r.status == 400
        body = await r.json()
        assert "numSeries" in body["error"] and "1 to 1000" in body["error"]


async def test_unknown_path_is_404_json_and_health(shared_server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{shared_server.url}/no/such/thing") as r:
            assert r.status == 404
            assert "no such path" in (await r.json())["error"]
        async with s.get(f"{shared_server.url}/api/health") as r:
            body = await r.json()
            assert body["status"] == "ok" and body["version"] and body["uptime_s"] >= 0


async def test_cors_allows_grafana_by_default(shared_server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{shared_server.url}/api/health", headers={"Origin": "http://localhost:3000"}) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        async with s.get(f"{shared_server.url}/api/health", headers={"Origin": "http://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_disconnect_releases_everything(live_server: LiveServer) -> None:
    url = live_server.url
    async with aiohttp.ClientSession() as s:
        base_tasks = await gauge(s, url, "livedata_asyncio_tasks")
        assert await gauge(s, url, "livedata_reference_ticker_running") == 0

        async def one(i: int) -> None:
            async with aiohttp.ClientSession() as c, c.get(f"{url}/?numSeries={1 + i % 7}") as r:
                await r.content.readline()

        await asyncio.gather(*(one(i) for i in range(200)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            tasks = await gauge(s, url, "livedata_asyncio_tasks")
            listeners = await gauge(s, url, "livedata_reference_listeners")
            running = await gauge(s, url, "livedata_reference_ticker_running")
            if tasks <= base_tasks and listeners == 0 and running == 0:
                break
            await asyncio.sleep(0.1)
        assert listeners == 0
        assert running == 0
        assert tasks <= base_tasks
        assert await gauge(s, url, "livedata_connections_open") == 0


def test_sigterm_closes_streams_and_exits_within_a_second() -> None:
    server = LiveServer().start()

    async def hold() -> bytes:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/?numSeries=2") as r:
            await r.content.readline()
            loop = asyncio.get_running_loop()
            took = loop.run_in_executor(None, server.stop, signal.SIGTERM)
            rest = await asyncio.wait_for(r.content.read(), 5)
            assert await took < 1.0
            return rest

    asyncio.run(hold())
    assert server.proc is not None and server.proc.returncode == 0


def test_port_in_use_is_one_clear_line_and_exit_1(shared_server: LiveServer) -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "livedata.cli", "serve", "--port", str(shared_server.port)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "already in use" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
