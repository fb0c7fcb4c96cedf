"""Getting data in: HTTP push (JSON and Influx line protocol), shared with WebSocket publish.

Every push is all-or-nothing: the whole body is parsed and checked (limits, schema, channel
count) before anything is stored. A push with an ``Idempotency-Key`` header that was already
accepted is answered ``204`` again without storing it twice, so clients can retry safely.
``?reorder_ms=N`` holds the points up to N ms and publishes them in time order
(:class:`~livedata.core.window.ReorderBuffer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from livedata.brokers.base import BrokerError, ChannelLimitError
from livedata.core import lineprotocol
from livedata.core.frames import Batch, FieldDef, Schema, SchemaError, Value
from livedata.core.protocol import ProtocolError, check_channel, points_to_batch, tables_to_batches
from livedata.core.sources import GENERATORS
from livedata.core.window import MAX_REORDER_MS, ReorderBuffer, monotonic_ms
from livedata.server import auth
from livedata.server.http import json_error
from livedata.server.state import SERVER, Server
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.ingest")

IDEMPOTENCY_KEYS = 10_000
IDEMPOTENCY_TTL_S = 600.0
MAX_KEY_LEN = 200


class IngestError(Exception):
    """A push that stores nothing: ``status`` and a sentence, maybe the bad line/point number."""

    def __init__(self, status: int, message: str, reason: str, line: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.line = line
        self.field = field

    def response(self) -> web.Response:
        extra: dict[str, Any] = {}
        if self.line is not None:
            extra["line"] = self.line
        if self.field:
            extra["field"] = self.field
        return json_error(self.status, self.message, **extra)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- idempotency ---------------------------------------------------------------------------------


class IdempotencyCache:
    """Recently accepted ``Idempotency-Key`` values: a bounded LRU with a time to live.

    A key is *in flight* while its first request is being stored; a retry that arrives meanwhile
    waits for it and then gets the same answer (or goes ahead, if the first one failed).
    """

    def __init__(self, size: int = IDEMPOTENCY_KEYS, ttl_s: float = IDEMPOTENCY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.clock = clock
        self._done: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def accepted(self, key: str) -> bool:
        expires = self._done.get(key)
        if expires is None:
            return False
        if expires < self.clock():
            del self._done[key]
            return False
        self._done.move_to_end(key)
        return True

    def add(self, key: str) -> None:
        self._done[key] = self.clock() + self.ttl_s
        self._done.move_to_end(key)
        while len(self._done) > self.size:
            self._done.popitem(last=False)
        now = self.clock()
        while self._done:  # drop expired keys from the old end
            oldest, expires = next(iter(self._done.items()))
            if expires >= now:
                break
            del self._done[oldest]

    async def begin(self, key: str) -> bool:
        """True when ``key`` was already accepted; else mark it in flight (call :meth:`end`)."""
        while True:
            if self.accepted(key):
                return True
            pending = self._inflight.get(key)
            if pending is None:
                self._inflight[key] = asyncio.get_running_loop().create_future()
                return False
            await asyncio.shield(pending)

    def end(self, key: str, ok: bool) -> None:
        if ok:
            self.add(key)
        pending = self._inflight.pop(key, None)
        if pending is not None and not pending.done():
            pending.set_result(ok)


# --- per-server ingest state ------------------------------------------------------------------------


Row = tuple[dict[str, FieldDef], dict[str, Value]]
"""A held point: the fields of the batch it came in, and its values by field key."""


class IngestState:
    """What ingest keeps per server: idempotency keys and reorder buffers (with their flusher)."""

    def __init__(self, server: Server, clock: Callable[[], float] = monotonic_ms) -> None:
        self.server = server
        self.clock = clock
        self.keys = IdempotencyCache()
        self.held: dict[str, ReorderBuffer[Row]] = {}
        self.held_fields: dict[str, dict[str, FieldDef]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def hold(self, channel: str, batch: Batch, hold_ms: int) -> None:
        buf = self.held.get(channel)
        if buf is None:
            buf = self.held[channel] = ReorderBuffer(self.clock)
        fields = batch.fields
        keys = list(batch.columns)
        cols = [batch.columns[k] for k in keys]
        buf.add(((t, (fields, {k: c[i] for k, c in zip(keys, cols, strict=True)}))
                 for i, t in enumerate(batch.times)), hold_ms)
        known = self.held_fields.setdefault(channel, {})
        for k, f in fields.items():
            known.setdefault(k, f)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flusher(), name="ingest:reorder")

    async def _flusher(self) -> None:
        """Publish held points when due; ends by itself when nothing is held."""
        while True:
            self._wake.clear()
            now = self.clock()
            for channel, buf in list(self.held.items()):
                rows = buf.pop_due(now)
                if rows:
                    await self._publish_rows(channel, rows)
                if not len(buf) and self.held.get(channel) is buf:
                    del self.held[channel]
                    self.held_fields.pop(channel, None)
            dues = [d for d in (b.next_due() for b in self.held.values()) if d is not None]
            if not dues:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, (min(dues) - self.clock()) / 1000))

    async def _publish_rows(self, channel: str, rows: list[tuple[int, Row]]) -> None:
        fields: dict[str, FieldDef] = {}
        for _, (fmap, _values) in rows:
            if len(fields) < len(fmap) or any(k not in fields for k in fmap):
                for k, f in fmap.items():
                    fields.setdefault(k, f)
        columns: dict[str, list[Value]] = {k: [] for k in fields}
        for _, (_, values) in rows:
            for k, col in columns.items():
                col.append(values.get(k))
        batch = Batch([t for t, _ in rows], columns, fields)
        try:
            await self.server.broker.publish(channel, batch)
        except Exception as exc:  # the push was already answered: count it, log it, go on
            reason = "schema" if isinstance(exc, SchemaError) else "reorder"
            self.server.metrics.push_errors.labels(reason).inc()
            log.warning("reorder window of %s: %d points not stored: %s", channel, len(batch), exc)
            return
        self.server.metrics.points_published.labels(channel).inc(len(batch))

    def drop(self, channel: str) -> None:
        self.held.pop(channel, None)
        self.held_fields.pop(channel, None)

    async def close(self) -> None:
        """Publish what is still held, then stop the flusher."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for channel, buf in list(self.held.items()):
            rows = buf.pop_all()
            if rows:
                await self._publish_rows(channel, rows)
        self.held.clear()
        self.held_fields.clear()


