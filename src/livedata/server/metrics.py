"""Prometheus metrics (``GET /metrics``), one registry per server process.

:class:`Metrics` is also delivery's ``Stats`` (``livedata.delivery.stats``): the server injects it
into the hub, which never imports this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Reading = dict[str, tuple[str, float | dict[str, float]]]
"""Gauges by name: a sentence and a value, or values by ``kind`` label."""


class _Live(Collector):
    """Gauges read at scrape time from the running server (or from ``snapshot``, read on the loop
    just before a rendering in another thread)."""

    def __init__(self, read: Callable[[], Reading]) -> None:
        self.read = read
        self.snapshot: Reading | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reading = self.snapshot if self.snapshot is not None else self.read()
        for name, (doc, value) in reading.items():
            if isinstance(value, dict):
                family = GaugeMetricFamily(name, doc, labels=["kind"])
                for kind, v in value.items():
                    family.add_metric([kind], v)
                yield family
            else:
                yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.points_published = Counter(
            "livedata_points_published", "Points accepted into the broker", ["channel"], registry=r)
        self.points_delivered = Counter(
            "livedata_points_delivered", "Points written to subscribers", ["channel"], registry=r)
        self.late_points = Counter("livedata_late_points", "Points published out of time order",
                                   ["channel"], registry=r)
        self.slow_disconnects = Counter(
            "livedata_slow_disconnects", "Connections closed because they did not read fast enough",
            registry=r)
        self.push_errors = Counter("livedata_push_errors", "Rejected pushes", ["reason"], registry=r)
        self.push_replays = Counter("livedata_push_replays", "Pushes whose Idempotency-Key had stored them "
                                    "already: answered 204, nothing stored again", registry=r)
        self.connections_total = Counter("livedata_connections", "Connections accepted", ["carrier"],
                                         registry=r)
        self.subscriptions = Gauge("livedata_subscriptions", "Open subscriptions", registry=r)
        self.round_seconds = Histogram(
            "livedata_round_seconds", "Wall time of one delivery round of a feed (every subscriber visited once)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r)
        self.overruns = 0
        """Batched rounds that took longer than their interval (the next packet covers more)."""
        self.sources: list[Callable[[], Reading]] = [lambda: {"livedata_feed_overruns": (
            "Batched delivery rounds that took longer than the batching interval (total)", float(self.overruns))}]
        self._live_collector = _Live(self._live)
        r.register(self._live_collector)

    # --- delivery's counters (``livedata.delivery.stats.Stats``) --------------------------------------

    def delivered(self, channel: str, points: int) -> None:
        self.points_delivered.labels(channel).inc(points)

    def late(self, channel: str, points: int) -> None:
        self.late_points.labels(channel).inc(points)

    def round_took(self, seconds: float) -> None:
        self.round_seconds.observe(seconds)

    def overrun(self) -> None:
        self.overruns += 1

    def subscriptions_changed(self, delta: int) -> None:
        self.subscriptions.inc(delta)

    def forget_channel(self, channel: str) -> None:
        """Drop a deleted channel's labelled series (they would pile up with every channel ever made)."""
        for counter in (self.points_published, self.points_delivered, self.late_points):
            try:
                counter.remove(channel)
            except KeyError:
                pass

    def _live(self) -> Reading:
        out: Reading = {}
        try:
            out["livedata_asyncio_tasks"] = ("asyncio tasks alive", float(len(asyncio.all_tasks())))
        except RuntimeError:
            pass
        for source in self.sources:
            out.update(source())
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """:meth:`render` in a worker thread, the live gauges read here first: a registry with a
        series per channel (thousands) takes long enough to render that the loop must not wait for
        it (the thread gives the GIL back every few ms)."""
        collector = self._live_collector
        collector.snapshot = self._live()
        try:
            return await asyncio.to_thread(generate_latest, self.registry)
        finally:
            collector.snapshot = None
