"""Getting data in: the :class:`Ingest` service shared by HTTP push and WebSocket publish.

Every push is all-or-nothing: the whole body is parsed and checked (limits, schema, channel
count) before anything is stored. A push with an ``Idempotency-Key`` is stored at most once: the
broker checks and records the key in the same atomic step as the write (:mod:`.idempotency`), so
clients can retry after any failure. ``?reorder_ms=N`` holds the points in the broker up to N ms
and publishes them in time order (:mod:`.reorder`). Parsing and request checks live in
:mod:`.parse`; the HTTP handler in ``server/push.py``.

A ``503`` says whether anything may have been stored: "nothing was stored" only when the broker
refused before a write was sent; after that (a timeout, a connection lost mid-call, or an earlier
channel of the same request already stored) "the outcome is unknown: retry with the same
Idempotency-Key".
"""

from __future__ import annotations

from typing import Any

from livedata.brokers.base import Broker, BrokerError, ChannelLimitError, HeldLimitError, Key, KeyConflict
from livedata.config import Config
from livedata.core.clock import wall_ms
from livedata.core.frames import Batch, FieldDef, Schema, SchemaError
from livedata.server.ingest.parse import IngestError, channel_name, json_batch
from livedata.server.ingest.reorder import Reorder
from livedata.server.metrics import Metrics
from livedata.sources import PublishError
from livedata.sources.base import source_key

__all__ = ["Ingest", "IngestError", "SourceSink"]

UNKNOWN = "the outcome is unknown: retry with the same Idempotency-Key"


class Ingest:
    """Checks and stores pushes for one server; owns the task that publishes held points."""

    def __init__(self, broker: Broker, config: Config, metrics: Metrics) -> None:
        self.broker = broker
        self.config = config
        self.metrics = metrics
        self.reorder = Reorder(broker)

    def start(self) -> None:
        self.reorder.start()

    async def close(self) -> None:
        """Publish held points if the broker can take them (call before the broker closes)."""
        await self.reorder.close()

    async def check_batches(self, batches: dict[str, Batch]) -> None:
        """Raise IngestError if any batch conflicts with its channel's schema or the channel limit.

        The broker checks again as it writes (held fields too), atomically per channel; this
        first look keeps a request that spans channels from storing some of them and not others.
        """
        broker = self.broker
        new_channels = 0
        for channel, batch in batches.items():
            fields = await broker.fields(channel)
            if fields is None:
                new_channels += 1
            try:
                Schema({f.key: f for f in fields or []}).check(batch.fields.values())
            except SchemaError as exc:
                raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
        if new_channels:
            limit = self.config.max_channels
            have = len({i.name for i in await broker.channels()})
            if have + new_channels > limit:
                raise IngestError(429, f"too many channels: the limit is {limit} "
                                  "(delete some, or raise --max-channels)", "channels")

    async def publish_batches(self, batches: dict[str, Batch], reorder_ms: int = 0, key: Key | None = None) -> bool:
        """Check every batch first (schema, channel limit), then store them; True when ``key`` had
        stored all of them before (nothing was stored now)."""
        try:
            await self.check_batches(batches)
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        replayed = True
        for stored, (channel, batch) in enumerate(batches.items()):
            mine = None if key is None else Key(key.name, key.digest)
            try:
                if reorder_ms > 0:
                    await self.broker.hold(channel, batch, reorder_ms, mine)
                else:
                    await self.broker.publish(channel, batch, mine)
            except SchemaError as exc:  # a concurrent push added the field with another type
                raise self._failed(400, f"channel {channel!r}: {exc}", "schema", stored, exc.field) from None
            except ChannelLimitError as exc:
                raise self._failed(429, str(exc), "channels", stored) from None
            except KeyConflict as exc:
                raise self._failed(422, str(exc), "idempotency", stored) from None
            except HeldLimitError as exc:
                status = 413 if exc.size > exc.limit else 429
                raise self._failed(status, str(exc), "reorder", stored, retry_after=1 if status == 429 else None) \
                    from None
            except BrokerError as exc:
                if exc.unknown or stored:
                    text = f"the broker did not answer ({exc}): {UNKNOWN}"
                    if key is None:
                        text += " (this push had none: a retry may store its points twice)"
                    raise IngestError(503, text, "broker") from None
                raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
            replayed = replayed and mine is not None and mine.replayed
            if mine is None or not mine.replayed:
                self.metrics.points_published.labels(channel).inc(len(batch))
                if reorder_ms > 0:
                    self.reorder.held(wall_ms() + reorder_ms)
        return replayed and key is not None

    def _failed(self, status: int, message: str, reason: str, stored: int, field: str | None = None,
                retry_after: int | None = None) -> IngestError:
        """A refusal of one channel of the request; if earlier channels were stored, say so."""
        if stored:
            message += f" (the request's first {stored} channel(s) were stored: retry with the same Idempotency-Key" \
                       " once this is fixed)"
        return IngestError(status, message, reason, field=field, retry_after=retry_after)

    async def publish_json(self, channel: Any, points: Any, reorder_ms: int = 0, key: Key | None = None) -> bool:
        """Publish pushed JSON (a point, a list of points, or columns) to ``channel``."""
        name = channel_name(channel)
        return await self.publish_batches({name: json_batch(points, self.config.max_points_per_request)},
                                          reorder_ms, key)

    async def store(self, channel: str, batch: Batch, key: Key | None = None) -> None:
        """Store one checked batch of a source: the broker enforces the schema, the channel limit
        and ``key`` atomically; counted in ``livedata_points_published`` (once per key).

        Raises:
            IngestError: ``schema`` (400), ``channels`` (429) or ``broker`` (503, saying whether
                the outcome is unknown).
        """
        try:
            await self.broker.publish(channel, batch, key)
        except SchemaError as exc:  # a concurrent push added the field with another type
            raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
        except ChannelLimitError as exc:
            raise IngestError(429, str(exc), "channels") from None
        except BrokerError as exc:
            if exc.unknown:
                raise IngestError(503, f"the broker did not answer ({exc}): the outcome is unknown "
                                  "(a source retries the batch with the same key)", "broker") from None
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        if key is None or not key.replayed:
            self.metrics.points_published.labels(channel).inc(len(batch))


class SourceSink:
    """What sources publish through (:class:`livedata.sources.Sink`): the push path's name check
    (no generated or status channel) and :meth:`Ingest.store`, its errors as ``PublishError``.

    The batch-wide schema check of a push is not repeated: a source checks every point against
    the channel's schema as it gathers them, and the broker checks the batch atomically.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def publish(self, channel: str, batch: Batch, key: str | None = None) -> None:
        try:
            await self.ingest.store(channel_name(channel), batch, source_key(key))
        except IngestError as exc:
            raise PublishError(exc.reason, exc.message) from None

    async def fields(self, channel: str) -> list[FieldDef] | None:
        return await self.ingest.broker.fields(channel)
