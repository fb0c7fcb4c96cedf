"""Getting data in: the :class:`Ingest` service shared by HTTP push and WebSocket publish.

Every push is all-or-nothing: the whole body is parsed and checked (limits, schema, channel
count) before anything is stored. A push with an ``Idempotency-Key`` header that was already
accepted is answered ``204`` again without storing it twice (:mod:`.idempotency`), so clients
can retry safely. ``?reorder_ms=N`` holds the points up to N ms and publishes them in time order
(:mod:`.reorder`). Parsing and request checks live in :mod:`.parse`; the HTTP handler in
``server/push.py``.

Memory: a push holds a share of the server's memory budget (kind ``ingest``, :data:`parse.INGEST_FACTOR`
times its body) from the first byte read until it is stored, and is answered ``429`` when there is
no room; a channel or field the budget cannot hold is ``507``; held points count as ``held``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livedata.brokers.base import Broker, BrokerError, ChannelLimitError, FieldLimitError, field_limit_error
from livedata.config import Config
from livedata.core.budget import Budget, BudgetError, Reservation
from livedata.core.frames import Batch, FieldDef, Schema, SchemaError, Sparse
from livedata.server.ingest.idempotency import IdempotencyCache
from livedata.server.ingest.parse import INGEST_FACTOR, IngestError, channel_name, json_batch, reserve
from livedata.server.ingest.reorder import Reorder
from livedata.server.metrics import Metrics
from livedata.sources import PublishError

__all__ = ["Ingest", "IngestError", "SourceSink"]

WORKING = 2
"""Pushes parsed and stored at once; others wait for a turn (their bodies are read meanwhile). Each
step of a push is short and lets the loop run, but many steps ready at once would still make
everyone wait: this bounds the work one turn of the event loop can have from pushes."""


def budget_error(exc: BudgetError) -> IngestError:
    return IngestError(507, str(exc), "memory")


class Ingest:
    """Checks and stores pushes for one server; owns its idempotency keys and reorder windows."""

    def __init__(self, broker: Broker, config: Config, metrics: Metrics, budget: Budget | None = None) -> None:
        self.broker = broker
        self.config = config
        self.metrics = metrics
        self.budget = budget or Budget(1 << 62)
        self.keys = IdempotencyCache()
        self.reorder = Reorder(broker, metrics, self.budget)
        self.turn = asyncio.Semaphore(WORKING)
        """Hold it while a push is parsed and stored (:data:`WORKING` at once)."""

    def reservation(self) -> Reservation:
        """A push's share of the memory budget (grow it as the body comes; close it when done)."""
        return Reservation(self.budget, "ingest")

    async def close(self) -> None:
        """Publish points still held by a reorder window (call before the broker closes)."""
        await self.reorder.close()

    def drop(self, channel: str) -> None:
        """Forget points of ``channel`` still held (the channel is being deleted)."""
        self.reorder.drop(channel)

    def check_values(self, channel: str, batch: Batch) -> None:
        """Raise IngestError for a string value longer than ``--max-string-length``."""
        limit = self.config.max_string_length
        for key, f in batch.fields.items():
            if f.type != "string":
                continue
            col = batch.columns.get(key)
            if col is None:
                continue
            values = col.values if isinstance(col, Sparse) else col
            longest = max((len(v) for v in values if isinstance(v, str)), default=0)
            if longest > limit:
                raise IngestError(400, f"channel {channel!r}: a value of field {key!r} is {longest} characters "
                                  f"long; the limit is {limit} (see --max-string-length)", "string", field=key)

    async def check_batches(self, batches: dict[str, Batch]) -> None:
        """Raise IngestError if any batch conflicts with its channel's schema, the field or value
        limits, or the channel limit."""
        broker = self.broker
        held = self.reorder.held_fields
        max_fields = self.config.max_fields_per_channel
        new_channels = 0
        for channel, batch in batches.items():
            self.check_values(channel, batch)
            fields = await broker.fields(channel)
            if fields is None and channel not in held:
                new_channels += 1
            known = {f.key: f for f in fields or []}
            for k, f in held.get(channel, {}).items():
                known.setdefault(k, f)
            try:
                new = Schema(known).check(batch.fields.values())
            except SchemaError as exc:
                raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
            if new and len(known) + len(new) > max_fields:
                err = field_limit_error(channel, len(known), len(new), max_fields,
                                        new[max(0, max_fields - len(known))].key)
                raise IngestError(400, str(err), "fields", field=err.field)
        if new_channels:
            limit = self.config.max_channels
            have = await broker.channel_count() + len(set(held) - set(batches))
            if have + new_channels > limit:
                raise IngestError(429, f"too many channels: the limit is {limit} "
                                  "(delete some, or raise --max-channels)", "channels")

    async def publish_batches(self, batches: dict[str, Batch], reorder_ms: int = 0) -> int:
        """Check every batch first (schema, limits), then store them. Returns points accepted."""
        try:
            await self.check_batches(batches)
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        if reorder_ms > 0:
            for channel, batch in batches.items():
                if not self.reorder.hold(channel, batch, reorder_ms):
                    raise IngestError(507, "the reorder windows hold as many points as the memory budget allows: "
                                      "retry in a moment, or push without reorder_ms (or raise --max-memory)",
                                      "memory")
            return sum(map(len, batches.values()))
        total = 0
        for i, (channel, batch) in enumerate(batches.items()):
            if i:
                await asyncio.sleep(0)  # a push to many channels lets the loop run between them
            await self.store(channel, batch)
            total += len(batch)
        return total

    async def store(self, channel: str, batch: Batch) -> None:
        """Store one checked batch: the broker enforces the schema, the field and channel limits and
        the memory budget atomically; counted in ``livedata_points_published``. Pushes and sources
        both end here.

        Raises:
            IngestError: ``schema`` or ``fields`` (400), ``channels`` (429), ``memory`` (507) or
                ``broker`` (503); nothing stored.
        """
        try:
            await self.broker.publish(channel, batch)
        except SchemaError as exc:  # a concurrent push added the field with another type
            raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
        except FieldLimitError as exc:  # a concurrent push added fields
            raise IngestError(400, str(exc), "fields", field=exc.field) from None
        except ChannelLimitError as exc:
            raise IngestError(429, str(exc), "channels") from None
        except BudgetError as exc:
            raise budget_error(exc) from None
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        self.metrics.points_published.labels(channel).inc(len(batch))

    async def publish_json(self, channel: Any, points: Any, reorder_ms: int = 0, size: int = 0) -> int:
        """Publish pushed JSON (a point, a list of points, or columns) to ``channel``. ``size`` is
        the bytes it came in (a WebSocket message): the push holds its share of the budget meanwhile
        (an HTTP push already holds one, from its body)."""
        name = channel_name(channel)
        reservation = self.reservation()
        try:
            reserve(reservation, size * INGEST_FACTOR)
            batch = await json_batch(points, self.config.max_points_per_request)
            return await self.publish_batches({name: batch}, reorder_ms)
        finally:
            reservation.close()


class SourceSink:
    """What sources publish through (:class:`livedata.sources.Sink`): the push path's name check
    (no generated or status channel), its value limits, and :meth:`Ingest.store`, its errors as
    ``PublishError``.

    The batch-wide schema check of a push is not repeated: a source checks every point against
    the channel's schema as it gathers them, and the broker checks the batch atomically (fields,
    channels and the memory budget included).
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def publish(self, channel: str, batch: Batch) -> None:
        try:
            name = channel_name(channel)
            self.ingest.check_values(name, batch)
            await self.ingest.store(name, batch)
        except IngestError as exc:
            raise PublishError(exc.reason, exc.message) from None

    async def fields(self, channel: str) -> list[FieldDef] | None:
        return await self.ingest.broker.fields(channel)
