"""The one object that builds, wires and owns everything a ``livedata serve`` process runs.

Like Centrifuge's ``Node``: the server makes the memory budget, the broker, the metrics, the
delivery hub (with the metrics as its stats and the generators as its producers), the ingest
service, the registry of connections (with its heartbeat and pinger), the admission guard, the
resource monitor and the reference stream's ticker, and starts and stops them in order. Handlers
only translate a carrier into calls on these parts; nothing below the server imports a handler or
this module.
"""

from __future__ import annotations

import time

from aiohttp import web

from livedata.brokers.base import Broker
from livedata.config import Config, default_max_connections, default_max_memory, descriptor_limit
from livedata.core import sizes
from livedata.core.budget import KINDS, Budget
from livedata.core.rollup import Tier
from livedata.delivery import Hub
from livedata.generators import Generators
from livedata.server.admission import Admission
from livedata.server.clientaddr import TrustedProxies
from livedata.server.compat import ReferenceTicker
from livedata.server.connections import Connections
from livedata.server.ingest import Ingest, SourceSink
from livedata.server.metrics import Metrics
from livedata.server.monitor import Monitor
from livedata.sources import Sources


def tiers_of(config: Config) -> tuple[Tier, ...]:
    """The rollup tiers (1 s, 10 s, 1 min, 10 min) with the retention the config gives each."""
    return (Tier(1_000, int(config.retention_1s_s * 1000)), Tier(10_000, int(config.retention_10s_s * 1000)),
            Tier(60_000, int(config.retention_1m_s * 1000)), Tier(600_000, int(config.retention_10m_s * 1000)))


def retention_bytes(config: Config, budget: Budget | None = None) -> int:
    """History kept per channel: ``--retention-bytes``, or an eighth of the memory budget."""
    limit = budget.limit if budget is not None else config.max_memory or default_max_memory()
    return config.retention_bytes or limit // 8


def make_broker(config: Config, budget: Budget | None = None) -> Broker:
    if config.data_dir:
        from livedata.brokers.disk import DiskBroker

        return DiskBroker(config.data_dir, config.retention_s, config.retention_points, config.max_channels,
                          tiers=tiers_of(config), fsync=config.fsync, max_held_bytes=config.max_held_bytes,
                          key_ttl_s=config.idempotency_ttl_s)
    retention_bytes_ = retention_bytes(config, budget)
    if config.broker == "memory":
        from livedata.brokers.memory import MemoryBroker

        return MemoryBroker(config.retention_s, config.retention_points, config.max_channels,
                            retention_bytes=retention_bytes_, max_fields=config.max_fields_per_channel,
                            budget=budget, tiers=tiers_of(config), max_held_bytes=config.max_held_bytes,
                            key_ttl_s=config.idempotency_ttl_s)
    from livedata.brokers.redis import RedisBroker

    broker: Broker = RedisBroker(config.broker, prefix=config.redis_prefix, retention_s=config.retention_s,
                                 retention_points=config.retention_points, max_channels=config.max_channels,
                                 retention_bytes=retention_bytes_, max_fields=config.max_fields_per_channel,
                                 tiers=tiers_of(config), max_held_bytes=config.max_held_bytes,
                                 key_ttl_s=config.idempotency_ttl_s, timeout_s=config.redis_timeout_s)
    return broker


