"""The one registry of open connections, and the lifecycle every carrier uses.

``open`` (register, tune the socket, count it) -> ``attach`` (the
carrier's sink: ``hello`` now, ``heartbeat`` messages when idle; a WebSocket is also pinged)
-> ``Conn.close(reason)`` (unregister, count bytes, count ``slow``). ``shutdown`` closes them
all. The WebSocket, HTTP stream (NDJSON/SSE) and reference stream carriers all go through here,
so ``livedata_connections_open``, heartbeats, pings and shutdown see the same set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

from aiohttp import web

from livedata import __version__
from livedata.config import Config
from livedata.core.clock import wall_ms
from livedata.core.frames import message
from livedata.delivery.flow import FlowPolicy
from livedata.delivery.sink import Sink
from livedata.server.clientaddr import TrustedProxies, client_address
from livedata.server.conn import Closable, Conn
from livedata.server.metrics import Metrics
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.connections")

PING_FRAME = b"\x89\x00"
"""A WebSocket ping with no payload (server frames are not masked)."""


class Pinger:
    """WebSocket ping/pong for every socket of a server, from one task instead of a timer per socket.

    Every quarter heartbeat it looks at each WebSocket in ``conns``: one the peer sent nothing on
    (no frame, no pong) for 3/4 of a heartbeat gets a ping; one that then answers nothing for half
    a heartbeat, and took none of the bytes written to it meanwhile, is dropped (one that is still
    taking a backfill may be slow to pong: its pong waits behind what it has not read yet). A peer
    that stops answering is so released at most 1.5 heartbeats after its last frame. Pings are
    control frames: they do not count as output, so the protocol's ``heartbeat`` messages still go
    out to an idle socket.
    """

    PARTS = 8
    """Each quarter heartbeat is swept in this many slices, so that sockets which connected
    together (a load test, a dashboard reload) are not all pinged in one burst of writes."""

    def __init__(self, heartbeat_s: float, conns: set[Conn]) -> None:
        self.heartbeat_s = heartbeat_s
        self.conns = conns
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="ws-ping")

    async def _run(self) -> None:
        step = self.heartbeat_s / 4 / self.PARTS
        part = 0
        while True:
            await asyncio.sleep(step)
            self.sweep(time.monotonic(), part, self.PARTS)
            part = (part + 1) % self.PARTS

    def sweep(self, now: float, part: int = 0, parts: int = 1) -> None:
        """Ping or drop the WebSockets of slice ``part`` of ``parts`` (all of them by default)."""
        ping_after = self.heartbeat_s * 0.75
        pong_within = self.heartbeat_s * 0.5 - 0.001  # each socket is swept every quarter heartbeat
        for conn in list(self.conns):
            if parts > 1 and (id(conn) >> 4) % parts != part:
                continue
            ws = conn.ws
            if ws is None or conn.close_reason:
                continue
            rx_at = conn.rx_at
            if now - rx_at < ping_after:
                continue
            transport = conn.transport
            if transport.is_closing() or ws.closed:  # closing: no ping after a close frame
                continue
            sent = conn.bytes_out - transport.get_write_buffer_size()
            if conn.ping_at <= rx_at:
                conn.ping_at = now
                conn.ping_sent = sent
                transport.write(PING_FRAME)
            elif now - conn.ping_at >= pong_within and sent > conn.ping_sent:
                # No pong yet, but the kernel took more of what we write to it since the ping: the
                # peer is reading (its pong is behind the data it has not read yet). Alive.
                conn.rx_at = now
            elif now - conn.ping_at >= pong_within:
                # A peer with bytes still queued for it is not reading (its pong waits behind them):
                # a slow reader, counted as one; with nothing queued it is gone.
                reason = "slow" if transport.get_write_buffer_size() else "gone"
                log.debug("closing a WebSocket from %s (%s): no pong for %.1f s", conn.peer, reason,
                          now - conn.ping_at)
                conn.close(reason)
                transport.abort()

    async def close(self) -> None:
        task, self.task = self.task, None
        await cancel_and_wait(task)


class Connections:
    """Every open client connection of this process, with its limits, heartbeats and pings."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.flow = FlowPolicy(config.buffer_bytes)
        """The slow-reader thresholds every connection is written with."""
        self.conns: set[Conn] = set()
        self.per_ip: dict[str, int] = {}
        self.trusted = TrustedProxies(config.trusted_proxies)
        """Reverse proxies whose forwarding headers name the client (``clientaddr.py``)."""
        self.closed_bytes = 0
        """Bytes written to connections that have closed (``livedata_bytes_out`` stays monotonic)."""
        self.pinger = Pinger(config.heartbeat_s, self.conns)
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="heartbeat")

    def shutdown(self) -> None:
        """Close every connection (their handlers end at once)."""
        for conn in list(self.conns):
            conn.close("shutdown")

    async def close(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        await cancel_and_wait(heartbeat)
        await self.pinger.close()

    # --- one connection ---------------------------------------------------------------------------

    def client(self, request: web.Request) -> str:
        """The client address of ``request`` (behind a trusted proxy: the forwarded one)."""
        return client_address(request, self.trusted)

    def over_limit(self, request: web.Request) -> str | None:
        """A sentence when this client address already holds its share of streaming connections."""
        peer = self.client(request)
        limit = self.config.max_connections_per_ip
        if self.per_ip.get(peer, 0) >= limit:
            return f"too many connections from {peer} (limit {limit}, see --max-connections-per-ip)"
        return None

    def open(self, request: web.Request, carrier: str | None = None) -> Conn:
        """Register the writable end of ``request``'s connection (closed on shutdown).

        ``carrier`` counts it in ``livedata_connections{carrier}``. Raises ConnectionResetError
        when the peer is already gone.
        """
        peer = self.client(request)
        conn = Conn(request.transport, self.flow, peer=peer, on_close=self._closed)
        tune_socket(conn.transport, self.config.heartbeat_s)
        self.conns.add(conn)
        self.per_ip[peer] = self.per_ip.get(peer, 0) + 1
        if carrier is not None:
            self.metrics.connections_total.labels(carrier).inc()
        return conn

    def attach(self, conn: Conn, sink: Sink, ws: Closable | None = None) -> None:
        """The connection speaks the protocol through ``sink``: say ``hello``, then heartbeat it
        when idle; a WebSocket (``ws``) is pinged too."""
        conn.sink = sink
        if ws is not None:
            conn.ws = ws
            self.pinger.start()
        sink.send(message({"type": "hello", "version": __version__, "time": wall_ms(),
                           "heartbeat_ms": int(self.config.heartbeat_s * 1000)}), force=True)

    def _closed(self, conn: Conn, reason: str) -> None:
        self.conns.discard(conn)
        self.closed_bytes += conn.bytes_out
        left = self.per_ip.get(conn.peer, 1) - 1
        if left > 0:
            self.per_ip[conn.peer] = left
        else:
            self.per_ip.pop(conn.peer, None)
        if reason == "slow":
            self.metrics.slow_disconnects.inc()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            msg = message({"type": "heartbeat", "time": wall_ms()})
            for conn in list(self.conns):
                sink = conn.sink
                if sink is not None and sink.idle and sink.is_open:
                    sink.send(msg, force=True)

    def gauges(self) -> dict[str, tuple[str, float | dict[str, float]]]:
        return {
            "livedata_connections_open": ("Open streaming connections", float(len(self.conns))),
            "livedata_queue_bytes": ("Bytes buffered for clients, all connections",
                                     float(sum(c.buffered for c in self.conns if c.is_open))),
            "livedata_bytes_out": ("Bytes written to streaming clients (monotonic)",
                                   float(self.closed_bytes + sum(c.bytes_out for c in self.conns))),
        }


def tune_socket(transport: asyncio.BaseTransport, heartbeat_s: float) -> None:
    """Let the kernel notice a peer that vanished without a FIN within about two heartbeats.

    Unacknowledged data (heartbeats keep some flowing) fails the socket after TCP_USER_TIMEOUT;
    an idle socket is probed by keepalive. WebSockets also have ping/pong on top.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    hb = max(1, int(heartbeat_s))
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, hb)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, hb // 2))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(heartbeat_s * 2000))
