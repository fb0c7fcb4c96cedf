"""The aiohttp application: routes, middlewares (errors, then tokens) and the server's lifetime.

One :class:`~livedata.server.server.Server` object builds and owns every long-lived part; the
handlers here and in the carrier modules only translate HTTP into calls on it. Routes that need a
token are named, and ``auth.ROUTES`` says which right each needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from livedata import __version__
from livedata.brokers.base import BrokerError
from livedata.config import Config
from livedata.server import auth, influx, otlp
from livedata.server.channels import channels, delete_channel
from livedata.server.compat import reference_stream
from livedata.server.guard import Guard
from livedata.server.http import json_error, json_response, quiet_bad_requests, wants_page
from livedata.server.openapi import SPEC
from livedata.server.push import push
from livedata.server.server import SERVER, Server
from livedata.server.sources import sources
from livedata.server.stream import stream
from livedata.server.ws import websocket

log = logging.getLogger("livedata.server")

STATIC = Path(__file__).parent / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_HEADERS = {
    # The live view loads only its own script and style and talks only to this server.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def root(request: web.Request) -> web.StreamResponse:
    """The live view for browsers; the original reference stream for everyone else.

    Rule: a request that accepts ``text/html`` and has no ``numSeries`` gets the page
    (``http.wants_page``; the page needs no token, the stream a read token: ``auth.py``).
    """
    server = request.app[SERVER]
    if wants_page(request):
        index = STATIC / "index.html"
        if index.exists():
            return web.FileResponse(index, headers={"Cache-Control": "no-cache", **PAGE_HEADERS})
    return await reference_stream(request, server.ticker, server.connections)


async def health(request: web.Request) -> web.Response:
    """Liveness (always 200 while the process serves) and the broker's state: ``status`` is
    ``degraded`` and ``broker`` ``unavailable`` while the broker cannot be reached."""
    server = request.app[SERVER]
    try:
        await server.broker.ping()
        broker = "ok"
    except BrokerError:
        broker = "unavailable"
    return json_response({"status": "ok" if broker == "ok" else "degraded", "broker": broker,
                          "version": __version__, "uptime_s": round(time.monotonic() - server.started, 3)})


async def openapi(request: web.Request) -> web.Response:
    return json_response(SPEC)


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[SERVER].metrics.render_async()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


@web.middleware
def errors(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every error answer is JSON with a sentence in ``error``; nothing escapes as a 500 page.

    A WebSocket goes straight to its handler, which answers its own errors the same way: a
    middleware's coroutine frame would otherwise stay alive as long as each socket (10,000 idle
    readers hold 10,000 of them).
    """
    if request.match_info.handler is websocket:
        return handler(request)
    return _errors(request, handler)


async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return json_error(404, f"no such path: {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        resp = json_error(405, f"method {request.method} not allowed on {request.path}",
                          allowed=sorted(exc.allowed_methods))
        resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return resp
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVER].config.max_body_bytes
        return json_error(413, f"body too large: the limit is {limit} bytes")
    except web.HTTPException:
        raise
    except BrokerError as exc:
        resp = json_error(503, f"the broker is unavailable, try again later: {exc}")
        resp.headers["Retry-After"] = "1"
        return resp
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error (see the server log)")


def _cors(config: Config) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    allowed = Guard.of(config).origins

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if response.status == 101:  # a WebSocket upgrade: CORS does not apply (the Origin check does)
            return
        response.headers["X-Content-Type-Options"] = "nosniff"  # no answer is ever run as a script
        origin = request.headers.get("Origin")
        if origin is None:
            if "*" in allowed:
                response.headers["Access-Control-Allow-Origin"] = "*"
            return
        if "*" in allowed or origin.rstrip("/").lower() in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = "Content-Type"

    return on_prepare


def create_app(config: Config) -> web.Application:
    """Build the aiohttp application for ``config``."""
    quiet_bad_requests()
    server = Server(config)
    guard = auth.middleware(config, lambda reason: server.metrics.push_errors.labels(reason).inc())
    app = web.Application(middlewares=[server.admission.middleware(), errors, guard],
                          client_max_size=config.max_body_bytes)
    app[SERVER] = server
    app.on_response_prepare.append(_cors(config))

    async def on_startup(app: web.Application) -> None:
        await server.start()

    async def on_shutdown(app: web.Application) -> None:
        await server.shutdown()

    async def on_cleanup(app: web.Application) -> None:
        await server.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    # Every route is named and has a rule in auth.ROUTES (tests/unit/test_auth_routes.py).
    app.router.add_get("/", root, name="root")
    app.router.add_get("/api/health", health, name="health")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/api/openapi.json", openapi, name="openapi")
    app.router.add_get("/api/ws", websocket, name="ws")
    app.router.add_get("/api/stream", stream, name="stream")
    app.router.add_get("/api/channels", channels, name="channels")
    app.router.add_get("/api/sources", sources, name="sources")
    app.router.add_post("/api/push/{channel:[\\s\\S]+}", push, name="push")  # any character: checked by the handler
    app.router.add_delete("/api/channels/{channel:[\\s\\S]+}", delete_channel, name="delete-channel")
    # Real producers, unchanged: the InfluxDB write API and OpenTelemetry (docs/ingest.md).
    app.router.add_post("/api/v2/write", influx.write_v2, name="influx-write-v2")
    app.router.add_post("/write", influx.write_v1, name="influx-write-v1")
    app.router.add_get("/ping", influx.ping, name="influx-ping")
    app.router.add_get("/health", influx.health, name="influx-health")
    app.router.add_get("/ready", influx.ready, name="influx-ready")
    app.router.add_route("*", "/query", influx.query, name="influx-query")
    app.router.add_post("/v1/metrics", otlp.metrics, name="otlp-metrics")
    if (STATIC / "dist").exists():
        app.router.add_static("/static/", STATIC / "dist", name="static")
    return app
