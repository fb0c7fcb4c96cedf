"""The reorder service: pushes with ``?reorder_ms=N`` are held up to N ms, then published in time order.

The window itself is pure (:class:`~livedata.core.window.ReorderBuffer`); this owns one buffer per
channel and the one task that publishes what is due (it runs only while something is held).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from livedata.brokers.base import Broker
from livedata.core.clock import monotonic_ms
from livedata.core.frames import Batch, FieldDef, SchemaError, Value
from livedata.core.window import ReorderBuffer
from livedata.server.metrics import Metrics
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.ingest")

Row = tuple[dict[str, FieldDef], dict[str, Value]]
"""A held point: the fields of the batch it came in, and its values by field key."""


class Reorder:
    """Held points per channel, and the flusher that publishes them when due."""

    def __init__(self, broker: Broker, metrics: Metrics, clock: Callable[[], float] = monotonic_ms) -> None:
        self.broker = broker
        self.metrics = metrics
        self.clock = clock
        self.held: dict[str, ReorderBuffer[Row]] = {}
        self.held_fields: dict[str, dict[str, FieldDef]] = {}
        """Per channel, the fields of the points held now (a push is checked against them too)."""
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
            await self.broker.publish(channel, batch)
        except Exception as exc:  # the push was already answered: count it, log it, go on
            reason = "schema" if isinstance(exc, SchemaError) else "reorder"
            self.metrics.push_errors.labels(reason).inc()
            log.warning("reorder window of %s: %d points not stored: %s", channel, len(batch), exc)
            return
        self.metrics.points_published.labels(channel).inc(len(batch))

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
