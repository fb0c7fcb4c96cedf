"""The one object that builds, wires and owns everything a ``livedata serve`` process runs.

Like Centrifuge's ``Node``: the server makes the broker, the metrics, the delivery hub (with the
metrics as its stats and the generators as its producers), the ingest service, the registry of
connections (with its heartbeat and pinger) and the reference stream's ticker, and starts and
stops them in order. Handlers only translate a carrier into calls on these parts; nothing below
the server imports a handler or this module.
"""

from __future__ import annotations

import time

from aiohttp import web

from livedata.brokers.base import Broker
from livedata.config import Config
from livedata.delivery import Hub
from livedata.generators import Generators
from livedata.server.compat import ReferenceTicker
from livedata.server.connections import Connections
from livedata.server.ingest import Ingest, SourceSink
from livedata.server.metrics import Metrics
from livedata.sources import Sources


def make_broker(config: Config) -> Broker:
    if config.broker == "memory":
        from livedata.brokers.memory import MemoryBroker

        return MemoryBroker(config.retention_s, config.retention_points, config.max_channels,
                            max_held_bytes=config.max_held_bytes, key_ttl_s=config.idempotency_ttl_s)
    from livedata.brokers.redis import RedisBroker

    broker: Broker = RedisBroker(config.broker, prefix=config.redis_prefix, retention_s=config.retention_s,
                                 retention_points=config.retention_points, max_channels=config.max_channels,
                                 max_held_bytes=config.max_held_bytes, key_ttl_s=config.idempotency_ttl_s,
                                 timeout_s=config.redis_timeout_s)
    return broker


class Server:
    """Config, broker, hub, ingest, sources, connections, reference ticker, generators and metrics of one
    process."""

    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.broker: Broker = broker or make_broker(config)
        self.generators = Generators(self.broker, config.retention_s, config.retention_s, config.retention_points)
        self.ingest = Ingest(self.broker, config, self.metrics)
        self.sources = Sources(config.sources, SourceSink(self.ingest), self.broker, self.generators.owner)
        """MQTT and upstream stream sources (``[[sources.*]]`` in the config file), once per cluster."""
        self.hub = Hub(self.broker, self.metrics, producers=self.generators, advisor=self.sources)
        self.sources.notify = self.hub.notice
        if len(self.sources):
            self.metrics.registry.register(self.sources)
        self.connections = Connections(config, self.metrics)
        self.ticker = ReferenceTicker(config.interval_ms / 1000)
        self.metrics.sources.append(self._gauges)

    async def start(self) -> None:
        await self.broker.start()
        self.connections.start()
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
        await self.hub.close()
        await self.generators.close()
        await self.broker.close()

    def _gauges(self) -> dict[str, tuple[str, float]]:
        return {
            **self.connections.gauges(),
            "livedata_reference_listeners": ("Clients of the reference stream", float(self.ticker.listeners)),
            "livedata_reference_ticker_running": (
                "1 while the reference stream's ticker runs",
                float(self.ticker.task is not None and not self.ticker.task.done())),
            "livedata_feeds": ("Shared feeds (channel, interval, fields)", float(self.hub.feeds)),
            "livedata_generators_running": ("Generated channels running", float(len(self.generators.running))),
        }


SERVER = web.AppKey("server", Server)
