"""The one object that owns everything a ``livedata serve`` process runs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING

from aiohttp import web

from livedata.brokers.base import Broker
from livedata.config import Config
from livedata.hub import Hub
from livedata.server.compat import ReferenceTicker
from livedata.server.conn import Conn
from livedata.server.metrics import Metrics

if TYPE_CHECKING:
    from livedata.server.ws import Pinger


def make_broker(config: Config) -> Broker:
    if config.broker == "memory":
        from livedata.brokers.memory import MemoryBroker

        return MemoryBroker(config.retention_s, config.retention_points, config.max_channels)
    from livedata.brokers.redis import RedisBroker

    broker: Broker = RedisBroker(config.broker, prefix=config.redis_prefix, retention_s=config.retention_s,
                       retention_points=config.retention_points, max_channels=config.max_channels)
    return broker


class Server:
    """Config, broker, hub, reference ticker, open connections and metrics of one process."""

    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.ticker = ReferenceTicker(config.interval_ms / 1000)
        self.broker: Broker = broker or make_broker(config)
        self.hub = Hub(self.broker, self.metrics, keep_generators_s=config.retention_s,
                       retention_s=config.retention_s, retention_points=config.retention_points,
                       heartbeat_s=config.heartbeat_s)
        self.conns: set[Conn] = set()
        self.per_ip: dict[str, int] = {}
        self.closed_bytes = 0
        self.metrics.sources.append(self._gauges)
        from livedata.server.ws import Pinger  # ws imports this module

        self.pinger: Pinger = Pinger(config.heartbeat_s)
        """WebSocket ping/pong for every socket, from one task."""

    async def start(self) -> None:
        await self.broker.start()
        self.hub.start()

    async def shutdown(self) -> None:
        """Close every stream (they end at once) and stop the background work."""
        for conn in list(self.conns):
            conn.close("shutdown")
        await self.ticker.stop()

    async def close(self) -> None:
        from livedata.server import ingest  # ingest imports this module

        await ingest.close(self)  # publish points still held by a reorder window
        await self.pinger.close()
        await self.hub.close()
        await self.broker.close()

    def over_limit(self, request: web.Request) -> str | None:
        """A sentence when this client address already holds its share of streaming connections."""
        peer = request.remote or ""
        limit = self.config.max_connections_per_ip
        if self.per_ip.get(peer, 0) >= limit:
            return f"too many connections from {peer} (limit {limit}, see --max-connections-per-ip)"
        return None

    def new_conn(self, request: web.Request) -> Conn:
        """Register the writable end of ``request``'s connection (closed on shutdown)."""
        peer = request.remote or ""
        conn = Conn(request.transport, self.config.buffer_bytes, peer=peer, on_close=self._closed)
        tune_socket(conn.transport, self.config.heartbeat_s)
        self.conns.add(conn)
        self.per_ip[peer] = self.per_ip.get(peer, 0) + 1
        return conn

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

    def _gauges(self) -> dict[str, tuple[str, float]]:
        return {
            "livedata_connections_open": ("Open streaming connections", float(len(self.conns))),
            "livedata_queue_bytes": ("Bytes buffered for clients, all connections",
                                     float(sum(c.buffered for c in self.conns if c.is_open))),
            "livedata_reference_listeners": ("Clients of the reference stream", float(self.ticker.listeners)),
            "livedata_reference_ticker_running": (
                "1 while the reference stream's ticker runs",
                float(self.ticker.task is not None and not self.ticker.task.done())),
            "livedata_bytes_out": ("Bytes written to streaming clients (monotonic)",
                                   float(self.closed_bytes + sum(c.bytes_out for c in self.conns))),
            "livedata_feeds": ("Shared feeds (channel, interval, fields)",
                               float(sum(len(t.feeds) for t in self.hub.taps.values()))),
            "livedata_generators_running": ("Generated channels running", float(len(self.hub.generators.running))),
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


SERVER = web.AppKey("server", Server)
