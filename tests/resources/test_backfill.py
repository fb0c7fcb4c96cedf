"""Backfill is paced by the reader: readers that never read hold no more than their buffer, and are
closed as slow; many backfills at once share the memory budget."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp

from tests.rawws import frame, raw_ws
from tests.resources.conftest import MiB, metric, resource_server, victim, watch


async def fill(s: aiohttp.ClientSession, url: str, channel: str, values: int, size: int = 0) -> None:
    """``values`` points on ``channel``: numbers, or strings of ``size`` characters."""
    now = time.time_ns() // 1_000_000 - 600_000
    step = 20_000 if not size else max(1, 4 * MiB // size)
    for lo in range(0, values, step):
        n = min(step, values - lo)
        col = list(range(lo, lo + n)) if not size else [f"{i:08d}" + "x" * (size - 8) for i in range(lo, lo + n)]
        async with s.post(f"{url}/api/push/{channel}", json={"time": [now + lo + k for k in range(n)], "v": col}) as r:
            assert r.status == 204, await r.text()


def stalled_socket(port: int, path: str, accept: str = "application/x-ndjson") -> socket.socket:
    """A connection that asks for ``path`` and then never reads (a 4 KiB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n".encode())
    return sock


async def test_ndjson_and_sse_readers_that_never_read_are_capped_and_closed_slow(tmp_path: Path) -> None:
    """Two NDJSON readers of a channel of large strings asking from=0 and never reading once held
    900 MB each; now each holds at most its buffer and is closed as slow when its backfill stalls."""
    server = resource_server("--retention-bytes", "64MiB")
    try:
        async with aiohttp.ClientSession() as s:
            await fill(s, server.url, "big/strings", 1000, size=60_000)  # 60 MB of strings
            with watch(server, tmp_path) as w:
                async with victim(server.url):
                    socks = [stalled_socket(server.port, "/api/stream?channel=big/strings&from=0")
                             for _ in range(6)]
                    socks += [stalled_socket(server.port, "/api/stream?channel=big/strings&from=0",
                                             "text/event-stream") for _ in range(4)]
                    deadline = time.monotonic() + 50
                    while time.monotonic() < deadline:
                        await asyncio.sleep(1)
                        if await metric(s, server.url, "livedata_slow_disconnects_total") >= 10:
                            break
                    queued = await metric(s, server.url, "livedata_memory_bytes", '{kind="queues"}')
            assert await metric(s, server.url, "livedata_slow_disconnects_total") == 10
            assert queued < 8 * MiB
            for sock in socks:
                sock.close()
            w.check()
    finally:
        server.stop()


async def test_non_reading_websockets_with_many_subscriptions_hold_their_buffer_only(tmp_path: Path) -> None:
    """Five WebSockets with 100 subscriptions each from=0 on a 200,000-value channel, never reading:
    once 164 MB -> 3.27 GB; now each socket holds its buffer cap and is closed as slow."""
    server = resource_server()
    try:
        async with aiohttp.ClientSession() as s:
            await fill(s, server.url, "many/values", 200_000)
            with watch(server, tmp_path) as w:
                async with victim(server.url):
                    socks = []
                    for _ in range(5):
                        _reader, writer = await raw_ws(server.port, rcvbuf=4096)
                        for i in range(100):
                            writer.write(frame(0x1, json.dumps({"type": "subscribe", "id": f"s{i}",
                                                                "channel": "many/values", "from": 0}).encode()))
                        await writer.drain()
                        writer.transport.pause_reading()
                        socks.append(writer)
                    deadline = time.monotonic() + 50
                    while time.monotonic() < deadline:
                        await asyncio.sleep(1)
                        if await metric(s, server.url, "livedata_slow_disconnects_total") >= 5:
                            break
                    assert await metric(s, server.url, "livedata_slow_disconnects_total") == 5
                    for writer in socks:
                        writer.close()
            w.check()
    finally:
        server.stop()


async def test_many_subscriptions_from_zero_share_the_budget(tmp_path: Path) -> None:
    """300 subscriptions asking from=0 at once, read by real clients: each gets its whole history
    or a clear error to retry, and the server stays within its budget."""
    server = resource_server()
    try:
        async with aiohttp.ClientSession() as s:
            await fill(s, server.url, "hist/a", 100_000)
            with watch(server, tmp_path) as w:
                async with victim(server.url):
                    async def one(i: int) -> int:
                        async with s.ws_connect(f"{server.url}/api/ws", max_msg_size=0) as ws:
                            await ws.receive_json()
                            for k in range(30):
                                await ws.send_json({"type": "subscribe", "id": f"{i}-{k}", "channel": "hist/a",
                                                    "from": 0, "to": "now"})
                            got, done = 0, 0
                            while done < 30:
                                m = await asyncio.wait_for(ws.receive_json(), 30)
                                if m["type"] == "data" and len(m["frame"]["data"]["values"]) > 1:
                                    got += len(m["frame"]["data"]["values"][1])
                                elif m["type"] in ("complete", "error"):
                                    done += 1
                                    assert m["type"] == "complete" or "memory budget" in m["message"], m
                            return got
                    totals = await asyncio.gather(*(one(i) for i in range(10)))
            assert all(t % 100_000 == 0 and t for t in totals), totals
            w.check()
    finally:
        server.stop()
