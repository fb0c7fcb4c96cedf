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

Memory: a push holds a share of the server's memory budget (kind ``ingest``, :data:`parse.INGEST_FACTOR`
times its body) from the first byte read until it is stored, and is answered ``429`` when there is
no room; a channel or field the budget cannot hold is ``507``. Held points are bounded by the
broker's ``--max-held-bytes`` alone (with the memory broker, also at most the budget's ``held``
share, where they are counted): a push that would pass it is ``429`` (``413`` when it alone is larger).
"""

from __future__ import annotations

import asyncio
from typing import Any

from livedata.brokers.base import (
    Broker,
    BrokerError,
    ChannelLimitError,
    FieldLimitError,
    HeldLimitError,
    Key,
    KeyConflict,
    field_limit_error,
)
from livedata.config import Config
from livedata.core.budget import Budget, BudgetError, Reservation
from livedata.core.clock import wall_ms
from livedata.core.frames import Batch, FieldDef, Schema, SchemaError, Sparse
from livedata.server.ingest.parse import INGEST_FACTOR, IngestError, channel_name, json_batch, reserve
from livedata.server.ingest.reorder import Reorder
from livedata.server.metrics import Metrics
from livedata.sources import PublishError
from livedata.sources.base import source_key

__all__ = ["Ingest", "IngestError", "SourceSink"]

WORKING = 2
"""Pushes parsed and stored at once; others wait for a turn (their bodies are read meanwhile). Each
step of a push is short and lets the loop run, but many steps ready at once would still make
everyone wait: this bounds the work one turn of the event loop can have from pushes."""


def budget_error(exc: BudgetError) -> IngestError:
    return IngestError(507, str(exc), "memory")


UNKNOWN = "the outcome is unknown: retry with the same Idempotency-Key"


class Ingest:
    """Checks and stores pushes for one server; owns the task that publishes held points."""

    def __init__(self, broker: Broker, config: Config, metrics: Metrics, budget: Budget | None = None) -> None:
        self.broker = broker
        self.config = config
        self.metrics = metrics
        self.budget = budget or Budget(1 << 62)
        self.reorder = Reorder(broker)
        self.turn = asyncio.Semaphore(WORKING)
        """Hold it while a push is parsed and stored (:data:`WORKING` at once)."""

    def start(self) -> None:
        self.reorder.start()

    def reservation(self) -> Reservation:
        """A push's share of the memory budget (grow it as the body comes; close it when done)."""
        return Reservation(self.budget, "ingest")

    async def close(self) -> None:
        """Publish held points if the broker can take them (call before the broker closes)."""
        await self.reorder.close()

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
        limits, or the channel limit.

        The broker checks again as it writes (held fields too), atomically per channel; this
        first look keeps a request that spans channels from storing some of them and not others.
        """
        broker = self.broker
        max_fields = self.config.max_fields_per_channel
        new_channels = 0
        for channel, batch in batches.items():
            self.check_values(channel, batch)
            fields = await broker.fields(channel)
            if fields is None:
                new_channels += 1
            known = {f.key: f for f in fields or []}
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
            have = await broker.channel_count()
            if have + new_channels > limit:
                raise IngestError(429, f"too many channels: the limit is {limit} "
                                  "(delete some, or raise --max-channels)", "channels")

    async def publish_batches(self, batches: dict[str, Batch], reorder_ms: int = 0, key: Key | None = None) -> bool:
        """Check every batch first (schema, limits), then store them; True when ``key`` had stored
        all of them before (nothing was stored now)."""
        try:
            await self.check_batches(batches)
        except BrokerError as exc:
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        replayed = True
        for stored, (channel, batch) in enumerate(batches.items()):
            if stored:
                await asyncio.sleep(0)  # a push to many channels lets the loop run between them
            mine = None if key is None else Key(key.name, key.digest)
            try:
                if reorder_ms > 0:
                    await self.broker.hold(channel, batch, reorder_ms, mine)
                else:
                    await self.broker.publish(channel, batch, mine)
            except SchemaError as exc:  # a concurrent push added the field with another type
                raise self._failed(400, f"channel {channel!r}: {exc}", "schema", stored, exc.field) from None
            except FieldLimitError as exc:  # a concurrent push added fields
                raise self._failed(400, str(exc), "fields", stored, exc.field) from None
            except ChannelLimitError as exc:
                raise self._failed(429, str(exc), "channels", stored) from None
            except BudgetError as exc:
                raise self._failed(507, str(exc), "memory", stored) from None
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

    async def publish_json(self, channel: Any, points: Any, reorder_ms: int = 0, key: Key | None = None,
                           size: int = 0) -> bool:
        """Publish pushed JSON (a point, a list of points, or columns) to ``channel``. ``size`` is
        the bytes it came in (a WebSocket message): the push holds its share of the budget meanwhile
        (an HTTP push already holds one, from its body)."""
        name = channel_name(channel)
        reservation = self.reservation()
        try:
            reserve(reservation, size * INGEST_FACTOR)
            batch = await json_batch(points, self.config.max_points_per_request)
            return await self.publish_batches({name: batch}, reorder_ms, key)
        finally:
            reservation.close()

    async def store(self, channel: str, batch: Batch, key: Key | None = None) -> None:
        """Store one checked batch of a source: the broker enforces the schema, the channel limit
        and ``key`` atomically; counted in ``livedata_points_published`` (once per key).

        Raises:
            IngestError: ``schema`` or ``fields`` (400), ``channels`` (429), ``memory`` (507) or
                ``broker`` (503, saying whether the outcome is unknown).
        """
        try:
            await self.broker.publish(channel, batch, key)
        except SchemaError as exc:  # a concurrent push added the field with another type
            raise IngestError(400, f"channel {channel!r}: {exc}", "schema", field=exc.field) from None
        except FieldLimitError as exc:  # a concurrent push added fields
            raise IngestError(400, str(exc), "fields", field=exc.field) from None
        except ChannelLimitError as exc:
            raise IngestError(429, str(exc), "channels") from None
        except BudgetError as exc:
            raise budget_error(exc) from None
        except BrokerError as exc:
            if exc.unknown:
                raise IngestError(503, f"the broker did not answer ({exc}): the outcome is unknown "
                                  "(a source retries the batch with the same key)", "broker") from None
            raise IngestError(503, f"the broker is unavailable, nothing was stored: {exc}", "broker") from None
        if key is None or not key.replayed:
            self.metrics.points_published.labels(channel).inc(len(batch))


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

    async def publish(self, channel: str, batch: Batch, key: str | None = None) -> None:
        try:
            name = channel_name(channel)
            self.ingest.check_values(name, batch)
            await self.ingest.store(name, batch, source_key(key))
        except IngestError as exc:
            raise PublishError(exc.reason, exc.message) from None

    async def fields(self, channel: str) -> list[FieldDef] | None:
        return await self.ingest.broker.fields(channel)
