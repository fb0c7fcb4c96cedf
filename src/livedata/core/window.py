"""A reorder window: hold points a little while, then release them in time order. Pure.

Pushes from several devices (or one device over a flaky link) arrive slightly out of order. A
channel pushed with ``reorder_ms=N`` holds each point for at most N ms after it arrived; when the
oldest held point is due, every held point up to the newest time among the due ones is released,
sorted by time (ties keep arrival order). A point that arrives after a later point was released
is late, as without a window; nothing is dropped and nothing waits longer than its window.

The clock is injected (milliseconds, any origin), so the buffer is tested without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from livedata.core.clock import monotonic_ms

T = TypeVar("T")

MAX_REORDER_MS = 60_000


class ReorderBuffer(Generic[T]):
    """Items with a point time, held until their deadline, released in time order."""

    def __init__(self, clock: Callable[[], float] = monotonic_ms) -> None:
        self.clock = clock
        self._seq = itertools.count()
        self._by_time: list[tuple[int, int, T]] = []
        self._by_deadline: list[tuple[float, int, int]] = []
        self._released: set[int] = set()

    def __len__(self) -> int:
        return len(self._by_time)

    def add(self, items: Iterable[tuple[int, T]], hold_ms: float) -> None:
        """Hold ``(time_ms, item)`` pairs for ``hold_ms`` from now."""
        if not 0 <= hold_ms <= MAX_REORDER_MS:
            raise ValueError(f"hold_ms must be 0..{MAX_REORDER_MS}, got {hold_ms}")
        deadline = self.clock() + hold_ms
        for t, item in items:
            seq = next(self._seq)
            heapq.heappush(self._by_time, (t, seq, item))
            heapq.heappush(self._by_deadline, (deadline, seq, t))

    def next_due(self) -> float | None:
        """Clock time at which :meth:`pop_due` will next release something (None: empty)."""
        self._skip_released()
        return self._by_deadline[0][0] if self._by_deadline else None

    def pop_due(self, now: float | None = None) -> list[tuple[int, T]]:
        """Release the due items, and every held item not newer than the newest due one, sorted."""
        now = self.clock() if now is None else now
        self._skip_released()
        horizon: int | None = None
        while self._by_deadline and self._by_deadline[0][0] <= now:
            _, seq, t = heapq.heappop(self._by_deadline)
            if seq in self._released:
                self._released.discard(seq)
                continue
            horizon = t if horizon is None else max(horizon, t)
        if horizon is None:
            return []
        out: list[tuple[int, T]] = []
        while self._by_time and self._by_time[0][0] <= horizon:
            t, seq, item = heapq.heappop(self._by_time)
            out.append((t, item))
            self._released.add(seq)
        self._skip_released()
        return out

    def pop_all(self) -> list[tuple[int, T]]:
        """Release everything, in time order (shutdown, channel deleted)."""
        out = [(t, item) for t, _, item in sorted(self._by_time)]
        self._by_time.clear()
        self._by_deadline.clear()
        self._released.clear()
        return out

    def _skip_released(self) -> None:
        heap = self._by_deadline
        while heap and heap[0][1] in self._released:
            self._released.discard(heapq.heappop(heap)[1])