class Server:
    """Config, budget, broker, hub, ingest, sources, connections, admission, monitor, reference
    ticker, generators and metrics of one process."""

    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.budget = Budget(config.max_memory or default_max_memory(), fixed=sizes.CACHES)
        self.broker: Broker = broker or make_broker(config, self.budget)
        self.generators = Generators(self.broker, config.retention_s, config.retention_s, config.retention_points,
                                     max_generators=config.max_generators,
                                     forget_stopped=config.broker == "memory" and broker is None,
                                     retention_bytes=retention_bytes(config, self.budget))
        self.ingest = Ingest(self.broker, config, self.metrics, self.budget)
        self.sources = Sources(config.sources, SourceSink(self.ingest), self.broker, self.generators.owner)
        """MQTT and upstream stream sources (``[[sources.*]]`` in the config file), once per cluster."""
        self.hub = Hub(self.broker, self.metrics, producers=self.generators, advisor=self.sources,
                       budget=self.budget)
        self.sources.notify = self.hub.notice
        if len(self.sources):
            self.metrics.registry.register(self.sources)
        self.connections = Connections(config, self.metrics)
        self.max_connections = config.max_connections or default_max_connections(descriptor_limit())
        self.admission = Admission(self.max_connections, config.max_connections_per_ip, self.budget,
                                   TrustedProxies(config.trusted_proxies))
        self.monitor = Monitor(self.budget, self.connections.conns)
        self.ticker = ReferenceTicker(config.interval_ms / 1000)
        self.metrics.sources.append(self._gauges)

    async def start(self) -> None:
        await self.broker.start()
        self.connections.start()
        self.monitor.start()
        self.ingest.start()
        await self.sources.start()

    async def shutdown(self) -> None:
        """Close every stream (they end at once) and stop the reference ticker."""
        self.connections.shutdown()
        await self.ticker.stop()

    async def close(self) -> None:
        await self.sources.close()  # disconnect, then store what they received
        await self.ingest.close()  # publish points held by reorder windows (with Redis: or leave them there)
        await self.connections.close()
        await self.monitor.close()
        await self.hub.close()
        await self.generators.close()
        await self.broker.close()

    def forget(self, channel: str) -> None:
        """A channel was deleted: drop what the server kept about it (metrics; its held points are
        in the broker, deleted with it)."""
        self.metrics.forget_channel(channel)

    def _gauges(self) -> dict[str, tuple[str, float | dict[str, float]]]:
        budget = self.budget
        return {
            **self.connections.gauges(),
            **self.admission.gauges(),
            "livedata_reference_listeners": ("Clients of the reference stream", float(self.ticker.listeners)),
            "livedata_reference_ticker_running": (
                "1 while the reference stream's ticker runs",
                float(self.ticker.task is not None and not self.ticker.task.done())),
            "livedata_feeds": ("Shared feeds (channel, interval, fields)", float(self.hub.feeds)),
            "livedata_generators_running": ("Generated channels running", float(len(self.generators.running))),
            "livedata_memory_budget_bytes": ("The memory budget (--max-memory)", float(budget.limit)),
            "livedata_memory_bytes": ("Memory accounted in the budget, by kind (estimates)",
                                      {k: float(v) for k, v in budget.snapshot().items()}),
            "livedata_memory_refused": ("Reservations the memory budget refused, by kind (total)",
                                        {k: float(budget.refused[k]) for k in KINDS}),
            "livedata_memory_shed": ("Connections closed because their kind of memory was over its share (total)",
                                     {k: float(v) for k, v in self.monitor.shed.items()}),
            "livedata_memory_rss_bytes": ("Resident memory of the process (sampled every second)",
                                          float(self.monitor.rss)),
            "livedata_loop_lag_seconds": ("Largest event-loop delay in the last 10 s: how late the loop ran a "
                                          "due timer", self.monitor.lag),
            "livedata_loop_busy_seconds": ("Largest part of an event-loop delay in the last 10 s that the loop "
                                           "spent working (CPU time), not waiting for a CPU", self.monitor.busy),
            "livedata_loop_busy_max_seconds": ("livedata_loop_busy_seconds, the largest since start",
                                               self.monitor.max_busy),
            "livedata_reorder_held_bytes": ("Bytes held by reorder windows in this process's broker (the memory "
                                            "broker; -1: held in the broker's store)",
                                            float(getattr(self.broker, "held_bytes", -1))),
        }


SERVER = web.AppKey("server", Server)
