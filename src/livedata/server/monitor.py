"""What the memory budget cannot count as it happens, sampled: bytes queued for clients, WebSocket
messages being received, the event loop's lag, and the process's RSS.

One task. Every :data:`LAG_PERIOD_S` it measures how late the loop woke it (the largest lag of the
last :data:`LAG_WINDOW_S` is ``livedata_loop_lag_seconds``), and how much of that lag the loop spent
working: the CPU time its thread used meanwhile (``livedata_loop_busy_seconds``, and the largest since
start, ``livedata_loop_busy_max_seconds``). A loop held by one long step is late *and* busy; a process
a crowded machine gives no CPU is late but not busy, so the second tells the server's own blocking
apart from the machine's. Every :data:`SAMPLE_EVERY` of those it
adds up the connections' queues (kind ``queues``) and partial WebSocket messages (``inbound``) and,
when a kind is over its share, closes the connections holding the most: ``slow`` for queues, close
code 1009 for a message in progress. Once a second it reads RSS and, when the accounted memory fell
by :data:`TRIM_AFTER` since, hands freed heap back to the system (glibc ``malloc_trim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import time
from collections import deque
from collections.abc import Callable

from livedata.core.budget import Budget
from livedata.server.conn import Conn
from livedata.server.sinks import WsSink
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.monitor")

LAG_PERIOD_S = 0.05
LAG_WINDOW_S = 10.0
SAMPLE_EVERY = 10
"""Queues and inbound messages are summed every this many lag ticks (half a second)."""
TRIM_AFTER = 32 << 20


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    return lambda: fn(0)


def rss_bytes() -> int:
    """The process's resident set (0 where ``/proc`` is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Monitor:
    def __init__(self, budget: Budget, conns: set[Conn]) -> None:
        self.budget = budget
        self.conns = conns
        self.task: asyncio.Task[None] | None = None
        self.lags: deque[tuple[float, float, float]] = deque()
        """(time, lag, busy) of the ticks that woke late, within the last :data:`LAG_WINDOW_S`."""
        self.max_lag = 0.0
        self.max_busy = 0.0
        self.rss = rss_bytes()
        self.shed = {"queues": 0, "inbound": 0}
        """Connections closed because their kind was over its share of the budget."""
        self._trim = _malloc_trim()
        self._high = 0

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="resource-monitor")

    async def close(self) -> None:
        task, self.task = self.task, None
        await cancel_and_wait(task)

    def _recent(self) -> deque[tuple[float, float, float]]:
        now = time.monotonic()
        lags = self.lags
        while lags and lags[0][0] < now - LAG_WINDOW_S:
            lags.popleft()
        return lags

    @property
    def lag(self) -> float:
        """The largest loop lag seen in the last :data:`LAG_WINDOW_S` seconds."""
        return max((lag for _, lag, _ in self._recent()), default=0.0)

    @property
    def busy(self) -> float:
        """The largest part of a loop lag spent working, in the last :data:`LAG_WINDOW_S` seconds."""
        return max((busy for _, _, busy in self._recent()), default=0.0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = 0
        last_rss = loop.time()
        cpu = time.thread_time()
        while True:
            due = loop.time() + LAG_PERIOD_S
            await asyncio.sleep(LAG_PERIOD_S)
            now = loop.time()
            lag = now - due
            used, cpu = time.thread_time() - cpu, time.thread_time()
            if lag > 0.005:
                busy = min(lag, used)
                self.lags.append((time.monotonic(), lag, busy))
                self.max_lag = max(self.max_lag, lag)
                self.max_busy = max(self.max_busy, busy)
            tick += 1
            if tick % SAMPLE_EVERY == 0:
                try:
                    self.sample()
                except Exception:  # never let accounting take the server down
                    log.exception("sampling the connections failed")
            if now - last_rss >= 1.0:
                last_rss = now
                self.rss = rss_bytes()
                self._maybe_trim()

    def sample(self) -> None:
        """Count the connections' queues and partial messages; shed what is over its share."""
        conns = [c for c in self.conns if not c.close_reason]
        queued = [(c.transport.get_write_buffer_size(), c) for c in conns]
        over = self.budget.measure("queues", sum(q for q, _ in queued))
        if over:
            self._shed(queued, over, "queues")
        inbound = [(c.rx_pending, c) for c in conns if c.rx_pending]
        over = self.budget.measure("inbound", sum(q for q, _ in inbound))
        if over:
            self._shed(inbound, over, "inbound")

    def _shed(self, held: list[tuple[int, Conn]], over: int, kind: str) -> None:
        held.sort(key=lambda x: x[0], reverse=True)
        for n, conn in held:
            if over <= 0 or n <= 0:
                break
            over -= n
            self.shed[kind] += 1
            log.info("closing a connection from %s holding %d bytes of %s: the memory budget's share is full",
                     conn.peer, n, kind)
            if kind == "queues":
                if conn.sink is not None:
                    conn.sink.close_slow()
                else:
                    conn.close("slow")
                    conn.abort()
            else:
                sink = conn.sink
                conn.close("too big")
                if isinstance(sink, WsSink):
                    sink.kill("too big")
                else:
                    conn.abort()
        self.budget.measure(kind, sum(n for n, c in held if not c.close_reason))

    def _maybe_trim(self) -> None:
        total = self.budget.total
        self._high = max(self._high, total)
        if self._trim is not None and self._high - total >= TRIM_AFTER:
            self._high = total
            with contextlib.suppress(Exception):
                self._trim()
