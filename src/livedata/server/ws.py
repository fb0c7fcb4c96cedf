"""WebSocket carrier: many subscriptions (and publishes) on one socket. See docs/protocol.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from livedata.config import Config
from livedata.core.clock import wall_ms
from livedata.core.frames import message
from livedata.core.protocol import ProtocolError, decode_client, parse_subscribe
from livedata.delivery import Subscription
from livedata.server import auth
from livedata.server.conn import Conn
from livedata.server.http import HTTPJSONError, json_error
from livedata.server.ingest import IngestError
from livedata.server.ingest.idempotency import check_key, request_key
from livedata.server.server import SERVER, Server
from livedata.server.sinks import WsSink

log = logging.getLogger("livedata.ws")


class Session:
    """The state of one WebSocket: its subscriptions by id and its token (its liveness is on the
    connection: ``Conn.rx_at``, pinged by ``connections.Pinger``).

    One per connected socket, so it is kept small (10,000 idle readers add up): slots, and no
    reference to the request once the socket is set up.
    """

    __slots__ = ("conn", "server", "sink", "subs", "token", "ws")

    def __init__(self, server: Server, ws: web.WebSocketResponse, sink: WsSink, token: str | None) -> None:
        self.server = server
        self.ws = ws
        self.sink = sink
        self.conn = sink.conn
        self.token = token
        self.subs: dict[str, Subscription] = {}

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
            config = self.server.config
            if auth.check(config, token, "read") is not None and auth.check(config, token, "write") is not None:
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
        denied = auth.check(config, self.token, auth.MESSAGES["subscribe"])
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
        denied = auth.check(self.server.config, self.token, auth.MESSAGES["publish"])
        if denied is not None:
            self.send({"type": "error", "message": denied[1], **({"ack": ack} if ack is not None else {})})
            return
        try:
            raw_key = obj.get("key")
            if raw_key is not None and (why := (check_key(raw_key) if isinstance(raw_key, str) else
                                                 "key must be a string")) is not None:
                raise IngestError(400, why, "idempotency")
            points = obj.get("points")
            key = request_key(raw_key, "publish", msgspec.json.encode(points))
            await self.server.ingest.publish_json(obj.get("channel"), points, 0, key)
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
    """``GET /api/ws``. The app's ``errors`` middleware hands this route straight over (its frame
    would live as long as the socket), so errors before the upgrade are answered here the same way.
    """
    try:
        opened = await _upgrade(request)
    except (web.HTTPException, asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error (see the server log)")
    if isinstance(opened, web.WebSocketResponse):
        return opened  # the connection went away during the upgrade
    # From here this coroutine lives as long as the socket.
    ws, session = opened
    conn = session.conn
    try:
        while True:
            msg = await ws.receive()
            kind = msg.type
            conn.rx_at = time.monotonic()
            if kind is WSMsgType.TEXT:
                try:
                    obj = decode_client(msg.data)
                except ProtocolError as exc:
                    session.error(str(exc))
                    continue
                await session.handle(obj)
            elif kind is WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                pass
            elif kind is WSMsgType.BINARY:
                await ws.close(code=1008, message=b"invalid message: binary frames are not accepted")
                break
            else:  # CLOSE, CLOSING, CLOSED (aiohttp answered the close), ERROR
                break
            if not conn.is_open:
                break
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on a WebSocket from %s", conn.peer)
        if not ws.closed:
            await ws.close(code=1011, message=b"internal error")
    finally:
        session.close()
        reason = conn.close_reason
        conn.close("gone")
        if reason == "shutdown" and not ws.closed:
            await ws.close(code=1001, message=b"going away")
    return ws


async def _upgrade(request: web.Request) -> web.WebSocketResponse | tuple[web.WebSocketResponse, Session]:
    server = request.app[SERVER]
    config = server.config
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(request, origin, config):
        # Cross-site WebSocket hijacking: another page cannot open a socket with the user's cookies.
        raise_json(403, f"origin {origin[:100]!r} is not allowed (see --cors-origin)")
    connections = server.connections
    busy = connections.over_limit(request)
    if busy is not None:
        raise_json(429, busy)
    token = auth.request_token(request, query_token=True)
    # No aiohttp heartbeat (a timer and a ping task per socket): the server's Pinger pings every
    # socket from one task. autoping off: pongs reach the loop in websocket() (liveness), which answers pings.
    ws = web.WebSocketResponse(max_msg_size=config.max_frame_bytes, compress=False, autoping=False)
    await ws.prepare(request)
    ws.headers.clear()  # sent with the 101; nothing reads them again
    try:
        conn = connections.open(request, WsSink.carrier)
    except ConnectionResetError:
        return ws
    sink = WsSink(conn)
    session = Session(server, ws, sink, token)
    _after_upgrade(request, conn)
    connections.attach(conn, sink, ws=ws)
    return ws, session


def _after_upgrade(request: web.Request, conn: Conn) -> None:
    """Adjust aiohttp's connection object once the upgrade is done.

    * Drop its HTTP request parser (about 0.7 KiB a socket): from now on aiohttp feeds every byte
      to the WebSocket reader and never uses the HTTP parser again (it drops it itself when the
      connection is lost).
    * Tell the connection whenever bytes arrive, not only whole messages, so a peer busy sending one
      large frame is not taken for a dead one (what aiohttp's own heartbeat does with this hook).

    Only done when the upgrade is visibly complete (the WebSocket reader installed, no hook yet);
    an aiohttp with another layout is left alone: the pinger then counts whole messages only.
    """
    protocol = request.protocol
    if getattr(protocol, "_payload_parser", None) is None or not getattr(protocol, "_upgraded", False):
        return
    with contextlib.suppress(AttributeError):
        protocol._parser = None
    with contextlib.suppress(AttributeError):
        if protocol._data_received_cb is None:
            protocol._data_received_cb = conn.touch


def raise_json(status: int, message_: str) -> None:
    raise HTTPJSONError(status, message_)