_STATES: weakref.WeakKeyDictionary[Server, IngestState] = weakref.WeakKeyDictionary()


def state(server: Server) -> IngestState:
    st = _STATES.get(server)
    if st is None:
        st = _STATES[server] = IngestState(server)
    return st


async def close(server: Server) -> None:
    """Flush held points and stop ingest's background work (call before the broker closes)."""
    st = _STATES.pop(server, None)
    if st is not None:
        await st.close()


# --- checks and publishing ---------------------------------------------------------------------------


def _channel(name: Any) -> str:
    try:
        channel = check_channel(name)
    except ProtocolError as exc:
        raise IngestError(400, str(exc), "channel") from None
    if channel.partition("/")[0] in GENERATORS:
        raise IngestError(400, f"channel {channel!r} is generated by the server; push to another name",
                          "channel")
    return channel


async def check_batches(server: Server, batches: dict[str, Batch]) -> None:
    """Raise IngestError if any batch conflicts with its channel's schema or the channel limit."""
    broker = server.broker
    held = state(server).held_fields
    new_channels = 0
    for channel, batch in batches.items():
        fields = await broker.fields(channel)
        if fields is None and channel not in held:
            new_channels += 1
        known = {f.key: f for f in fields or []}
        for k, f in held.get(channel, {}).items():
            known.setdefault(k, f)
        try:
            Schema(known).check(batch.fields.values())
        except SchemaError as exc:
            raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
    if new_channels:
        have = len({i.name for i in await broker.channels()} | set(held))
        if have + new_channels > server.config.max_channels:
            raise IngestError(429, f"too many channels: the limit is {server.config.max_channels} "
                              "(delete some, or raise --max-channels)", "channels")


