"""Getting data in: the :class:`Ingest` service shared by HTTP push and WebSocket publish.

Every push is all-or-nothing: the whole body is parsed and checked (limits, schema, channel
count) before anything is stored. A push with an ``Idempotency-Key`` header that was already
accepted is answered ``204`` again without storing it twice (:mod:`.idempotency`), so clients
can retry safely. ``?reorder_ms=N`` holds the points up to N ms and publishes them in time order
(:mod:`.reorder`). Parsing and request checks live in :mod:`.parse`; the HTTP handler in
``server/push.py``.
"""

from __future__ import annotations

from typing import Any

from livedata.brokers.base import Broker, BrokerError, ChannelLimitError
from livedata.config import Config
from livedata.core.frames import Batch, FieldDef, Schema, SchemaError
from livedata.server.ingest.idempotency import IdempotencyCache
from livedata.server.ingest.parse import IngestError, channel_name, json_batch
from livedata.server.ingest.reorder import Reorder
from livedata.server.metrics import Metrics
from livedata.sources import PublishError

__all__ = ["Ingest", "IngestError", "SourceSink"]


class Ingest:
    """Checks and stores pushes for one server; owns its idempotency keys and reorder windows."""

    def __init__(self, broker: Broker, config: Config, metrics: Metrics) -> None:
        self.broker = broker
        self.config = config
        self.metrics = metrics
        self.keys = IdempotencyCache()
        self.reorder = Reorder(broker, metrics)

    async def close(self) -> None:
        """Publish points still held by a reorder window (call before the broker closes)."""
        await self.reorder.close()

    def drop(self, channel: str) -> None:
        """Forget points of ``channel`` still held (the channel is being deleted)."""
        self.reorder.drop(channel)

    async def check_batches(self, batches: dict[str, Batch]) -> None:
        """Raise IngestError if any batch conflicts with its channel's schema or the channel limit."""
        broker = self.broker
        held = self.reorder.held_fields
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
            limit = self.config.max_channels
            have = len({i.name for i in await broker.channels()} | set(held))
            if have + new_channels > limit:
                raise IngestError(429, f"too many channels: the limit is {limit} "
                                  "(delete some, or raise --max-channels)", "channels")

    async def publish_batches(self, batches: dict[str, Batch], reorder_ms: int = 0) -> int:
        """Check every batch first (schema, channel limit), then store them. Returns points accepted."""
        try:
            await self.check_batches(batches)
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        if reorder_ms > 0:
            for channel, batch in batches.items():
                self.reorder.hold(channel, batch, reorder_ms)
            return sum(map(len, batches.values()))
        total = 0
        for channel, batch in batches.items():
            await self.store(channel, batch)
            total += len(batch)
        return total

    async def store(self, channel: str, batch: Batch) -> None:
        """Store one checked batch: the broker enforces the schema and the channel limit
        atomically; counted in ``livedata_points_published``. Pushes and sources both end here.

        Raises:
            IngestError: ``schema`` (400), ``channels`` (429) or ``broker`` (503); nothing stored.
        """
        try:
            await self.broker.publish(channel, batch)
        except SchemaError as exc:  # a concurrent push added the field with another type
            raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
        except ChannelLimitError as exc:
            raise IngestError(429, str(exc), "channels") from None
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        self.metrics.points_published.labels(channel).inc(len(batch))

    async def publish_json(self, channel: Any, points: Any, reorder_ms: int = 0) -> int:
        """Publish pushed JSON (a point, a list of points, or columns) to ``channel``."""
        name = channel_name(channel)
        return await self.publish_batches({name: json_batch(points, self.config.max_points_per_request)},
                                          reorder_ms)


class SourceSink:
    """What sources publish through (:class:`livedata.sources.Sink`): the push path's name check
    (no generated or status channel) and :meth:`Ingest.store`, its errors as ``PublishError``.

    The batch-wide schema check of a push is not repeated: a source checks every point against
    the channel's schema as it gathers them, and the broker checks the batch atomically.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def publish(self, channel: str, batch: Batch) -> None:
        try:
            await self.ingest.store(channel_name(channel), batch)
        except IngestError as exc:
            raise PublishError(exc.reason, exc.message) from None

    async def fields(self, channel: str) -> list[FieldDef] | None:
        return await self.ingest.broker.fields(channel)
