"""WebSocket ping/pong: one server-wide pinger instead of a timer per socket (docs/guarantees.md).

A peer that answers pings stays connected however long it sends nothing else; one that never
answers is pinged, then dropped and its subscriptions freed.
"""

from __future__ import annotations

import asyncio
import json
import struct

import aiohttp

from tests.conftest import LiveServer, gauge
from tests.rawws import frame, raw_ws

HEARTBEAT = 0.4


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b1 & 0x0F, await reader.readexactly(n)


async def test_a_peer_that_never_answers_pings_is_pinged_then_dropped() -> None:
    server = LiveServer(["--heartbeat", str(HEARTBEAT)]).start()
    try:
        async with aiohttp.ClientSession() as s:
            reader, writer = await raw_ws(server.port)
            writer.write(frame(0x1, json.dumps({"type": "subscribe", "id": "A", "channel": "quiet/ping"}).encode()))
            await writer.drain()
            opcodes: list[int] = []
            try:
                while True:  # never answer: read until the server gives up on us
                    opcode, _ = await asyncio.wait_for(read_frame(reader), 30 * HEARTBEAT)
                    opcodes.append(opcode)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()
            assert 0x9 in opcodes, f"no ping before the close (opcodes {opcodes})"
            for _ in range(100):
                if await gauge(s, server.url, "livedata_connections_open") == 0:
                    break
                await asyncio.sleep(0.05)
            assert await gauge(s, server.url, "livedata_connections_open") == 0
            assert await gauge(s, server.url, "livedata_subscriptions") == 0
    finally:
        server.stop()


async def test_a_peer_that_answers_pings_stays_and_gets_heartbeats() -> None:
    server = LiveServer(["--heartbeat", str(HEARTBEAT)]).start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws", autoping=True) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await ws.send_json({"type": "subscribe", "id": "A", "channel": "quiet/pong"})
            heartbeats = 0
            while heartbeats < 8:  # 8 heartbeats: several ping rounds, all answered by aiohttp
                msg = await ws.receive(timeout=30 * HEARTBEAT)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                heartbeats += json.loads(msg.data)["type"] == "heartbeat"
            assert not ws.closed
            assert await gauge(s, server.url, "livedata_connections_open") == 1
            # a client's ping (answered by hand: autoping is off on the server) leaves the socket as it was
            await ws.ping(b"x")
            await ws.send_json({"type": "ping"})
            while True:
                msg = await ws.receive(timeout=30 * HEARTBEAT)
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "pong":
                    break
    finally:
        server.stop()


async def test_a_client_ping_frame_gets_a_pong_frame() -> None:
    server = LiveServer().start()
    try:
        reader, writer = await raw_ws(server.port)
        writer.write(frame(0x9, b"hi"))
        await writer.drain()
        while True:
            opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
            if opcode == 0xA:
                assert payload == b"hi"
                break
        writer.close()
    finally:
        server.stop()
