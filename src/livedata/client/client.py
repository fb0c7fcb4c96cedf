"""The asyncio client: one WebSocket for every subscription (reconnecting), HTTP for pushes.

About 580 lines, one class and its subscription type: they share the connection's state (the
socket, positions to resume from, the reconnect loop) and are documented as one API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import yarl

from livedata.client.errors import describe, ssl_option
from livedata.client.push import PushBuffer, is_columnar
from livedata.client.subscription import Subscription
from livedata.client.types import LivedataError, NoticeCallback, Value
from livedata.core.clock import wall_ms
from livedata.core.names import InvalidName, channel_path, check_channel
from livedata.core.protocol import ProtocolError, parse_time

log = logging.getLogger("livedata.client")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _http_base(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    elif "://" not in url:
        url = "http://" + url
    if url.endswith("/api/ws"):
        url = url[: -len("/api/ws")]
    return url


def _check_url(base: str, given: str) -> None:
    """Raises LivedataError unless ``base`` is an http(s) URL with a host."""
    try:
        parts = urlsplit(base)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        ok = False
    if not ok:
        raise LivedataError(f"invalid server URL {given!r}: use http://host:port or https://host:port "
                            "(ws:// and wss:// work too)")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (None: absent or not a number of seconds)."""
    try:
        return min(30.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def _backoff(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [d/2, d] for d = initial * 2**attempt."""
    d = min(cap, initial * (2 ** min(attempt, 30)))
    return random.uniform(d / 2, d)

class Client:
    """One connection to a livedata server: subscriptions over one WebSocket, pushes over HTTP.

    Args:
        url: the server, e.g. ``http://localhost:8080`` (``ws://`` works too).
        token: a read or write token, sent as ``Authorization: Bearer``.
        batch_points: a channel's buffer is sent once it holds this many points.
        batch_ms: ... or this long after its first point (0: only on size and :meth:`flush`).
        retry_for_s: how long a push keeps retrying connection errors and ``503``.
        reconnect_max_s: the longest wait between two reconnect attempts.
        give_up_after_s: stop reconnecting after this long without a connection (None: never);
            the subscriptions then raise :class:`LivedataError`.
        on_notice: default callback for notices (otherwise they are yielded by subscriptions).
        queue_size: frames buffered per subscription before reading the socket waits.
        cacert: a PEM file of the CA that signed the server's certificate (trusted besides the
            system's CAs), for a server with a self-signed or private certificate.
        insecure: do not verify the server's TLS certificate at all (testing only).
    """

    def __init__(self, url: str, token: str | None = None, *, batch_points: int = 1000,
                 batch_ms: float = 100.0, retry_for_s: float = 30.0, request_timeout_s: float = 30.0,
                 reconnect_initial_s: float = 0.1, reconnect_max_s: float = 10.0,
                 give_up_after_s: float | None = None, on_notice: NoticeCallback | None = None,
                 queue_size: int = 10_000, cacert: str | None = None, insecure: bool = False) -> None:
        self.url = _http_base(url)
        _check_url(self.url, url)
        self.ssl = ssl_option(cacert, insecure)
        scheme, rest = self.url.split("://", 1)
        self.ws_url = ("wss://" if scheme == "https" else "ws://") + rest + "/api/ws"
        self.token = token
        self.batch_points = max(1, batch_points)
        self.batch_ms = batch_ms
        self.retry_for_s = retry_for_s
        self.request_timeout_s = request_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.give_up_after_s = give_up_after_s
        self.on_notice = on_notice
        self.queue_size = queue_size
        self.session: aiohttp.ClientSession | None = None
        self._own_session = True
        self.subs: dict[str, Subscription] = {}
        self._ids = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected: asyncio.Event = asyncio.Event()
        self._clock_offset = 0
        self._heartbeat_s = 15.0
        self._closing = False
        self.reconnects = 0
        """How many times the WebSocket was re-established."""
        self._buffers: dict[str, PushBuffer] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._send_lock = asyncio.Lock()
        self._push_error: LivedataError | None = None
        self._refused: LivedataError | None = None
        """The server closed the socket with 4001 (a missing or wrong token): no reconnect can help."""
        self._bg: set[asyncio.Task[Any]] = set()

    # --- lifetime -------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await self.close(flush=False)

    async def open(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers=self._headers(),
                                                 connector=aiohttp.TCPConnector(ssl=self.ssl))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def close(self, flush: bool = True) -> None:
        """Send what is buffered (unless ``flush=False``), end subscriptions, close the socket."""
        try:
            if flush:
                await self.flush()
        finally:
            self._closing = True
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            for task in list(self._bg):
                task.cancel()
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reader
                self._reader = None
            for sub in list(self.subs.values()):
                sub._end()
            self.subs.clear()
            if self._ws is not None:
                await self._ws.close()
                self._ws = None
            if self.session is not None and self._own_session:
                await self.session.close()
            self.session = None

    def _server_now(self) -> int:
        return wall_ms() + self._clock_offset

    # --- subscribing ------------------------------------------------------------------------------

    async def subscribe(self, channel: str, params: Mapping[str, Any] | None = None, from_: int | str | None = None,
                        to: int | str | None = None, fields: Sequence[str] | None = None, interval: float = 0,
                        since: str | None = None, *, id: str | None = None,
                        on_notice: NoticeCallback | None = None, max_points: int | None = None,
                        resolution_ms: int | None = None) -> Subscription:
        """Subscribe to ``channel``; iterate the result for :class:`Frame` (and :class:`Notice`) items.

        ``from_``/``to`` are epoch ms or relative times like ``now-5m`` (resolved against the
        server's clock now, so a resume never moves them). ``since`` resumes after a position.
        ``max_points`` (with ``from_``) and/or ``resolution_ms`` ask for buckets instead of raw
        points (see :class:`Frame` and :meth:`Subscription.buckets`).
        Raises :class:`LivedataError` when the server cannot be reached at all.
        """
        await self.open()
        await self._ensure_connected()
        now = self._server_now()
        try:
            from_ms = None if from_ is None else parse_time(from_, now, "from")
            to_ms = None if to is None else parse_time(to, now, "to")
        except ProtocolError as exc:
            raise LivedataError(str(exc)) from None
        if id is None:
            self._ids += 1
            id = f"s{self._ids}"
        if id in self.subs:
            raise LivedataError(f"subscription id {id!r} is in use", id=id)
        sub = Subscription(self, id, channel, params, from_ms, to_ms, fields, interval, since,
                           on_notice or self.on_notice, self.queue_size, max_points, resolution_ms)
        sub.started_ms = now
        if self._refused is not None:  # the socket was refused while this was being set up
            sub._end(self._refused)
            return sub
        self.subs[id] = sub
        await self._send(sub.request())
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self.subs.get(sub.id) is sub:
            del self.subs[sub.id]
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await self._send({"type": "unsubscribe", "id": sub.id})

    async def _send(self, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # sent on (re)connect
        try:
            await ws.send_str(_encode(msg).decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            log.debug("send failed; the reconnect resends subscriptions")

    async def _ensure_connected(self) -> None:
        if self._reader is None or self._reader.done():
            self._connected.clear()
            first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reader = asyncio.get_running_loop().create_task(self._run(first), name="livedata-client")
            await first  # raises when the very first attempt fails

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        assert self.session is not None
        ws = await self.session.ws_connect(self.ws_url, max_msg_size=0, autoping=True, heartbeat=None,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        try:
            msg = await ws.receive(timeout=10.0)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"expected hello, got {msg.type.name}")
            hello = _decode(msg.data)
            if hello.get("type") != "hello":
                raise ConnectionError(f"expected hello, got {str(hello)[:100]}")
        except BaseException:
            await ws.close()
            raise
        self._clock_offset = int(hello.get("time", wall_ms())) - wall_ms()
        self._heartbeat_s = max(0.5, float(hello.get("heartbeat_ms", 15000)) / 1000)
        return ws

    async def _run(self, first: asyncio.Future[None]) -> None:
        attempt = 0
        down_since: float | None = None
        connected_once = False
        while not self._closing:
            try:
                ws = await self._connect()
            except asyncio.CancelledError:
                raise
            except aiohttp.WSServerHandshakeError as exc:
                err = LivedataError(f"WebSocket refused by {self.ws_url}: {exc.status} {exc.message}",
                                    status=exc.status)
                if exc.status < 500 or not connected_once:
                    self._fail(first, err)
                    return
                why: str = str(err)
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError, ValueError) as exc:
                if not connected_once:
                    self._fail(first, LivedataError(describe(exc, self.url, 10.0)))
                    return
                why = describe(exc, self.url, 10.0)
            else:
                self._ws = ws
                if connected_once:
                    self.reconnects += 1
                    log.warning("reconnected to %s; resuming %d subscription%s", self.url, len(self.subs),
                                "" if len(self.subs) == 1 else "s")
                connected_once = True
                attempt = 0
                down_since = None
                for sub in list(self.subs.values()):
                    await self._send(sub.request())
                self._connected.set()
                if not first.done():
                    first.set_result(None)
                why = await self._read(ws)
                self._connected.clear()
                self._ws = None
                if self._closing:
                    return
                if ws.close_code == 4001:  # a missing or wrong token: retrying cannot help
                    self._refused = LivedataError(f"{self.ws_url}: {why}", status=401)
                    self._fail(first, self._refused)
                    return
                for sub in self.subs.values():
                    sub._resume()
            loop = asyncio.get_running_loop()
            if down_since is None:
                down_since = loop.time()
            elif self.give_up_after_s is not None and loop.time() - down_since > self.give_up_after_s:
                err = LivedataError(f"lost the connection to {self.url} and could not reconnect "
                                    f"for {self.give_up_after_s:g} s: {why}")
                for sub in list(self.subs.values()):
                    sub._end(err)
                self.subs.clear()
                return
            delay = _backoff(attempt, self.reconnect_initial_s, self.reconnect_max_s)
            if attempt == 0:  # said once per outage; every further attempt is logged at info
                log.warning("connection to %s lost (%s); reconnecting, subscriptions resume where they stopped",
                            self.url, why)
            else:
                log.info("still no connection to %s (%s); attempt %d in %.2f s", self.url, why, attempt + 1, delay)
            attempt += 1
            await asyncio.sleep(delay)

    def _fail(self, first: asyncio.Future[None], err: LivedataError) -> None:
        if not first.done():
            first.set_exception(err)
        for sub in list(self.subs.values()):
            sub._end(err)
        self.subs.clear()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Dispatch messages until the socket ends; returns why it ended."""
        while True:
            try:
                msg = await ws.receive(timeout=self._heartbeat_s * 2.5 + 2)
            except TimeoutError:
                await ws.close()
                return "no message or heartbeat from the server"
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    obj = _decode(msg.data)
                except msgspec.DecodeError:
                    log.warning("ignoring a malformed message from the server")
                    continue
                await self._dispatch(obj)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = ws.close_code
                reason = f": {msg.extra}" if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else ""
                return f"closed by the server (code {code}{reason})" if code else "closed"
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return f"error: {ws.exception()}"

    async def _dispatch(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        sid = obj.get("id")
        sub = self.subs.get(sid) if isinstance(sid, str) else None
        if kind == "data":
            if sub is not None:
                await sub._deliver(obj)
        elif kind == "notice":
            if sub is not None:
                await sub._notice(obj)
        elif kind == "complete":
            if sub is not None:
                del self.subs[sub.id]
                sub._end()
        elif kind == "error":
            text = str(obj.get("message", "error"))
            if sub is not None:
                del self.subs[sub.id]
                sub._end(LivedataError(f"{sub.channel}: {text}", channel=sub.channel, id=sub.id))
            else:
                log.warning("server error: %s", text)

    # --- the HTTP API -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, timeout_s: float | None = None) -> tuple[int, Any]:
        """One request, no retry: (status, decoded JSON body or None). Raises LivedataError when the
        server cannot be reached, with a sentence that says why."""
        await self.open()
        assert self.session is not None
        timeout = timeout_s or self.request_timeout_s
        try:
            async with self.session.request(method, self.url + path,
                                            timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                raw = await r.read()
                status = r.status
                reason = r.reason or ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LivedataError(describe(exc, self.url, timeout)) from None
        try:
            body = _decode(raw) if raw else None
        except msgspec.DecodeError:
            body = {"error": raw[:200].decode(errors="replace") or reason}
        return status, body

    @staticmethod
    def _raise_for(status: int, body: Any, what: str, channel: str | None = None) -> None:
        if 200 <= status < 300:
            return
        text = body.get("error") if isinstance(body, dict) else None
        raise LivedataError(f"{what}: {text or f'HTTP {status}'}", status=status, channel=channel)

    async def health(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """``GET /api/health`` within ``timeout_s``: whether the server is there at all (no token needed)."""
        status, body = await self._request("GET", "/api/health", timeout_s)
        if status != 200 or not isinstance(body, dict) or body.get("status") != "ok":
            hint = "is it a livedata server?"
            if status == 404 and urlsplit(self.url).path not in ("", "/"):
                hint = "the URL should be the server's base address, like " + "/".join(self.url.split("/")[:3])
            raise LivedataError(f"{self.url} answered /api/health with HTTP {status}: {hint}", status=status)
        return body

    async def channels(self) -> list[dict[str, Any]]:
        """``GET /api/channels``: one dict per channel (``name``, ``schema``, ``last_time``,
        ``points_per_s``, ``points``, ``generated``, and ``params`` for generated ones)."""
        status, body = await self._request("GET", "/api/channels")
        self._raise_for(status, body, "cannot list channels")
        if not isinstance(body, dict) or not isinstance(body.get("channels"), list):
            raise LivedataError(f"{self.url}/api/channels did not answer a channel list: is it a livedata server?")
        return [c for c in body["channels"] if isinstance(c, dict)]

    async def delete_channel(self, channel: str) -> None:
        """``DELETE /api/channels/{channel}``: its history goes; its subscribers get a notice and
        ``complete``. Raises LivedataError (``status`` 404) when there is no such channel."""
        status, body = await self._request("DELETE", f"/api/channels/{channel}")
        self._raise_for(status, body, f"cannot delete {channel}", channel)

    # --- pushing ----------------------------------------------------------------------------------

    def _raise_pending(self) -> None:
        err, self._push_error = self._push_error, None
        if err is not None:
            raise err

    async def push(self, channel: str, points: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Buffer points for ``channel``: a list of dicts, one dict, or columns ``{"time": [...], "x": [...]}``.

        Points without ``time`` get the client's clock now. The buffer is sent when it holds
        ``batch_points`` points (this call then waits for it), or ``batch_ms`` after its first
        point. An error of a background send is raised by the next push or flush.
        """
        self._raise_pending()
        now = wall_ms()
        buf = self._buffers.get(channel)
        if buf is None:
            buf = self._buffers[channel] = PushBuffer()
        if is_columnar(points):
            buf.add_columns(points, now)  # type: ignore[arg-type]
        elif isinstance(points, Mapping):
            buf.add_rows([points], now)
        else:
            buf.add_rows(points, now)
        if len(buf) >= self.batch_points:
            await self._flush_channel(channel)
        elif self.batch_ms > 0 and channel not in self._timers and len(buf):
            self._timers[channel] = asyncio.get_running_loop().call_later(
                self.batch_ms / 1000, self._timer_flush, channel)

    async def push_point(self, channel: str, time: int | str | None = None, **fields: Value) -> None:
        """Buffer one point: ``await c.push_point("sensors/kitchen", temp=21.5, door="open")``."""
        point: dict[str, Any] = dict(fields)
        if time is not None:
            point["time"] = time
        await self.push(channel, [point])

    def _timer_flush(self, channel: str) -> None:
        self._timers.pop(channel, None)
        task = asyncio.get_running_loop().create_task(self._background_flush(channel))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _background_flush(self, channel: str) -> None:
        try:
            await self._flush_channel(channel)
        except LivedataError as exc:
            log.warning("push to %s failed: %s", channel, exc)
            if self._push_error is None:
                self._push_error = exc

    async def flush(self) -> None:
        """Send every buffered point now; raises the first error (also of earlier background sends)."""
        first: LivedataError | None = None
        for channel in list(self._buffers):
            try:
                await self._flush_channel(channel)
            except LivedataError as exc:
                first = first or exc
        if self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)
        if first is not None:
            self._push_error = None
            raise first
        self._raise_pending()

    async def _flush_channel(self, channel: str) -> None:
        handle = self._timers.pop(channel, None)
        if handle is not None:
            handle.cancel()
        async with self._send_lock:  # one batch at a time: per-channel order is kept
            buf = self._buffers.pop(channel, None)
            if buf is None or not len(buf):
                return
            await self.send(channel, buf.body())

    async def send(self, channel: str, points: Any, reorder_ms: int = 0) -> None:
        """Send ``points`` now, as one request (no buffering): any shape the push API takes.

        ``reorder_ms`` holds them in the server's reorder window (docs/protocol.md). Retried with
        the same ``Idempotency-Key`` until stored (or ``retry_for_s`` passes): stored once.
        """
        await self._post(channel, _encode(points), "application/json",
                         {"reorder_ms": str(reorder_ms)} if reorder_ms else None)

    async def send_lines(self, channel: str, text: str, precision: str = "ns", reorder_ms: int = 0) -> None:
        """Send Influx line protocol now, as one request; points go to ``channel/measurement``."""
        params = {"precision": precision}
        if reorder_ms:
            params["reorder_ms"] = str(reorder_ms)
        await self._post(channel, text.encode(), "text/plain; charset=utf-8", params)

    async def _post(self, channel: str, body: bytes, content_type: str,
                    params: Mapping[str, str] | None = None) -> None:
        try:
            check_channel(channel)
        except InvalidName as exc:
            raise LivedataError(str(exc), status=400, channel=channel) from None
        await self.open()
        assert self.session is not None
        # Each level percent-encoded: names may hold spaces, '%', '?', '#' or any other character.
        url = yarl.URL(f"{self.url}/api/push/{channel_path(channel)}", encoded=True)
        headers = {"Content-Type": content_type, "Idempotency-Key": uuid.uuid4().hex}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for_s
        attempt = 0
        wait: float | None = 0.0
        while True:
            try:
                async with self.session.post(url, data=body, headers=headers, params=params,
                                             timeout=aiohttp.ClientTimeout(total=self.request_timeout_s)) as r:
                    if 200 <= r.status < 300:
                        return
                    raw = await r.read()
                    try:
                        info = _decode(raw)
                        if not isinstance(info, dict):
                            raise TypeError
                    except (msgspec.DecodeError, TypeError):
                        info = {"error": raw[:200].decode(errors="replace") or r.reason}
                    err = LivedataError(str(info.get("error", r.reason)), status=r.status, line=info.get("line"),
                                        field=info.get("field"), channel=channel)
                    # 503 (the broker is away, or the outcome is unknown) and a 429 that says when to
                    # come back are retried with the same key: the server stores the batch once.
                    wait = _retry_after(r.headers.get("Retry-After")) if r.status == 429 else None
                    if (r.status not in (502, 503, 504) and wait is None) or loop.time() >= deadline:
                        raise err
                    why = f"{r.status} {err.message}"
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                why = describe(exc, self.url, self.request_timeout_s)
                if loop.time() >= deadline:
                    tried = f" (retried for {self.retry_for_s:g} s)" if attempt else ""
                    raise LivedataError(f"push to {channel} failed: {why}{tried}", channel=channel) from None
            delay = min(max(wait or 0.0, _backoff(attempt, 0.05, 2.0)), max(0.0, deadline - loop.time()))
            wait = 0.0
            if attempt == 0:  # say what is retried, once per batch; every further attempt is logged at info
                log.warning("push to %s: %s; retrying for up to %g s (same Idempotency-Key: stored once)",
                            channel, why, self.retry_for_s)
            else:
                log.info("push to %s: %s; retrying in %.2f s (attempt %d)", channel, why, delay, attempt + 1)
            attempt += 1
            await asyncio.sleep(delay)


async def connect(url: str, token: str | None = None, **kwargs: Any) -> Client:
    """An opened :class:`Client`; ``async with await connect(url) as c`` or close it yourself."""
    client = Client(url, token, **kwargs)
    await client.open()
    return client
