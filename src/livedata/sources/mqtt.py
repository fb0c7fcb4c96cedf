"""An MQTT source: subscribe to topic filters on a broker, publish messages as points.

The client is gmqtt (pure asyncio; ~4 us of CPU per message here against 24-35 us for paho-mqtt
under aiomqtt, see docs/sources.md). One gmqtt client per connection attempt: this module owns
reconnecting (exponential backoff with jitter), so gmqtt's own reconnect is turned into a signal.
Sessions are persistent by default (``clean_session = false``, a stable client id): while
livedata is away the broker queues QoS 1 messages for it, and after a reconnect it resubscribes.

A QoS 1 message is acknowledged when it has been received (gmqtt's optimistic acknowledgement):
livedata then holds it in memory until it is stored, ``flush_ms`` later. A broker restart or a
lost connection loses nothing received; a clean stop of livedata stores everything received
first; only a killed livedata process can lose the last ``flush_ms`` of messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from livedata.core.frames import SchemaError
from livedata.core.payloads import PayloadError, decode_payload
from livedata.core.protocol import ProtocolError, check_channel
from livedata.core.sourcespec import MqttSpec, TlsSpec
from livedata.core.topics import TemplateError, topic_matches
from livedata.sources.base import Sink, Source, backoff, log
from livedata.tasks import cancel_and_wait

CONNECT_TIMEOUT_S = 10.0
MAX_PENDING = 500_000
"""Messages received and not decoded yet; beyond (the loop is starved), new ones are dropped."""
MAX_TOPICS = 100_000
"""Topics remembered (their channel, their last retained payload)."""
STABLE_S = 10.0
"""A connection that lasted this long resets the backoff."""


class _Client(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client with its reconnect turned into a signal: the source reconnects itself."""

    lost: asyncio.Event

    async def reconnect(self, delay: bool = False) -> None:
        self.lost.set()


