"""An upstream stream source: read NDJSON, SSE or WebSocket messages from a URL into one channel.

The format is told from the first message (:class:`~livedata.core.upstream.StreamDecoder`).
A livedata upstream is resumed with ``since`` after a reconnect, so nothing is missed or repeated
while the upstream still retains it; after a restart of this server, it resumes from the local
channel's last time. Reconnects use exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiohttp

from livedata import __version__
from livedata.core.payloads import PayloadError
from livedata.core.sourcespec import StreamSpec
from livedata.core.upstream import (
    LineSplitter,
    SseParser,
    StreamDecoder,
    UpstreamError,
    resume_subscribe,
    resume_url,
)
from livedata.sources.base import Sink, Source, backoff, log, wall_ms
from livedata.sources.mqtt import tls_context

IDLE_TIMEOUT_S = 60.0
"""Nothing received for this long: the connection is taken for dead and reopened."""
STABLE_S = 10.0


class StreamSource(Source):
    """One ``[[sources.stream]]``."""

    spec: StreamSpec

    def __init__(self, spec: StreamSpec, sink: Sink, on_state: Callable[[Source], None] | None = None,
                 last_time: Callable[[str], Awaitable[int | None]] | None = None) -> None:
        super().__init__(spec, sink, on_state)
        self.decoder = StreamDecoder(spec.channel, spec.format, spec.payload)
        self.last_time = last_time
        self.connections = 0
        self._resume_ms: int | None = None

    def claims(self, channel: str) -> bool:
        return channel == self.spec.channel

    async def _connect_loop(self) -> None:
        spec = self.spec
        attempt = 0
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | bool = tls_context(spec.tls) if spec.tls else True
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        headers = {"User-Agent": f"livedata/{__version__}", **dict(spec.headers)}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            await self._first_resume()
            while True:
                self.set_state("connecting")
                started = loop.time()
                try:
                    if spec.url.startswith(("ws://", "wss://")):
                        await self._websocket(session, ctx)
                    else:
                        await self._http(session, ctx)
                except asyncio.CancelledError:
                    raise
                except UpstreamError as exc:
                    self.error("upstream", str(exc))
                    self.set_state("down", str(exc))
                except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                    self.set_state("down", f"{spec.display_url}: {_why(exc)}")
                    self.log("connect", logging.WARNING, "source %s: %s", self.name, self.status.last_error)
                else:
                    if self.decoder.follower.complete:
                        await self.add(spec.channel, self.decoder.flush())
                        self.set_state("complete")
                        log.info("source %s: the upstream completed the stream", self.name)
                        return
                    self.set_state("down", f"{spec.display_url}: the upstream ended the stream")
                await self.add(spec.channel, self.decoder.flush())
                self.decoder.reconnected()
                if loop.time() - started >= STABLE_S:
                    attempt = 0
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def _first_resume(self) -> None:
        """After a restart: a livedata upstream resumes from the local channel's last time."""
        if self.last_time is None or self.spec.format not in ("auto", "livedata"):
            return
        try:
            last = await self.last_time(self.spec.channel)
        except Exception:
            return
        if isinstance(last, int):
            self._resume_ms = last

    def _url(self) -> str:
        pos = self.decoder.position
        if pos is None and self._resume_ms is None:
            return self.spec.url
        if "/api/stream" not in self.spec.url and self.decoder.kind != "livedata":
            return self.spec.url
        return resume_url(self.spec.url, pos, None if pos else self._resume_ms)

    def _up(self) -> None:
        self.connections += 1
        self.set_state("up")
        log.info("source %s: reading %s", self.name, self.spec.display_url)

    async def _http(self, session: aiohttp.ClientSession, ctx: ssl.SSLContext | bool) -> None:
        accept = "application/x-ndjson, text/event-stream;q=0.9, application/json;q=0.8, */*;q=0.1"
        async with session.get(self._url(), ssl=ctx, headers={"Accept": accept}) as resp:
            if resp.status != 200:
                body = (await resp.content.read(300)).decode(errors="replace").strip()
                raise UpstreamError(f"{self.spec.display_url} answered {resp.status}: {body[:200]}")
            self._up()
            sse = resp.content_type == "text/event-stream"
            parser = SseParser()
            lines = LineSplitter(self.spec.max_payload_bytes)
            while True:
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    async with asyncio.timeout(self._idle_s()):  # that races a read (stop() then hangs)
                        data = await resp.content.readany()
                except TimeoutError:
                    raise ConnectionError(f"nothing received for {self._idle_s():.0f} s") from None
                if not data:
                    return
                now = wall_ms()
                for raw in lines.feed(data):
                    if sse:
                        ev = parser.feed_line(raw.decode(errors="replace"))
                        if ev is not None and ev.event in ("message", "data", ""):
                            await self._message(ev.data.encode(), now)
                    else:
                        await self._message(raw, now)
                if lines.too_long:
                    self.error("size", f"{lines.too_long} lines over {lines.max_line} bytes skipped", lines.too_long)
                    lines.too_long = 0
                await self.add(self.spec.channel, self.decoder.end_of_read())

    async def _websocket(self, session: aiohttp.ClientSession, ctx: ssl.SSLContext | bool) -> None:
        spec = self.spec
        async with session.ws_connect(spec.url, ssl=ctx, heartbeat=20.0, max_msg_size=spec.max_payload_bytes) as ws:
            if spec.subscribe:
                pos = self.decoder.position
                await ws.send_str(resume_subscribe(spec.subscribe, pos, None if pos else self._resume_ms))
            self._up()
            while True:
                try:  # asyncio.timeout, not wait_for (see _http)
                    async with asyncio.timeout(self._idle_s()):
                        msg = await ws.receive()
                except TimeoutError:
                    raise ConnectionError(f"nothing received for {self._idle_s():.0f} s") from None
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    now = wall_ms()
                    data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                    for raw in data.split(b"\n"):
                        await self._message(raw, now)
                    await self.add(spec.channel, self.decoder.end_of_read())
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise ConnectionError(str(ws.exception() or "WebSocket error"))
                else:
                    return  # closed

    def _idle_s(self) -> float:
        return IDLE_TIMEOUT_S

    async def _message(self, raw: bytes, now: int) -> None:
        st = self.status
        if not raw.strip():
            return
        st.messages += 1
        st.last_message_ms = now
        try:
            decoded = self.decoder.feed(raw, now)
        except PayloadError as exc:
            self.error(exc.reason, f"{self.spec.display_url}: {exc}")
            return
        follower = self.decoder.follower
        while follower.notices:
            log.info("source %s: upstream notice: %s", self.name, follower.notices.pop(0))
        if len(decoded):
            await self.add(self.spec.channel, decoded)


def _why(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


__all__ = ["StreamSource"]
