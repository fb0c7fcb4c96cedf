"""WebSocket fuzzing: >= 10,000 hostile frames; the server answers or closes with the right
code, stays up, and another client's stream continues throughout."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from itertools import pairwise

import aiohttp
import pytest

from tests.conftest import LiveServer
from tests.integration.wsclient import Points, collect
from tests.rawws import frame, raw_ws, read_until_close


def _char(rng: random.Random) -> str:
    """ASCII or any other character of the BMP, never a surrogate: a lone surrogate is not text, and
    a message holding one is fatal (close 1008, tested by :func:`fatal`), not protocol-shaped."""
    if rng.random() < 0.5:
        return chr(rng.randint(32, 126))
    c = rng.randint(0x80, 0xFFFF - 0x800)
    return chr(c + 0x800 if c >= 0xD800 else c)


def rand_json(rng: random.Random, depth: int = 0) -> object:
    """Random JSON: scalars of every type (odd floats and unicode too), lists, objects."""
    kind = rng.random() if depth < 3 else rng.random() * 0.7
    if kind < 0.1:
        return None
    if kind < 0.2:
        return rng.random() < 0.5
    if kind < 0.35:
        return rng.choice([0, -1, 2**63, -(2**64), rng.randint(-10**6, 10**6)])
    if kind < 0.5:
        return rng.choice([0.5, -1e308, 1e-320, rng.uniform(-1e9, 1e9)])
    if kind < 0.7:
        return "".join(_char(rng) for _ in range(rng.randint(0, 30)))
    if kind < 0.85:
        return [rand_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {str(rand_json(rng, 3)): rand_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
KEYS = ["type", "id", "channel", "params", "from", "to", "since", "fields", "interval", "points", "ack", "token"]
TYPES = ["subscribe", "unsubscribe", "publish", "ping", "nope", "", 5, None]  # auth: tests/integration/test_tokens.py
# issue 16's classes, as data: Unicode digits, control characters, values nested deep but decodable
DIGITS = ["\u00b2", "\u0661\u0662", "\uff11\uff12", "-\u00b3", "\U0001d7d9", "now-\u00b2m", "now-\u0661h", "1\u00b2"]
CONTROL = ["\x00", "\x01", "\x1b[31m", "\x7f", "a\r\nb", "\u202e", "\ufeff", "\u2028", "\x85"]
DECODABLE = 900


def deep(depth: int = DECODABLE) -> object:
    return json.loads("[" * depth + "1" + "]" * depth)


def hostile(rng: random.Random) -> object:
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(DIGITS)
    if kind < 0.6:
        return rng.choice(CONTROL) + "x" + rng.choice(CONTROL)
    if kind < 0.7:
        return DEEP
    if kind < 0.85:
        return {"time": rng.choice(DIGITS), "v": 1}
    return [{"time": rng.choice([*DIGITS, 1]), rng.choice(CONTROL): rng.choice(CONTROL)}]


DEEP = deep()


def mutated(rng: random.Random) -> str:
    """Protocol-shaped messages (always a JSON object) with wrong types, odd and hostile values."""
    msg: dict[str, object] = {"type": rng.choice(TYPES)}
    for key in rng.sample(KEYS[1:], rng.randint(0, 6)):
        r = rng.random()
        msg[key] = rand_json(rng) if r < 0.35 else hostile(rng) if r < 0.7 else rng.choice(
            ["random-walk", "sine", "x" * rng.randint(0, 400), "now-5m", 10**20, -1, [], {}, "A", True])
    return json.dumps(msg)


def fatal(rng: random.Random) -> tuple[bytes, int | None]:
    """A frame that is not a JSON object (or not a frame at all) and the close code it must get."""
    kind = rng.randrange(10)
    if kind == 0:
        return frame(0x1, "".join(rng.choice('{}[]",:0123456789abc\\ ') for _ in range(40)).encode()), 1008
    if kind == 1:
        return frame(0x1, json.dumps(rand_json(rng, 3) if rng.random() < 0.5 else [1]).encode()), 1008
    if kind == 2:
        return frame(0x1, b"[" * 100_000 + b"]" * 100_000), 1008  # too deep to decode
    if kind == 3:
        return frame(0x1, b'{"type":"ping","x":' + b"[" * 5000 + b"]" * 5000 + b"}"), 1008
    if kind == 4:
        return frame(0x1, rng.choice([b'{"type":"ping","s":"\\ud800"}', b'{"type\\udc00":1}',
                                      b'{"type":"publish","channel":"f","points":{"v":"\\udfff"}}'])), 1008
    if kind == 5:
        return frame(0x2, b"\x00\x01\x02"), 1008  # binary
    if kind == 6:
        return frame(0x1, b"\xff\xfe\xfd"), 1007  # invalid UTF-8
    if kind == 7:
        return frame(0x1, b'{"type":', fin=False) + frame(0x0, b'"ping"}'), None  # fragments: valid
    if kind == 8:
        return frame(0x1, b"x" * ((4 << 20) + 10)), 1009  # over the frame limit
    return frame(0x0, b"stray continuation"), 1002


async def close_code(reader: asyncio.StreamReader) -> int | None:
    return (await read_until_close(reader, wait_s=10))[1]


async def fuzz(frames_per_socket: int, sockets: int, fatal_cases: int, seed: int) -> int:
    """Hostile frames at a real server; returns how many were sent. Asserts as it goes: every
    socket stays up through its protocol-shaped garbage (and says no 'internal error'), every
    broken frame gets its close code, foreign upgrades are refused, and a watcher's stream goes on."""
    server = LiveServer(["--max-frame-bytes", str(4 << 20)]).start()
    rng = random.Random(seed)
    sent = 0
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws") as watcher:
            await watcher.receive_json()
            await watcher.send_json({"type": "subscribe", "id": "w", "channel": "random-walk"})
            watch = Points()
            # 1. protocol-shaped garbage, odd and hostile values on long-lived sockets
            for _ in range(sockets):
                async with s.ws_connect(f"{server.url}/api/ws", max_msg_size=0) as ws:
                    for _ in range(frames_per_socket):
                        if rng.random() < 0.97:
                            await ws.send_str(mutated(rng))
                        else:
                            await ws.send_str(json.dumps({"type": "subscribe", "id": "x" * rng.randint(1, 100),
                                                          "channel": "c" * rng.randint(1, 300)}))
                        sent += 1
                    await ws.send_json({"type": "ping"})
                    while True:  # the server answered everything and is still talking to us
                        m = json.loads((await ws.receive(timeout=30)).data)
                        if m["type"] == "pong":
                            break
                        assert m["type"] in ("hello", "error", "data", "notice", "complete", "ack"), m
                        assert "internal error" not in m.get("message", ""), m
                await collect(watcher, watch, 0.05)
            # 2. a huge (2 MiB) text frame: parsed and answered with an error, socket stays usable
            async with s.ws_connect(f"{server.url}/api/ws", max_msg_size=0) as ws:
                await ws.receive_json()
                await ws.send_str(json.dumps({"type": "subscribe", "id": "big", "channel": "x" * (2 << 20)}))
                reply = await ws.receive_json(timeout=10)
                assert reply["type"] == "error"
                assert "invalid channel name" in reply["message"]
                sent += 1
            # 3. frames that break the protocol: each on its own raw socket, closed with the right code
            for n in range(fatal_cases):
                if n % 10 == 0:
                    await collect(watcher, watch, 0.01)  # keep reading: the watcher answers the server's pings
                data, code = fatal(rng)
                reader, writer = await raw_ws(server.port)
                try:
                    writer.write(data)
                    await writer.drain()
                    if code is None:
                        writer.write(frame(0x8, struct.pack("!H", 1000)))
                        await writer.drain()
                except ConnectionError:
                    # The server closed while we were still writing a frame it refuses to read:
                    # its close frame may be lost with the reset; that is only allowed for 1009.
                    assert code == 1009
                got = await close_code(reader)
                assert got == (code or 1000) or (code == 1009 and got is None), f"expected {code}, got {got}"
                writer.close()
                sent += 1
            # 4. upgrades a page of another site (or a rebound name) would make, and no upgrade at all
            for i in range(fatal_cases // 10):
                await collect(watcher, watch, 0.01)
                headers = rng.choice([{"Origin": "http://evil.example"}, {"Origin": "null"},
                                      {"Sec-Fetch-Site": "cross-site"}, {"Host": f"evil.example:{server.port}"},
                                      {"Host": "EVIL.example."}, {"Host": "[::ffff:7f00:1]"}])
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(f"{server.url}/api/ws", headers=headers)
                assert err.value.status == 403, headers
                async with s.request("HEAD" if i % 2 else "GET", f"{server.url}/api/ws") as r:
                    assert r.status == 400  # not an upgrade: said so, in JSON (HEAD: headers only)
                sent += 2
            await collect(watcher, watch, 1.0)
        times = watch.times("w")
        assert len(times) >= 20, "the watching client's stream stopped"
        assert all(b - a == 50 for a, b in pairwise(times))
        assert server.proc is not None and server.proc.poll() is None
        log = server.log()
        assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
        return sent
    finally:
        server.stop()


async def test_ws_fuzz_10000_frames_server_stays_up_and_others_stream() -> None:
    sent = await fuzz(frames_per_socket=2000, sockets=5, fatal_cases=100, seed=7)
    assert sent >= 10_000


@pytest.mark.long
@pytest.mark.timeout(1800)
async def test_ws_fuzz_long() -> None:
    """The long run (``make fuzz-long``): 50,000 protocol-shaped frames, 2,000 broken ones."""
    sent = await fuzz(frames_per_socket=10_000, sockets=5, fatal_cases=2_000, seed=11)
    assert sent >= 52_000