def tls_context(tls: TlsSpec) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.certfile:
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttSource(Source):
    """One ``[[sources.mqtt]]``: a broker connection, its subscriptions and their channels."""

    spec: MqttSpec

    def __init__(self, spec: MqttSpec, sink: Sink, on_state: Callable[[Source], None] | None = None) -> None:
        super().__init__(spec, sink, on_state)
        self.pending: list[tuple[str, bytes, bool, int]] = []
        self._channel_of: dict[str, str | None] = {}
        self._retained: dict[str, int] = {}
        self._arrived = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.client: _Client | None = None
        self.connections = 0
        self._version = MQTTv50

    def start(self) -> None:
        super().start()
        self._pump = asyncio.get_running_loop().create_task(self._pump_loop(), name=f"source:{self.name}:pump")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)  # disconnects (see _connect_loop)
        await self._decode(self._take())  # what was received before the disconnect
        pump, self._pump = self._pump, None
        await cancel_and_wait(pump)
        await self._decode(self._take())
        await super().stop()

    def claims(self, channel: str) -> bool:
        spec = self.spec
        if channel in self.rows:
            return True
        if spec.channel.literal:
            return channel == spec.channel.text
        if spec.channel.pieces == ((None, None, False),):  # {topic}: the filters say it
            return any(topic_matches(f, channel) for f in spec.topics)
        return False

    # --- receiving -------------------------------------------------------------------------------

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        """gmqtt's callback, on the loop for every message: keep it for the pump, nothing more."""
        pending = self.pending
        if len(payload) > self.spec.max_payload_bytes:
            self.status.messages += 1
            self.error("size", f"topic {topic[:120]!r}: a {len(payload)}-byte payload is over max_payload_bytes "
                       f"({self.spec.max_payload_bytes}); dropped")
            return 0
        if len(pending) >= MAX_PENDING:
            self.status.messages += 1
            self.error("overflow", f"{len(pending)} messages waiting to be decoded; message on {topic!r} dropped")
            return 0
        retain = bool(properties.get("retain")) if properties else False
        pending.append((topic, payload, retain, time.time_ns() // 1_000_000))
        if len(pending) == 1:
            self._arrived.set()
        return 0

    def _take(self) -> list[tuple[str, bytes, bool, int]]:
        batch, self.pending = self.pending, []
        return batch

    async def _pump_loop(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            await self._decode(self._take())

    async def _decode(self, messages: list[tuple[str, bytes, bool, int]]) -> None:
        """Decode received messages into the channels' rows (the hot path: no await per message)."""
        if not messages:
            return
        st = self.status
        st.messages += len(messages)
        st.last_message_ms = messages[-1][3]
        fmt = self.spec.payload
        retained = self._retained
        channel_of = self._channel_of
        rows_of = self.rows
        for topic, payload, retain, arrival in messages:
            digest = hash(payload)
            if retain and retained.get(topic) == digest:
                continue  # the broker sent its retained message again (a reconnect): already stored
            if len(retained) >= MAX_TOPICS and topic not in retained:
                retained.clear()
            retained[topic] = digest
            channel = channel_of[topic] if topic in channel_of else self._route(topic)
            if channel is None:
                continue
            try:
                decoded = decode_payload(payload, fmt, arrival, channel)
            except PayloadError as exc:
                self.error(exc.reason, f"topic {topic[:120]!r}: {exc}")
                continue
            if decoded.batches:
                await self.add(channel, decoded)
                continue
            rows = rows_of.get(channel)
            if rows is None:
                rows = await self._rows(channel)
                if rows is None:
                    continue
            for t, values in decoded.points:
                try:
                    rows.add(t, values)
                except SchemaError as exc:
                    self.error("schema", f"channel {channel!r}: {exc}")
        self._wake.set()

    def _route(self, topic: str) -> str | None:
        """The topic's channel (None: the template cannot make a valid one; counted)."""
        try:
            channel: str | None = check_channel(self.spec.channel.render(topic))
        except (TemplateError, ProtocolError) as exc:
            self.error("channel", f"topic {topic[:120]!r}: {exc}")
            channel = None
        if len(self._channel_of) >= MAX_TOPICS:
            self._channel_of.clear()
        self._channel_of[topic] = channel
        return channel

    # --- the connection ----------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        spec = self.spec
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            self.set_state("connecting")
            client = self._new_client()
            self.client = client
            started = loop.time()
            try:
                await self._connect(client)
            except asyncio.CancelledError:
                await _close(client)
                raise
            except Exception as exc:
                await _close(client)
                self.set_state("down", f"cannot connect to {spec.display_url}: {_why(exc)}")
                self.log("connect", logging.WARNING, "source %s: %s", self.name, self.status.last_error)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            self.connections += 1
            self._subscribe(client)
            self.set_state("up")
            log.info("source %s: connected to %s, subscribed to %s", self.name, spec.display_url,
                     ", ".join(spec.topics))
            try:
                await client.lost.wait()
            except asyncio.CancelledError:
                await _close(client)
                raise
            await _close(client)
            self.set_state("down", f"lost the connection to {spec.display_url}")
            log.warning("source %s: lost the connection to %s; reconnecting", self.name, spec.display_url)
            if loop.time() - started >= STABLE_S:
                attempt = 0
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    def _new_client(self) -> _Client:
        spec = self.spec
        props: dict[str, Any] = {}
        if not spec.clean_session and spec.session_expiry_s:
            props["session_expiry_interval"] = spec.session_expiry_s
        client = _Client(spec.client_id, clean_session=spec.clean_session, logger=_GMQTT_LOG, **props)
        client.lost = asyncio.Event()
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        if spec.username is not None:
            client.set_auth_credentials(spec.username, spec.password)
        return client

    async def _connect(self, client: _Client) -> None:
        """CONNECT and wait for the CONNACK (MQTT 5, or 3.1.1 once a broker closed on MQTT 5)."""
        spec = self.spec
        ctx: ssl.SSLContext | bool = tls_context(spec.tls) if spec.tls else False
        version = self._version
        connect = asyncio.ensure_future(client.connect(spec.host, spec.port, ssl=ctx, keepalive=spec.keepalive_s,
                                                       version=version))
        lost = asyncio.ensure_future(client.lost.wait())
        try:
            done, _ = await asyncio.wait({connect, lost}, timeout=CONNECT_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (connect, lost):
                if not fut.done():
                    fut.cancel()
            for fut in (connect, lost):
                with contextlib.suppress(BaseException):
                    await fut
        if connect in done:
            connect.result()  # raises a refused CONNECT (bad credentials, not authorised, ...)
            if not client.lost.is_set():
                return
        if lost in done and version == MQTTv50:
            self._version = MQTTv311  # gmqtt downgrades this way too; a broker that speaks 5 never gets here
            raise ConnectionError("the broker closed the connection on an MQTT 5 CONNECT; trying MQTT 3.1.1")
        self._version = MQTTv50
        raise ConnectionError("no answer to CONNECT" if not done else "the broker closed the connection")

    def _subscribe(self, client: _Client) -> None:
        spec = self.spec
        client.subscribe([gmqtt.Subscription(t, qos=spec.qos) for t in spec.topics])

    def _on_subscribe(self, client: Any, mid: int, granted: Any, properties: Any) -> None:
        codes = list(granted or [])
        for topic, code in zip(self.spec.topics, codes, strict=False):
            if isinstance(code, int) and code >= 0x80:
                self.error("subscribe", f"the broker refused the subscription to {topic!r} (code {code:#x})")


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


async def _close(client: _Client) -> None:
    """Disconnect (a DISCONNECT packet if the connection is still up) and close the socket."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2.0)


class _QuietGmqtt(logging.LoggerAdapter):  # type: ignore[type-arg]
    """gmqtt logs every lost connection with a traceback at WARNING: the source says it once."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR:
            kwargs.pop("exc_info", None)
            self.logger.log(logging.WARNING, msg, *args, **kwargs)
        elif self.logger.isEnabledFor(logging.DEBUG):
            self.logger.log(logging.DEBUG, msg, *args, **kwargs)


_GMQTT_LOG = _QuietGmqtt(logging.getLogger("livedata.sources.gmqtt"), {})

__all__ = ["MqttSource", "tls_context"]
