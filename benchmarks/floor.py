"""The FLOOR: the least a Python asyncio (uvloop) server can do to serve the same bytes.

It answers the same requests as livedata with messages of the same size at the same rate, but
does no work besides: one shared ticker per stream, a payload built once per tick from a
pre-encoded template (only the timestamp changes), and ``transport.write`` to every socket.

* ``GET /?numSeries=N``     — one HTTP chunk of N reference lines per ``--interval`` ms
* ``GET /api/ws``           — handshake, waits for one client frame, then every ``--batch`` ms one
  text frame shaped like livedata's ``data`` message with ``--rows`` rows of ``--series`` values
  (times on the ``--step`` ms grid, like the generator)
* ``GET /api/stream?...``   — the same messages as NDJSON chunks
* ``GET /health``           — 200

Run: ``python -m benchmarks.floor --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import signal
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


class Floor:
    def __init__(self, interval_ms: float, batch_ms: float, rows: int, series: int, step_ms: int) -> None:
        self.interval = interval_ms / 1000
        self.batch = batch_ms / 1000
        self.rows = rows
        self.series = series
        self.step = step_ms
        self.ref: dict[int, set[asyncio.Transport]] = {}
        self.ws: set[asyncio.Transport] = set()
        self.nd: set[asyncio.Transport] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._ticker(self.interval, self._ref_tick)),
                      loop.create_task(self._ticker(self.batch, self._data_tick))]

    async def _ticker(self, interval: float, fn: object) -> None:
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0
        while True:
            k = max(k + 1, int((loop.time() - start) / interval))
            await asyncio.sleep(max(0.0, start + k * interval - loop.time()))
            fn()  # type: ignore[operator]

    def _ref_tick(self) -> None:
        ts = time.time_ns() // 1_000_000
        for n, group in self.ref.items():
            body = "".join([f'{{"series":{i},"timestamp":{ts},"value":{10 * i + 5}}}\n'
                            for i in range(n)]).encode()
            data = b"%x\r\n%b\r\n" % (len(body), body)
            for t in group:
                t.write(data)

    def _data_tick(self) -> None:
        if not self.ws and not self.nd:
            return
        now = time.time_ns() // 1_000_000
        last = now - now % self.step
        times = ",".join(str(last - self.step * i) for i in range(self.rows - 1, -1, -1))
        cols = ",".join("[" + ",".join(["12.345678"] * self.rows) + "]" for _ in range(self.series))
        msg = ('{"type":"data","id":"A","position":"0123ab1:12345-0:123456","frame":{"data":{"values":[['
               + times + "]," + cols + "]}}}").encode()
        if self.ws:
            frame = _ws_header(len(msg)) + msg
            for t in self.ws:
                t.write(frame)
        if self.nd:
            line = msg + b"\n"
            chunk = b"%x\r\n%b\r\n" % (len(line), line)
            for t in self.nd:
                t.write(chunk)


def _ws_header(n: int) -> bytes:
    if n < 126:
        return bytes([0x81, n])
    if n < 1 << 16:
        return bytes([0x81, 126]) + n.to_bytes(2, "big")
    return bytes([0x81, 127]) + n.to_bytes(8, "big")


class Conn(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.buf = b""
        self.state = "head"
        self.t: asyncio.Transport | None = None
        self.group: set[asyncio.Transport] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.group is not None and self.t is not None:
            self.group.discard(self.t)

    def data_received(self, data: bytes) -> None:
        t = self.t
        assert t is not None
        if self.state == "ws-wait":  # the client's subscribe frame: now stream
            self.state = "ws"
            self.group = self.floor.ws
            self.group.add(t)
            return
        if self.state != "head":
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if path.startswith("/health"):
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            t.close()
            return
        if path.startswith("/api/ws"):
            key = headers.get("sec-websocket-key", "").encode()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            t.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.state = "ws-wait"
            return
        t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.state = "stream"
        if path.startswith("/api/stream"):
            self.group = self.floor.nd
        else:
            n = 1
            for part in path.partition("?")[2].split("&"):
                k, _, v = part.partition("=")
                if k == "numSeries":
                    n = int(v)
            self.group = self.floor.ref.setdefault(n, set())
        self.group.add(t)


async def main(args: argparse.Namespace) -> None:
    floor = Floor(args.interval, args.batch, args.rows, args.series, args.step)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(floor), args.host, args.port, backlog=4096, reuse_address=True)
    floor.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for task in floor.tasks:
        task.cancel()


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--interval", type=float, default=50.0, help="reference stream tick, ms")
    p.add_argument("--batch", type=float, default=100.0, help="data message period, ms")
    p.add_argument("--rows", type=int, default=2, help="rows per data message")
    p.add_argument("--series", type=int, default=1, help="values per row")
    p.add_argument("--step", type=int, default=50, help="time step between rows, ms")
    args = p.parse_args()
    from benchmarks.common import raise_fd_limit

    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