async def publish_batches(server: Server, batches: dict[str, Batch], reorder_ms: int = 0) -> int:
    """Check every batch first (schema, channel limit), then store them. Returns points accepted."""
    try:
        await check_batches(server, batches)
    except BrokerError as exc:
        raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
    if reorder_ms > 0:
        st = state(server)
        for channel, batch in batches.items():
            st.hold(channel, batch, reorder_ms)
        return sum(map(len, batches.values()))
    total = 0
    for channel, batch in batches.items():
        try:
            await server.broker.publish(channel, batch)
        except SchemaError as exc:  # a concurrent push added the field with another type
            raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
        except ChannelLimitError as exc:
            raise IngestError(429, str(exc), "channels") from None
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        server.metrics.points_published.labels(channel).inc(len(batch))
        total += len(batch)
    return total


def _count_points(body: Any) -> int:
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict) and body and all(isinstance(v, list) for v in body.values()):
        return max(len(v) for v in body.values())
    return 1


def json_batch(server: Server, points: Any) -> Batch:
    limit = server.config.max_points_per_request
    n = _count_points(points)
    if n > limit:
        raise IngestError(413, f"too many points in one request: {n} > {limit}; split the push", "points")
    try:
        return points_to_batch(points, now_ms(), limit)
    except ProtocolError as exc:
        raise IngestError(400, str(exc), "points", line=exc.line) from None
    except SchemaError as exc:
        raise IngestError(400, str(exc), "points", field=exc.field or None) from None


async def publish_json(server: Server, channel: Any, points: Any, reorder_ms: int = 0) -> int:
    """Publish pushed JSON (a point, a list of points, or columns) to ``channel``."""
    name = _channel(channel)
    return await publish_batches(server, {name: json_batch(server, points)}, reorder_ms)


# Lines parsed between two yields to the event loop: about 10 ms of work, so a 10 MiB body
# (some 200,000 lines) never holds the loop for long while other clients are being served.
PARSE_SLICE_LINES = 4096


