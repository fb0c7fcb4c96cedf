"""WebSocket carrier: many subscriptions (and publishes) on one socket. See docs/protocol.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from livedata.core.budget import BudgetError
from livedata.core.clock import wall_ms
from livedata.core.frames import message
from livedata.core.protocol import FrameError, ProtocolError, decode_client, parse_subscribe
from livedata.core.text import shown
from livedata.delivery import Subscription
from livedata.server import auth
from livedata.server.conn import Conn
from livedata.server.http import HTTPJSONError, json_error
from livedata.server.ingest import IngestError
from livedata.server.ingest.idempotency import check_key, request_key
from livedata.server.server import SERVER, Server
from livedata.server.sinks import WsSink

log = logging.getLogger("livedata.ws")

MAX_ACK = 128


class Close(Exception):
    """End the socket with a close code (docs/protocol.md, close codes) and a short reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def payload(self) -> bytes:
        """The reason as a close frame carries it: at most 123 bytes of UTF-8."""
        return self.reason.encode()[:123].decode(errors="ignore").encode()


def unauthorized(why: str) -> Close:
    return Close(4001, f"unauthorized: {why}")


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

    def needs_auth(self) -> bool:
        """Reading needs a token and this socket has none: only ``auth`` may come now."""
        return self.token is None and bool(self.server.config.read_tokens)

    async def handle(self, obj: dict[str, Any], size: int = 0) -> None:
        """Act on one message. Raises :class:`Close` when the socket must end."""
        kind = obj["type"]
        if kind == "auth":
            self.auth(obj)
            return
        if self.needs_auth():
            raise unauthorized("this server needs a token: send {\"type\":\"auth\",\"token\":...} first")
        if kind == "subscribe":
            self.subscribe(obj)
        elif kind == "unsubscribe":
            sid = obj.get("id")
            sub = self.subs.pop(sid, None) if isinstance(sid, str) else None
            if sub is None:
                self.error(f"no subscription with id {shown(sid, 64)}", sid if isinstance(sid, str) else None)
                return
            self.server.hub.unsubscribe(sub)
        elif kind == "publish":
            await self.publish(obj, size)
        elif kind == "ping":
            self.send({"type": "pong", "time": wall_ms()})
        else:
            self.error(f"unknown message type {kind[:40]!r} (expected subscribe, unsubscribe, publish, auth, ping)",
                       obj.get("id") if isinstance(obj.get("id"), str) else None)

    def auth(self, obj: dict[str, Any]) -> None:
        """``auth``: a token for the messages that follow. A missing or unknown one ends the socket
        (4001), and with it every subscription made so far."""
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise unauthorized("auth needs a non-empty string 'token'")
        if self.server.config.auth_enabled and not auth.known(self.server.config, token):
            raise unauthorized("unknown token")
        self.token = token
        self.send({"type": "auth", "ok": True})

    def subscribe(self, obj: dict[str, Any]) -> None:
        config = self.server.config
        try:
            req = parse_subscribe(obj, wall_ms())
        except ProtocolError as exc:
            self.error(str(exc), exc.id)
            return
        denied = auth.check(config, self.token, auth.MESSAGES["subscribe"])
        if denied is not None:
            self.deny(denied, req.id)
            return
        if req.id in self.subs:
            self.error(f"duplicate subscription id {req.id!r}: unsubscribe it first or pick another", req.id)
            return
        if len(self.subs) >= config.max_subscriptions:
            self.error(f"too many subscriptions on one socket (limit {config.max_subscriptions})", req.id)
            return
        try:
            self.subs[req.id] = self.server.hub.subscribe(req, self.sink, self._done)
        except BudgetError as exc:
            self.error(str(exc), req.id)

    def _done(self, sub: Subscription) -> None:
        if self.subs.get(sub.id) is sub:
            del self.subs[sub.id]

    def deny(self, denied: tuple[int, str], sid: str | None = None, ack: str | float | None = None) -> None:
        """A token that is missing or unknown ends the socket (4001); a known token without the
        right gets an ``error`` (like HTTP's 403), and the socket goes on."""
        status, text = denied
        if status == 401:
            raise unauthorized(text)
        out: dict[str, Any] = {"type": "error", "message": text}
        if sid is not None:
            out["id"] = sid
        if ack is not None:
            out["ack"] = ack
        self.send(out)

    async def publish(self, obj: dict[str, Any], size: int = 0) -> None:
        ack = obj.get("ack")
        if ack is not None and not (
                (isinstance(ack, str) and 0 < len(ack) <= MAX_ACK)
                or (isinstance(ack, int | float) and not isinstance(ack, bool) and abs(ack) < 2**53)):
            self.error(f"ack must be a string of 1 to {MAX_ACK} characters or a number; nothing was published")
            return
        denied = auth.check(self.server.config, self.token, auth.MESSAGES["publish"])
        if denied is not None:
            self.deny(denied, ack=ack)
            return
        try:
            raw_key = obj.get("key")
            if raw_key is not None and (why := (check_key(raw_key) if isinstance(raw_key, str) else
                                                 "key must be a string")) is not None:
                raise IngestError(400, why, "idempotency")
            points = obj.get("points")
            key = request_key(raw_key, "publish", msgspec.json.encode(points))
            async with self.server.ingest.turn:
                await self.server.ingest.publish_json(obj.get("channel"), points, 0, key, size=size)
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
    if not isinstance(opened, tuple):
        return opened  # not an upgrade (a JSON 400), or the connection went away during it
    # From here this coroutine lives as long as the socket.
    ws, session, refused = opened
    conn = session.conn
    try:
        if refused is not None:
            raise refused
        while True:
            msg = await ws.receive()
            kind = msg.type
            conn.rx_at = time.monotonic()
            conn.rx_pending = 0
            if kind is WSMsgType.TEXT:
                try:
                    obj = decode_client(msg.data)
                except FrameError as exc:
                    raise Close(1008, f"invalid message: {exc}") from None
                except ProtocolError as exc:
                    session.error(str(exc))
                    continue
                try:
                    await session.handle(obj, len(msg.data))
                except (Close, asyncio.CancelledError, ConnectionError):
                    raise
                except Exception:  # a bug: say so, keep the socket and its other subscriptions
                    log.exception("unhandled error on a %r message from %s", str(obj["type"])[:40], conn.peer)
                    session.error("internal error handling this message (see the server log)")
            elif kind is WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                pass
            elif kind is WSMsgType.BINARY:
                raise Close(1008, "invalid message: binary frames are not accepted")
            else:  # CLOSE, CLOSING, CLOSED (aiohttp answered the close), ERROR
                break
            if not conn.is_open:
                break
    except Close as close:
        session.close()  # subscriptions end before the close frame goes out
        if not ws.closed:
            await ws.close(code=close.code, message=close.payload)
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


