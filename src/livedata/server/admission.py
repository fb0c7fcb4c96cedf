"""Admission: every TCP connection is counted when it is accepted, whatever it goes on to ask for.

One place for the connection limits: ``--max-connections`` in all, ``--max-connections-per-ip``
per client address, and the memory budget's fixed share per connection (kind ``connections``).
A connection over a limit is still accepted, up to :data:`HEADROOM` more than ``--max-connections``,
so that ``GET /api/health`` keeps answering at the limits (a load balancer must not take a busy
server for a dead one): such a connection gets ``/api/health`` or, for anything else, ``429`` (its
address is over its share) or ``503`` (the server is full), and is closed after that one answer or
after :data:`LIMITED_HEAD_S` without a request. When the headroom is full, a new connection takes
the place of the oldest one there that has not sent a request yet (a flood of idle connections
cannot keep a health check out); only when none is idle is the new one closed at once. So
descriptors never run out (``--max-connections`` defaults to 90 % of the descriptor limit, which
the CLI raises to its hard limit at start).

A request head (and a keep-alive connection's next one) must arrive within ``--header-timeout``,
aiohttp's keep-alive timeout, so a peer that trickles a head in ("slowloris") holds a connection
that long at most; a push body has ``--body-timeout`` (``ingest/parse.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from livedata.core import sizes
from livedata.core.budget import Budget
from livedata.server.clientaddr import TrustedProxies
from livedata.server.http import json_error

log = logging.getLogger("livedata.admission")

HEADROOM = 64
"""Connections accepted beyond ``--max-connections`` only to answer ``/api/health`` (or refuse)."""
LIMITED_HEAD_S = 2.0
"""A connection over a limit is closed when it sends no request within this."""
HEALTH_PATH = "/api/health"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Admission:
    """The open TCP connections of one server, with their limits (see the module docstring)."""

    def __init__(self, max_connections: int, per_ip: int, budget: Budget,
                 trusted: TrustedProxies | None = None) -> None:
        self.max_connections = max_connections
        self.per_ip_limit = per_ip
        self.trusted = trusted or TrustedProxies()
        """Reverse proxies (``--trusted-proxies``): their TCP connections carry many clients, so the
        per-address limit is applied per forwarded client by ``Connections.over_limit`` instead."""
        self.budget = budget
        self.open = 0
        self.per_ip: dict[str, int] = {}
        self.peers: dict[object, str] = {}
        """Per aiohttp protocol (one per connection): its client address."""
        self.reserved: set[object] = set()
        self.limited: dict[object, tuple[int, str]] = {}
        """Connections over a limit: the status and sentence anything but ``/api/health`` gets."""
        self.waiting: dict[object, asyncio.Transport] = {}
        """Connections over a limit that sent no request yet, oldest first (the first to go)."""
        self.refused = 0
        """Connections closed at once: beyond the headroom."""
        self.limited_total = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def install(self, server: web.Server) -> None:
        """Count every connection ``server`` (the runner's protocol factory) accepts."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.lost(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def made(self, handler: object, transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername")
        peer = peername[0] if isinstance(peername, tuple | list) and peername else str(peername or "")
        self.open += 1
        self.peers[handler] = peer
        n = self.per_ip[peer] = self.per_ip.get(peer, 0) + 1
        if self.open > self.max_connections + HEADROOM:
            if not self.waiting:
                self.refused += 1
                transport.abort()
                return
            oldest = next(iter(self.waiting))
            self.waiting.pop(oldest).abort()  # its connection_lost comes later: count it gone now
            self.limited.pop(oldest, None)
            self.refused += 1
            self._forget(oldest)
        limited: tuple[int, str] | None = None
        if self.open > self.max_connections:
            limited = (503, f"the server has as many connections as it allows ({self.max_connections}, "
                            "see --max-connections): retry later")
        elif n > self.per_ip_limit and not (self.trusted and self.trusted.trusts(peer)):
            limited = (429, f"too many connections from {peer} (limit {self.per_ip_limit}, see "
                            "--max-connections-per-ip)")
        elif self.budget.reserve("connections", sizes.CONNECTION):
            self.reserved.add(handler)
        else:
            limited = (503, "the server is at its memory budget for connections: retry later "
                            "(or raise --max-memory)")
        if limited is not None:
            self.limited[handler] = limited
            self.waiting[handler] = transport
            self.limited_total += 1
            loop = self.loop or asyncio.get_running_loop()
            loop.call_later(LIMITED_HEAD_S, self._expire, handler, transport)

    def _expire(self, handler: object, transport: asyncio.Transport) -> None:
        if handler in self.waiting and not transport.is_closing():
            transport.abort()

    def lost(self, handler: object) -> None:
        self.waiting.pop(handler, None)
        self._forget(handler)

    def _forget(self, handler: object) -> None:
        peer = self.peers.pop(handler, None)
        if peer is None:
            return
        self.open -= 1
        left = self.per_ip.get(peer, 1) - 1
        if left > 0:
            self.per_ip[peer] = left
        else:
            self.per_ip.pop(peer, None)
        self.limited.pop(handler, None)
        if handler in self.reserved:
            self.reserved.discard(handler)
            self.budget.release("connections", sizes.CONNECTION)

    def over_limit(self, request: web.Request) -> tuple[int, str] | None:
        """The answer a request on a connection over a limit gets (None: not over)."""
        return self.limited.get(request.protocol) if self.limited else None

    def middleware(self) -> Middleware:
        """A connection over a limit gets ``/api/health`` or its refusal, then is closed. A plain
        function (no coroutine frame kept per request, as for the app's ``errors`` middleware)."""

        @web.middleware
        def admit(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
            over = self.over_limit(request)
            if over is None:
                return handler(request)
            self.limited.pop(request.protocol, None)  # it asked: answered once, then closed
            self.waiting.pop(request.protocol, None)
            return self._limited(request, handler, over)

        return admit

    async def _limited(self, request: web.Request, handler: Handler, over: tuple[int, str]) -> web.StreamResponse:
        if request.path == HEALTH_PATH and request.method == "GET":
            resp = await handler(request)
        else:
            resp = json_error(over[0], over[1])
            resp.headers["Retry-After"] = "1"
        resp.force_close()
        return resp

    def gauges(self) -> dict[str, tuple[str, float | dict[str, float]]]:
        return {
            "livedata_tcp_connections": ("TCP connections open (every kind, including refused ones being answered)",
                                         float(self.open)),
            "livedata_connections_limited": ("Connections accepted over a limit, to answer /api/health or refuse "
                                             "(total)", float(self.limited_total)),
            "livedata_connections_refused": ("Connections closed at once, beyond --max-connections and its "
                                             "headroom (total)", float(self.refused)),
        }
