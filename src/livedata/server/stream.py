"""HTTP streaming carrier: one subscription per request, as NDJSON or Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from livedata.core.budget import BudgetError
from livedata.core.clock import wall_ms
from livedata.core.frames import message
from livedata.core.protocol import MAX_INTERVAL_MS, ProtocolError, parse_subscribe
from livedata.delivery import Subscription
from livedata.server.http import json_error
from livedata.server.server import SERVER
from livedata.server.sinks import NdjsonSink, SseSink

RESERVED = {"channel", "id", "from", "to", "since", "fields", "field", "interval", "token", "params", "max_points",
            "resolution_ms"}


def subscribe_from_query(query: Any, last_event_id: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"type": "subscribe", "id": query.get("id", "A"), "channel": query.get("channel")}
    for key in ("from", "to", "since"):
        if key in query:
            obj[key] = query[key]
    if last_event_id:
        obj["since"] = last_event_id
    if "fields" in query:
        obj["fields"] = [f for f in query["fields"].split(",") if f]
    if "field" in query:  # one name each, never split: field names may hold commas
        obj.setdefault("fields", []).extend(query.getall("field"))
    if "interval" in query:
        raw = query["interval"]
        try:
            value = float(raw)
        except ValueError:
            raise ProtocolError(f"interval must be a number of ms from 0 to {MAX_INTERVAL_MS}, "
                                f"got {raw[:20]!r}") from None
        obj["interval"] = int(value) if value.is_integer() else value
    for key, kind in (("max_points", int), ("resolution_ms", float)):
        if key in query:
            try:
                obj[key] = kind(query[key])
            except ValueError:
                obj[key] = query[key]  # parse_subscribe says what is wrong with it
    params = {k: v for k, v in query.items() if k not in RESERVED}
    if params:
        obj["params"] = params
    return obj


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/stream?channel=...``: the server messages of one subscription (tokens: ``auth.py``)."""
    server = request.app[SERVER]
    if "channel" not in request.query:
        return json_error(400, "channel is required: /api/stream?channel=NAME")
    connections = server.connections
    busy = connections.over_limit(request)  # per client behind --trusted-proxies (admission.py: per TCP peer)
    if busy is not None:
        return json_error(429, busy)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    carrier: type[SseSink | NdjsonSink] = SseSink if sse else NdjsonSink
    try:
        req = parse_subscribe(subscribe_from_query(request.query, request.headers.get("Last-Event-ID")), wall_ms())
    except ProtocolError as exc:
        return json_error(400, str(exc))
    if not server.budget.free("connections"):
        return json_error(503, "the server is at its memory budget for subscriptions: retry in a moment "
                          "(or raise --max-memory)")
    await server.broker.ping()  # BrokerError: a 503 (app.py) rather than a 200 whose stream fails at once
    headers = {
        "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
    if request.method == "HEAD":  # what GET would answer, without opening the stream
        return web.Response(headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        conn = connections.open(request, carrier.carrier)
    except ConnectionResetError:
        return resp
    sink = carrier(conn)
    connections.attach(conn, sink)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_done(sub: Subscription) -> None:
        if not done.done():
            done.set_result(None)

    try:
        sub = server.hub.subscribe(req, sink, on_done)
    except BudgetError as exc:
        sink.send(message({"type": "error", "id": req.id, "message": str(exc)}), force=True)
        conn.close("gone")
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp
    try:
        await asyncio.wait([done, conn.closed], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    finally:
        server.hub.unsubscribe(sub)
        reason = conn.close_reason
        conn.close("gone")
    if reason == "slow":
        sink.kill(reason)
    elif conn.transport is not None and not conn.transport.is_closing():
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
    return resp
