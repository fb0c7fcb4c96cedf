"""The reorder service: the one task of a server that has the broker publish held points when due.

Points pushed with ``?reorder_ms=N`` are held *in the broker* (:meth:`Broker.hold`), so the
``204`` that answered them means they are stored: with Redis they survive this process, a broker
outage and a restart, and any server publishes them when due (:meth:`Broker.release` is exactly
once, whoever calls it). This task calls ``release`` when the next held points are due, at least
every ``poll_s`` (another server's points, or ones left by a server that stopped), and keeps
retrying with backoff while the broker is away. The window itself is pure
(:mod:`livedata.core.window`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livedata.brokers.base import Broker, BrokerError
from livedata.core.clock import wall_ms
from livedata.tasks import cancel_and_wait, wait_event

log = logging.getLogger("livedata.ingest")


class Reorder:
    """Releases held points when due, for the life of the server."""

    def __init__(self, broker: Broker, poll_s: float = 1.0, clock: Callable[[], int] = wall_ms,
                 shutdown_s: float = 1.0) -> None:
        self.broker = broker
        self.poll_s = poll_s
        self.shutdown_s = shutdown_s
        self.clock = clock
        self._due: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.down = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest:reorder")

    def held(self, due_ms: int) -> None:
        """Points were held, due at ``due_ms``: make sure the task looks then."""
        if self._due is None or due_ms < self._due:
            self._due = due_ms
            self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        # The flag, not only the cancel: redis-py can turn a cancel that lands as a read times out
        # into a TimeoutError (a BrokerError here), and the loop would go on.
        while not self._closed:
            self._wake.clear()
            try:
                self._due = await self.broker.release()
            except BrokerError as exc:
                if not self.down:
                    self.down = True
                    log.warning("held points cannot be published now (%s): they stay held and are published "
                                "when the broker is back", exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.poll_s)
                continue
            except Exception:
                log.exception("releasing held points failed; retrying")
                await self._sleep(1.0)
                continue
            if self.down:
                self.down = False
                log.warning("held points are published again")
            backoff = 0.1
            wait = self.poll_s if self._due is None else max(0.0, min(self.poll_s, (self._due - self.clock()) / 1000))
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._wake, seconds)

    async def close(self) -> None:
        """Stop the task, then publish what is held (if the broker can): on shutdown nothing waits
        for its window. Points the broker cannot take now stay held there (Redis: published by
        the next server that runs)."""
        self._closed = True
        task, self._task = self._task, None
        await cancel_and_wait(task)
        try:
            async with asyncio.timeout(self.shutdown_s):
                await self.broker.release(everything=True)
        except (BrokerError, TimeoutError) as exc:
            log.warning("shutdown: held points stay held in the broker (%s); the next server publishes them",
                        exc or "it did not answer in time")
