"""HTTP streaming carrier: one subscription per request, as NDJSON or Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from livedata import __version__
from livedata.core.frames import message
from livedata.core.protocol import ProtocolError, parse_subscribe
from livedata.hub import Subscription, wall_ms
from livedata.server import auth
from livedata.server.http import json_error
from livedata.server.sinks import NdjsonSink, SseSink
from livedata.server.state import SERVER

RESERVED = {"channel", "id", "from", "to", "since", "fields", "interval", "token", "params"}


def subscribe_from_query(query: Any, last_event_id: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"type": "subscribe", "id": query.get("id", "A"), "channel": query.get("channel")}
    for key in ("from", "to", "since"):
        if key in query:
            obj[key] = query[key]
    if last_event_id:
        obj["since"] = last_event_id
    if "fields" in query:
        obj["fields"] = [f for f in query["fields"].split(",") if f]
    if "interval" in query:
        try:
            obj["interval"] = float(query["interval"])
        except ValueError:
            obj["interval"] = query["interval"]
    params = {k: v for k, v in query.items() if k not in RESERVED}
    if params:
        obj["params"] = params
    return obj


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/stream?channel=...``: the server messages of one subscription."""
    server = request.app[SERVER]
    if "channel" not in request.query:
        return json_error(400, "channel is required: /api/stream?channel=NAME")
    token = auth.bearer(request.headers.get("Authorization")) or request.query.get("token")
    denied = auth.check(server.config, token, "read")
    if denied is not None:
        return json_error(*denied)
    busy = server.over_limit(request)
    if busy is not None:
        return json_error(429, busy)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    try:
        req = parse_subscribe(subscribe_from_query(request.query, request.headers.get("Last-Event-ID")), wall_ms())
    except ProtocolError as exc:
        return json_error(400, str(exc))
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        conn = server.new_conn(request)
    except ConnectionResetError:
        return resp
    sink = SseSink(conn) if sse else NdjsonSink(conn)
    server.metrics.connections_total.labels(sink.carrier).inc()
    server.hub.sinks.add(sink)
    sink.send(message({"type": "hello", "version": __version__, "time": wall_ms(),
                       "heartbeat_ms": int(server.config.heartbeat_s * 1000)}), force=True)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_done(sub: Subscription) -> None:
        if not done.done():
            done.set_result(None)

    sub = server.hub.subscribe(req, sink, on_done)
    try:
        await asyncio.wait([done, conn.closed], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    finally:
        server.hub.unsubscribe(sub)
        server.hub.sinks.discard(sink)
        reason = conn.close_reason
        conn.close("gone")
    if reason == "slow":
        sink.kill(reason)
    elif conn.transport is not None and not conn.transport.is_closing():
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
    return resp
