"""WebSocket carrier: many subscriptions (and publishes) on one socket. See docs/protocol.md."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSMsgType, web

from livedata import __version__
from livedata.config import Config
from livedata.core.frames import message
from livedata.core.protocol import ProtocolError, decode_client, parse_subscribe
from livedata.hub import Subscription, wall_ms
from livedata.server import auth
from livedata.server.ingest import IngestError, publish_json
from livedata.server.sinks import WsSink
from livedata.server.state import SERVER, Server

log = logging.getLogger("livedata.ws")


class Session:
    """The state of one WebSocket: its subscriptions by id, and its rights."""

    def __init__(self, server: Server, ws: web.WebSocketResponse, sink: WsSink, token: str | None) -> None:
        self.server = server
        self.ws = ws
        self.sink = sink
        self.token = token
        self.subs: dict[str, Subscription] = {}
        self.authed_read = auth.check(server.config, token, "read") is None

    def send(self, obj: dict[str, Any]) -> None:
        self.sink.send(message(obj), force=True)

    def error(self, text: str, sid: str | None = None) -> None:
        obj: dict[str, Any] = {"type": "error", "message": text}
        if sid is not None:
            obj["id"] = sid
        self.send(obj)

    async def handle(self, obj: dict[str, Any]) -> None:
        kind = obj["type"]
        if kind == "subscribe":
            self.subscribe(obj)
        elif kind == "unsubscribe":
            sid = obj.get("id")
            sub = self.subs.pop(sid, None) if isinstance(sid, str) else None
            if sub is None:
                self.error(f"no subscription with id {str(sid)[:64]!r}", sid if isinstance(sid, str) else None)
                return
            self.server.hub.unsubscribe(sub)
        elif kind == "publish":
            await self.publish(obj)
        elif kind == "auth":
            token = obj.get("token")
            if not isinstance(token, str):
                self.error("auth needs a string 'token'")
                return
            self.token = token
            self.authed_read = auth.check(self.server.config, token, "read") is None
            if not self.authed_read and auth.check(self.server.config, token, "write") is not None:
                self.error("unknown token")
            else:
                self.send({"type": "auth", "ok": True})
        elif kind == "ping":
            self.send({"type": "pong", "time": wall_ms()})
        else:
            self.error(f"unknown message type {kind[:40]!r} (expected subscribe, unsubscribe, publish, auth, ping)",
                       obj.get("id") if isinstance(obj.get("id"), str) else None)

    def subscribe(self, obj: dict[str, Any]) -> None:
        config = self.server.config
        try:
            req = parse_subscribe(obj, wall_ms())
        except ProtocolError as exc:
            self.error(str(exc), exc.id)
            return
        denied = auth.check(config, self.token, "read")
        if denied is not None:
            self.error(denied[1], req.id)
            return
        if req.id in self.subs:
            self.error(f"duplicate subscription id {req.id!r}: unsubscribe it first or pick another", req.id)
            return
        if len(self.subs) >= config.max_subscriptions:
            self.error(f"too many subscriptions on one socket (limit {config.max_subscriptions})", req.id)
            return
        self.subs[req.id] = self.server.hub.subscribe(req, self.sink, self._done)

    def _done(self, sub: Subscription) -> None:
        if self.subs.get(sub.id) is sub:
            del self.subs[sub.id]

    async def publish(self, obj: dict[str, Any]) -> None:
        ack = obj.get("ack")
        denied = auth.check(self.server.config, self.token, "write")
        if denied is not None:
            self.send({"type": "error", "message": denied[1], **({"ack": ack} if ack is not None else {})})
            return
        try:
            await publish_json(self.server, obj.get("channel"), obj.get("points"))
        except IngestError as exc:
            self.server.metrics.push_errors.labels(exc.reason).inc()
            out: dict[str, Any] = {"type": "error", "message": exc.message}
            if exc.line is not None:
                out["line"] = exc.line
            if ack is not None:
                out["ack"] = ack
            self.send(out)
            return
        if ack is not None:
            self.send({"type": "ack", "ack": ack})

    def close(self) -> None:
        for sub in list(self.subs.values()):
            self.server.hub.unsubscribe(sub)
        self.subs.clear()


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def origin_allowed(request: web.Request, origin: str, config: Config) -> bool:
    """An allowed origin (``--cors-origin``), or this server's own: the live view page it serves.

    A server bound to loopback only accepts its own origin under a loopback name, so a page on a
    rebound DNS name (``evil.example`` resolving to 127.0.0.1) cannot pass as "its own origin".
    """
    allowed = config.cors_origin
    if "*" in allowed or origin in allowed:
        return True
    if origin != f"{request.scheme}://{request.host}":
        return False
    hostname = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    bound_to_loopback = config.host in LOOPBACK_NAMES
    return not bound_to_loopback or hostname in LOOPBACK_NAMES


async def websocket(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    config = server.config
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(request, origin, config):
        # Cross-site WebSocket hijacking: another page cannot open a socket with the user's cookies.
        raise_json(403, f"origin {origin[:100]!r} is not allowed (see --cors-origin)")
    busy = server.over_limit(request)
    if busy is not None:
        raise_json(429, busy)
    token = auth.bearer(request.headers.get("Authorization")) or request.query.get("token")
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat_s, max_msg_size=config.max_frame_bytes, compress=False, autoping=True
    )
    await ws.prepare(request)
    try:
        conn = server.new_conn(request)
    except ConnectionResetError:
        return ws
    sink = WsSink(conn)
    server.hub.sinks.add(sink)
    server.metrics.connections_total.labels("ws").inc()
    session = Session(server, ws, sink, token)
    session.send({"type": "hello", "version": __version__, "time": wall_ms(),
                  "heartbeat_ms": int(config.heartbeat_s * 1000)})
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    obj = decode_client(msg.data)
                except ProtocolError as exc:
                    session.error(str(exc))
                    continue
                await session.handle(obj)
            elif msg.type == WSMsgType.BINARY:
                await ws.close(code=1008, message=b"invalid message: binary frames are not accepted")
                break
            elif msg.type == WSMsgType.ERROR:
                break
            if not conn.is_open:
                break
    finally:
        session.close()
        server.hub.sinks.discard(sink)
        reason = conn.close_reason
        conn.close("gone")
        if reason == "shutdown" and not ws.closed:
            await ws.close(code=1001, message=b"going away")
    return ws


def raise_json(status: int, message_: str) -> None:
    from livedata.server.http import HTTPJSONError

    raise HTTPJSONError(status, message_)
