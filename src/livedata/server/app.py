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
from livedata.config import Config
from livedata.server import auth
from livedata.server.channels import channels, delete_channel
from livedata.server.compat import reference_stream
from livedata.server.http import json_error, json_response
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


def _accepts_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


async def root(request: web.Request) -> web.StreamResponse:
    """The live view for browsers; the original reference stream for everyone else.

    Rule: a request that accepts ``text/html`` and has no ``numSeries`` gets the page.
    """
    server = request.app[SERVER]
    if _accepts_html(request) and "numSeries" not in request.query:
        index = STATIC / "index.html"
        if index.exists():
            return web.FileResponse(index, headers={"Cache-Control": "no-cache", **PAGE_HEADERS})
    return await reference_stream(request, server.ticker, server.connections)


async def health(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response(
        {"status": "ok", "version": __version__, "uptime_s": round(time.monotonic() - server.started, 3)}
    )


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
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return await preflight(request)
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
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error (see the server log)")


def _cors(config: Config) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    allowed = set(config.cors_origin)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if response.status == 101:  # a WebSocket upgrade: CORS does not apply (the Origin check does)
            return
        origin = request.headers.get("Origin")
        if origin is None:
            if "*" in allowed:
                response.headers["Access-Control-Allow-Origin"] = "*"
            return
        if "*" in allowed or origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = "Content-Type"

    return on_prepare


async def preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
            "Access-Control-Max-Age": "600",
        },
    )


def create_app(config: Config) -> web.Application:
    """Build the aiohttp application for ``config``."""
    server = Server(config)
    tokens = auth.middleware(config, lambda reason: server.metrics.push_errors.labels(reason).inc())
    app = web.Application(middlewares=[server.admission.middleware(), errors, tokens],
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
    app.router.add_get("/", root)
    app.router.add_get("/api/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/ws", websocket)
    app.router.add_get("/api/stream", stream, name="stream")
    app.router.add_get("/api/channels", channels, name="channels")
    app.router.add_get("/api/sources", sources, name="sources")
    app.router.add_post("/api/push/{channel:.+}", push, name="push")
    app.router.add_delete("/api/channels/{channel:.+}", delete_channel, name="delete-channel")
    if (STATIC / "dist").exists():
        app.router.add_static("/static/", STATIC / "dist")
    return app
