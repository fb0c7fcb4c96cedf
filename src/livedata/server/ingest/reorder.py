"""The reorder service: pushes with ``?reorder_ms=N`` are held up to N ms, then published in time order.

The window itself is pure (:class:`~livedata.core.window.ReorderBuffer`); this owns one buffer per
channel and the one task that publishes what is due (it runs only while something is held). Held
points are counted in the memory budget (kind ``held``): a push that would hold more than it has
room for is refused (507), and nothing of it is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from livedata.brokers.base import Broker
from livedata.core import sizes
from livedata.core.budget import Budget
from livedata.core.clock import monotonic_ms
from livedata.core.frames import Batch, Column, FieldDef, SchemaError, Sparse, Value, column
from livedata.core.window import ReorderBuffer
from livedata.server.metrics import Metrics
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.ingest")

Row = tuple[dict[str, FieldDef], dict[str, Value], int]
"""A held point: the fields of the batch it came in, its values by field key, its size in the budget."""


def _rows(batch: Batch) -> list[dict[str, Value]]:
    """The batch's points as one dict of values each (only the fields a point has)."""
    out: list[dict[str, Value]] = [{} for _ in batch.times]
    for key, col in batch.columns.items():
        if isinstance(col, Sparse):
            for r, v in zip(col.rows, col.values, strict=True):
                out[r][key] = v
        else:
            for r, v in enumerate(col):
                if v is not None:
                    out[r][key] = v
    return out


class Reorder:
    """Held points per channel, and the flusher that publishes them when due."""

    def __init__(self, broker: Broker, metrics: Metrics, budget: Budget | None = None,
                 clock: Callable[[], float] = monotonic_ms) -> None:
        self.broker = broker
        self.metrics = metrics
        self.budget = budget or Budget(1 << 62)
        self.clock = clock
        self.held: dict[str, ReorderBuffer[Row]] = {}
        self.held_fields: dict[str, dict[str, FieldDef]] = {}
        """Per channel, the fields of the points held now (a push is checked against them too)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def points(self) -> int:
        """Points held now, every channel."""
        return sum(map(len, self.held.values()))

    def hold(self, channel: str, batch: Batch, hold_ms: int) -> bool:
        """Hold ``batch``'s points for ``hold_ms``; False (nothing held) when the budget has no room."""
        fields = batch.fields
        rows = _rows(batch)
        costs = [sizes.row_bytes(r) for r in rows]
        if not self.budget.reserve("held", sum(costs)):
            return False
        buf = self.held.get(channel)
        if buf is None:
            buf = self.held[channel] = ReorderBuffer(self.clock)
        buf.add(((t, (fields, r, c)) for t, r, c in zip(batch.times, rows, costs, strict=True)), hold_ms)
        known = self.held_fields.setdefault(channel, {})
        for k, f in fields.items():
            known.setdefault(k, f)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flusher(), name="ingest:reorder")
        return True

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
        self.budget.release("held", sum(cost for _, (_, _, cost) in rows))
        fields: dict[str, FieldDef] = {}
        at: dict[str, list[int]] = {}
        vals: dict[str, list[Value]] = {}
        for i, (_, (fmap, values, _)) in enumerate(rows):
            if len(fields) < len(fmap) or any(k not in fields for k in fmap):
                for k, f in fmap.items():
                    fields.setdefault(k, f)
            for k, v in values.items():
                r = at.get(k)
                if r is None:
                    r = at[k] = []
                    vals[k] = []
                r.append(i)
                vals[k].append(v)
        n = len(rows)
        columns: dict[str, Column] = {k: column(n, r, vals[k]) for k, r in at.items()}
        batch = Batch([t for t, _ in rows], columns, {k: f for k, f in fields.items() if k in columns})
        try:
            await self.broker.publish(channel, batch)
        except Exception as exc:  # the push was already answered: count it, log it, go on
            reason = "schema" if isinstance(exc, SchemaError) else "reorder"
            self.metrics.push_errors.labels(reason).inc()
            log.warning("reorder window of %s: %d points not stored: %s", channel, len(batch), exc)
            return
        self.metrics.points_published.labels(channel).inc(len(batch))

    def drop(self, channel: str) -> None:
        buf = self.held.pop(channel, None)
        self.held_fields.pop(channel, None)
        if buf is not None:
            self.budget.release("held", sum(cost for _, (_, _, cost) in buf.pop_all()))

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
