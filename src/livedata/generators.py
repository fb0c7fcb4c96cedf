"""Generated channels: one shared generator per canonical name, once per cluster.

A generator fills its channel's history for the retention period when it starts, publishes a
row every interval into the broker (exactly like a push), and keeps running for ``keep_s`` after
its last live subscriber leaves (:data:`FINITE_KEEP_S` when only finite ranges, ``to`` in the past,
ever used it). With a shared broker only the holder of a lease publishes; another server takes over
within about ``LEASE_TTL_S`` when the holder dies.

Generators have their own budget, ``--max-generators`` running at once (a subscription that would
start one more gets an ``error``); their channels do not count in ``--max-channels``, so readers
cannot use up the channels writers need. With the memory broker a stopped generator's channel is
deleted, so distinct params asked for over time do not pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time

from livedata.brokers.base import Broker
from livedata.core import sizes
from livedata.core.budget import Refused
from livedata.core.clock import wall_ms
from livedata.core.frames import Batch, FieldDef, last_value
from livedata.core.sources import GeneratedChannel, Generator, grid_delay
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.generators")

LEASE_TTL_S = 3.0
"""Generator leases: renewed every third of this; a dead holder is replaced within about this."""
PREFILL_POINTS_PER_BATCH = 20_000
"""A generator makes and publishes its initial history in batches of about this many values, and
lets the loop run between them (about 10 ms of work each)."""
FINITE_KEEP_S = 30.0
"""How long a generator that only finite subscriptions used keeps running after the last one."""


class Generators:
    """Generated channels: one shared generator per canonical name, kept a while after use."""

    def __init__(self, broker: Broker, keep_s: float, retention_s: float, retention_points: int,
                 rng: random.Random | None = None, *, max_generators: int = 1 << 30,
                 forget_stopped: bool = False, retention_bytes: int = 0) -> None:
        self.broker = broker
        self.keep_s = keep_s
        self.max_generators = max_generators
        self.forget_stopped = forget_stopped
        """Delete a stopped generator's channel (a memory broker that no other server shares)."""
        self.live_used: set[str] = set()
        """Running generators a live subscription used: they are kept ``keep_s``, the others
        :data:`FINITE_KEEP_S`."""
        self.refused = 0
        self._deleting: set[asyncio.Task[None]] = set()
        self.retention_ms = int(retention_s * 1000)
        self.retention_points = retention_points
        self.retention_bytes = retention_bytes
        """History kept per channel in bytes (0: no limit): the prefill makes no more than that."""
        self.rng = rng or random.Random()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.ready: dict[str, asyncio.Future[None]] = {}
        self.users: dict[str, int] = {}
        self.stoppers: dict[str, asyncio.TimerHandle] = {}
        self.names: set[str] = set()
        self.lease_ttl_s = LEASE_TTL_S
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """This process in generator leases: servers sharing a broker run each generator once."""

    async def acquire(self, gen: GeneratedChannel, live: bool = True) -> None:
        """Count a user of ``gen`` and make sure it runs with its history filled.

        Raises:
            Refused: ``max_generators`` run already and ``gen`` is not one of them.
        """
        name = gen.name
        if name not in self.running and len(self.running) >= self.max_generators:
            self.refused += 1
            raise Refused(f"{len(self.running)} generated channels run already, the limit (see --max-generators): "
                          f"subscribe to one of them, or try {gen.base!r} with other params later")
        if live:
            self.live_used.add(name)
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
            keep = self.keep_s if name in self.live_used else min(self.keep_s, FINITE_KEEP_S)
            self.stoppers[name] = asyncio.get_running_loop().call_later(keep, self._stop, name)

    def _stop(self, name: str) -> None:
        self.stoppers.pop(name, None)
        self.live_used.discard(name)
        task = self.running.pop(name, None)
        self.ready.pop(name, None)
        if task is not None:
            task.cancel()
            if self.forget_stopped:
                forget = asyncio.get_running_loop().create_task(self._forget(name, task),
                                                                name=f"generator-forget:{name}")
                self._deleting.add(forget)
                forget.add_done_callback(self._deleting.discard)

    async def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(BaseException):
            await task
        if name not in self.running:  # not started again meanwhile
            await self.broker.delete(name)
            self.names.discard(name)

    async def close(self) -> None:
        for handle in self.stoppers.values():
            handle.cancel()
        self.stoppers.clear()
        tasks = list(self.running.values()) + list(self._deleting)
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
        if self.retention_bytes:  # and bytes: a row is a time and a float per series (core/sizes.py)
            rows = max(1, min(rows, self.retention_bytes // ((len(g.fields) + 1) * (sizes.SLOT + sizes.INT))))
        span = min(self.retention_ms, gen.interval_ms * (rows - 1))
        start = now - span if last is None else max(now - span, last + 1)
        g.last_time = None if last is None else last
        if last is not None and gen.base == "random-walk":  # walk on from where the last holder stopped
            for c in (await broker.history(gen.name, last, last)).chunks:
                for i, k in enumerate(g.fields):
                    col = c.columns.get(k)
                    v = last_value(col) if col is not None else None
                    if isinstance(v, int | float):
                        g._walk[i] = float(v)
        step_ms = max(1, PREFILL_POINTS_PER_BATCH // max(1, len(g.fields))) * gen.interval_ms
        lo = start
        while lo <= now:
            hi = min(now, lo + step_ms - 1)
            times, cols = g.rows(lo, hi)
            if times:
                await broker.publish(gen.name, Batch(times, dict(zip(g.fields, cols, strict=True)), fields))
            lo = hi + 1
            await asyncio.sleep(0)
        return g