async def line_batches(server: Server, channel: str, text: str, precision: str) -> dict[str, Batch]:
    if precision not in ("ns", "us", "ms", "s"):
        raise IngestError(400, f"precision must be ns, us, ms or s; got {precision[:10]!r}", "precision")
    parser = lineprotocol.TableParser(precision)
    limit = server.config.max_points_per_request
    lines = text.split("\n")
    for start in range(0, len(lines), PARSE_SLICE_LINES):
        if start:
            await asyncio.sleep(0)
        try:
            parser.feed(lines[start:start + PARSE_SLICE_LINES], start + 1)
        except lineprotocol.LineProtocolError as exc:
            raise IngestError(400, str(exc), "lineprotocol", line=exc.line) from None
        if parser.lines > limit:
            raise IngestError(413, f"too many lines in one request: {parser.lines} > {limit}; split the push",
                              "points")
    if not parser.lines:
        raise IngestError(400, "no lines in the body", "lineprotocol")
    tables = parser.tables
    try:
        return tables_to_batches(tables, channel, now_ms())
    except ProtocolError as exc:
        raise IngestError(400, str(exc), "lineprotocol", line=exc.line) from None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, or 413 as soon as it passes ``limit`` (declared or actually read)."""
    too_large = IngestError(413, f"body too large: the limit is {limit} bytes; split the push "
                            "(or raise --max-body-bytes)", "size")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    buf = bytearray()
    async for chunk in request.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise too_large
    return bytes(buf)


def _reorder_ms(request: web.Request) -> int:
    raw = request.query.get("reorder_ms")
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_REORDER_MS:
        raise IngestError(400, f"reorder_ms must be an integer 0..{MAX_REORDER_MS}, got {raw[:20]!r}", "reorder")
    return value


async def _store(request: web.Request, server: Server, channel: str, body: bytes) -> None:
    ctype = request.content_type
    reorder = _reorder_ms(request)
    if ctype in ("application/json", "application/x-ndjson") or (
            ctype == "application/octet-stream" and body.lstrip()[:1] in (b"{", b"[")):
        if ctype == "application/x-ndjson":
            points: Any = []
            for i, line in enumerate(body.splitlines()):
                if not line.strip():
                    continue
                try:
                    points.append(msgspec.json.decode(line))
                except msgspec.DecodeError as exc:
                    raise IngestError(400, f"line {i + 1}: malformed JSON: {exc}", "json", line=i + 1) from None
        else:
            try:
                points = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise IngestError(400, f"malformed JSON: {exc}", "json") from None
        await publish_json(server, channel, points, reorder)
    elif ctype in ("text/plain", "application/octet-stream", "application/x-www-form-urlencoded", ""):
        # curl --data-binary sends x-www-form-urlencoded; Influx and Grafana Live take it as line protocol.
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise IngestError(400, "line protocol must be UTF-8", "lineprotocol") from None
        batches = await line_batches(server, channel, text, request.query.get("precision", "ns"))
        await publish_batches(server, batches, reorder)
    else:
        raise IngestError(415, f"unsupported Content-Type {ctype!r}: use application/json "
                          "or text/plain (Influx line protocol)", "content-type")


async def push(request: web.Request) -> web.StreamResponse:
    """``POST /api/push/{channel}``: JSON points or Influx line protocol. 204 once stored."""
    server = request.app[SERVER]
    key: str | None = None
    keys = state(server).keys
    ok = False
    try:
        denied = auth.check(server.config, auth.bearer(request.headers.get("Authorization")), "write")
        if denied is not None:
            raise IngestError(denied[0], denied[1], "auth")
        channel = _channel(request.match_info["channel"])
        if request.query.getall("precision", ["ns"]) not in (["ns"], ["us"], ["ms"], ["s"]):
            raise IngestError(400, "precision must be one of ns, us, ms or s (once)", "precision")
        raw_key = request.headers.get("Idempotency-Key")
        if raw_key is not None:
            if not 0 < len(raw_key) <= MAX_KEY_LEN:
                raise IngestError(400, f"Idempotency-Key must be 1 to {MAX_KEY_LEN} characters", "idempotency")
            key = f"{channel}\n{raw_key}"
            if await keys.begin(key):
                key = None  # not ours to end
                return web.Response(status=204, headers={"Idempotent-Replayed": "true"})
        body = await _read_body(request, server.config.max_body_bytes)
        await _store(request, server, channel, body)
        ok = True
    except IngestError as exc:
        server.metrics.push_errors.labels(exc.reason).inc()
        return exc.response()
    finally:
        if key is not None:
            keys.end(key, ok)
    return web.Response(status=204)


async def channels(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    denied = auth.check(server.config, auth.bearer(request.headers.get("Authorization")), "read")
    if denied is not None:
        return json_error(*denied)
    infos = await server.broker.channels()
    generated = server.hub.generators.names
    out: list[dict[str, Any]] = [
        {"name": i.name, "schema": [f.to_json() for f in i.fields], "last_time": i.last_time,
         "points_per_s": round(i.points_per_s, 3), "points": i.points,
         "generated": i.name in generated or i.name.partition("/")[0] in GENERATORS}
        for i in sorted(infos, key=lambda i: i.name)
    ]
    names = {i["name"] for i in out}
    for base, spec in sorted(GENERATORS.items()):
        if base not in names:  # always offered, created on first subscription
            out.append({"name": base, "schema": [{"name": f"series{i}", "type": "number"} for i in range(1)],
                        "last_time": None, "points_per_s": 0.0, "points": 0, "generated": True,
                        "params": spec.defaults()})
    return web.json_response({"channels": out}, dumps=lambda o: msgspec.json.encode(o).decode())


async def delete_channel(request: web.Request) -> web.Response:
    """``DELETE /api/channels/{channel}``: subscribers get a notice and ``complete``; 204."""
    server = request.app[SERVER]
    denied = auth.check(server.config, auth.bearer(request.headers.get("Authorization")), "write")
    if denied is not None:
        return json_error(*denied)
    try:
        name = check_channel(request.match_info["channel"])
    except ProtocolError as exc:
        return json_error(400, str(exc))
    hub = server.hub
    state(server).drop(name)
    subs = [s for s in hub.subs if s.req.channel == name]
    for sub in subs:
        hub.complete(sub, notice=f"channel {name!r} was deleted")
    if not await server.broker.delete(name) and not subs:
        return json_error(404, f"no channel named {name!r}")
    return web.Response(status=204)