async def _upgrade(
    request: web.Request,
) -> web.StreamResponse | tuple[web.WebSocketResponse, Session, Close | None]:
    """Open the socket (host and origin were checked by ``auth.middleware``: a page of another
    site cannot open a socket with the user's cookies). A token given with the upgrade that this
    server does not know ends the socket at once with 4001 (a browser sees no HTTP status)."""
    server = request.app[SERVER]
    config = server.config
    # No aiohttp heartbeat (a timer and a ping task per socket): the server's Pinger pings every
    # socket from one task. autoping off: pongs reach the loop in websocket() (liveness), which answers pings.
    ws = web.WebSocketResponse(max_msg_size=config.max_frame_bytes, compress=False, autoping=False)
    if not ws.can_prepare(request).ok:
        return json_error(400, "this is the WebSocket endpoint: connect with a WebSocket client "
                               "(GET with Upgrade: websocket); see docs/protocol.md")
    connections = server.connections
    busy = connections.over_limit(request)  # per client behind --trusted-proxies (admission.py: per TCP peer)
    if busy is not None:
        raise_json(429, busy)
    token = auth.request_token(request, query_token=True)
    refused = None
    if token is not None and config.auth_enabled and not auth.known(config, token):
        refused = unauthorized("unknown token")
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
    return ws, session, refused


READ_BURST = 256 << 10
"""Bytes one WebSocket may deliver before its reading waits for the loop's next turn. The event
loop reads a ready socket until it is drained (libuv: up to 32 reads of 64 KiB), so without this,
forty clients each sending a large message kept the loop in one turn of reads for over 100 ms."""


class _Counting(asyncio.Protocol):
    """Between a WebSocket's transport and aiohttp: counts the bytes of the message in progress
    (``Conn.rx_pending``, which the memory budget samples) and marks the peer alive whenever bytes
    arrive, not only whole messages, so one busy sending a large frame is not taken for dead. After
    :data:`READ_BURST` bytes it pauses reading until the loop's next turn, so one socket's flood
    takes a bounded share of a turn."""

    __slots__ = ("burst", "conn", "held", "inner", "transport")

    def __init__(self, inner: asyncio.Protocol, conn: Conn, transport: asyncio.Transport) -> None:
        self.inner = inner
        self.conn = conn
        self.transport = transport
        self.burst = 0
        self.held = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover - made already
        pass

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.rx_pending += len(data)
        conn.rx_at = time.monotonic()
        self.inner.data_received(data)
        self.burst += len(data)
        if self.burst >= READ_BURST and not self.held and not self.transport.is_closing():
            self.held = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self.held = False
        self.burst = 0
        inner, transport = self.inner, self.transport
        # aiohttp may hold reading itself (its message queue is full): then it resumes it
        if transport.is_closing() or getattr(inner, "_reading_paused", False) or getattr(inner, "_buffer_paused",
                                                                                          False):
            return
        transport.resume_reading()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _after_upgrade(request: web.Request, conn: Conn) -> None:
    """Adjust aiohttp's connection object once the upgrade is done.

    * Drop its HTTP request parser (about 0.7 KiB a socket): from now on aiohttp feeds every byte
      to the WebSocket reader and never uses the HTTP parser again (it drops it itself when the
      connection is lost).
    * Put :class:`_Counting` between the transport and aiohttp.

    Only done when the upgrade is visibly complete (the WebSocket reader installed); an aiohttp
    with another layout is left alone: the pinger then counts whole messages only, and a message
    in progress is bounded by ``--max-frame-bytes`` but not counted.
    """
    protocol = request.protocol
    if getattr(protocol, "_payload_parser", None) is None or not getattr(protocol, "_upgraded", False):
        return
    with contextlib.suppress(AttributeError):
        protocol._parser = None
    transport = request.transport
    if transport is not None and transport.get_protocol() is protocol:
        transport.set_protocol(_Counting(protocol, conn, transport))


def raise_json(status: int, message_: str) -> None:
    raise HTTPJSONError(status, message_)
