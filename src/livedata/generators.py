"""Generated channels: one shared generator per canonical name, once per cluster.

A generator fills its channel's history for the retention period when it starts, publishes a
row every interval into the broker (exactly like a push), and keeps running for ``keep_s`` after
its last subscriber leaves. With a shared broker only the holder of a lease publishes; another
server takes over within about ``LEASE_TTL_S`` when the holder dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time

from livedata.brokers.base import Broker
from livedata.core.clock import wall_ms
from livedata.core.frames import Batch, FieldDef
from livedata.core.sources import GeneratedChannel, Generator, grid_delay
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.generators")

LEASE_TTL_S = 3.0
"""Generator leases: renewed every third of this; a dead holder is replaced within about this."""
PREFILL_POINTS_PER_BATCH = 250_000
"""A generator publishes its initial history in batches of about this many values."""


class Generators:
    """Generated channels: one shared generator per canonical name, kept a while after use."""

    def __init__(self, broker: Broker, keep_s: float, retention_s: float, retention_points: int,
                 rng: random.Random | None = None) -> None:
        self.broker = broker
        self.keep_s = keep_s
        self.retention_ms = int(retention_s * 1000)
        self.retention_points = retention_points
        self.rng = rng or random.Random()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.ready: dict[str, asyncio.Future[None]] = {}
        self.users: dict[str, int] = {}
        self.stoppers: dict[str, asyncio.TimerHandle] = {}
        self.names: set[str] = set()
        self.lease_ttl_s = LEASE_TTL_S
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """This process in generator leases: servers sharing a broker run each generator once."""

    async def acquire(self, gen: GeneratedChannel) -> None:
        """Count a user of ``gen`` and make sure it runs with its history filled."""
        name = gen.name
        self.users[name] = self.users.get(name, 0) + 1
        stopper = self.stoppers.pop(name, None)
        if stopper is not None:
            stopper.cancel()
        if name not in self.running:
            loop = asyncio.get_running_loop()
            self.ready[name] = loop.create_future()
            self.running[name] = loop.create_task(self._run(gen), name=f"generator:{name}")
            self.names.add(name)
        await asyncio.shield(self.ready[name])

    def release(self, gen: GeneratedChannel) -> None:
        name = gen.name
        left = self.users.get(name, 0) - 1
        if left > 0:
            self.users[name] = left
            return
        self.users.pop(name, None)
        if name in self.running and name not in self.stoppers:
            self.stoppers[name] = asyncio.get_running_loop().call_later(self.keep_s, self._stop, name)

    def _stop(self, name: str) -> None:
        self.stoppers.pop(name, None)
        task = self.running.pop(name, None)
        self.ready.pop(name, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        for handle in self.stoppers.values():
            handle.cancel()
        self.stoppers.clear()
        tasks = list(self.running.values())
        self.running.clear()
        await cancel_and_wait(*tasks)

    async def _run(self, gen: GeneratedChannel) -> None:
        """Publish ``gen`` while this process holds its lease: once per cluster sharing a broker.

        Every ``lease_ttl_s / 3`` the holder renews its lease and the others try to take it, so
        when the holder dies another server continues within about ``lease_ttl_s``, from the
        broker's last time (it fills the gap). Users are ready once the channel has points.
        """
        broker = self.broker
        name = gen.name
        ready = self.ready[name]
        period = self.lease_ttl_s / 3
        loop = asyncio.get_running_loop()
        interval_s = gen.interval_ms / 1000
        tick_at = loop.time()
        g: Generator | None = None
        warned = False
        while True:
            try:
                held = await broker.lease(name, self.owner, self.lease_ttl_s)
                if held and g is None:
                    g = await self._resume(gen)
                    log.info("generator %s: publishing from this server", name)
                elif not held and g is not None:
                    g = None
                    log.info("generator %s: another server publishes it now", name)
                if not ready.done() and (held or await broker.last_time(name) is not None):
                    ready.set_result(None)
                warned = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                g = None
                if not ready.done():  # the first user gets the error; the next one starts afresh
                    ready.set_exception(exc)
                    if self.running.get(name) is asyncio.current_task():
                        del self.running[name]
                        self.ready.pop(name, None)
                    return
                if not warned:
                    log.warning("generator %s: cannot hold its lease: %s", name, exc)
                    warned = True
            until = loop.time() + period
            while g is not None and tick_at <= until:
                await asyncio.sleep(max(0.0, tick_at - loop.time()))
                times, cols = g.rows(0, wall_ms())
                if times:
                    try:
                        await broker.publish(name, Batch(times, dict(zip(g.fields, cols, strict=True)),
                                                         {k: FieldDef(k, k, "number") for k in g.fields}))
                    except Exception:  # the broker comes back: keep ticking, the next rows follow
                        log.warning("generator %s: publish failed", name, exc_info=True)
                tick_at = loop.time() + grid_delay(time.time(), interval_s)  # rows go out as they are due
            await asyncio.sleep(max(0.0, until - loop.time()))

    async def _resume(self, gen: GeneratedChannel) -> Generator:
        """A generator continuing after the broker's last point, with the retention period filled."""
        broker = self.broker
        g = Generator(gen, random.Random(self.rng.random()))
        fields = {k: FieldDef(k, k, "number") for k in g.fields}
        now = wall_ms()
        last = await broker.last_time(gen.name)
        rows = max(1, self.retention_points // len(g.fields))  # retention counts values
        span = min(self.retention_ms, gen.interval_ms * (rows - 1))
        start = now - span if last is None else max(now - span, last + 1)
        g.last_time = None if last is None else last
        if last is not None and gen.base == "random-walk":  # walk on from where the last holder stopped
            for c in (await broker.history(gen.name, last, last)).chunks:
                for i, k in enumerate(g.fields):
                    v = c.columns.get(k, [None])[-1]
                    if isinstance(v, int | float):
                        g._walk[i] = float(v)
        times, cols = g.rows(start, now)
        step = max(1, PREFILL_POINTS_PER_BATCH // max(1, len(g.fields)))
        for lo in range(0, len(times), step):
            await broker.publish(gen.name, Batch(
                times[lo:lo + step], {k: c[lo:lo + step] for k, c in zip(g.fields, cols, strict=True)}, fields))
        return g
