"""Recently accepted ``Idempotency-Key`` values, so a retried push is stored once."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

IDEMPOTENCY_KEYS = 10_000
IDEMPOTENCY_TTL_S = 600.0
MAX_KEY_LEN = 200


class IdempotencyCache:
    """Recently accepted ``Idempotency-Key`` values: a bounded LRU with a time to live.

    A key is *in flight* while its first request is being stored; a retry that arrives meanwhile
    waits for it and then gets the same answer (or goes ahead, if the first one failed).
    """

    def __init__(self, size: int = IDEMPOTENCY_KEYS, ttl_s: float = IDEMPOTENCY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.clock = clock
        self._done: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def accepted(self, key: str) -> bool:
        expires = self._done.get(key)
        if expires is None:
            return False
        if expires < self.clock():
            del self._done[key]
            return False
        self._done.move_to_end(key)
        return True

    def add(self, key: str) -> None:
        self._done[key] = self.clock() + self.ttl_s
        self._done.move_to_end(key)
        while len(self._done) > self.size:
            self._done.popitem(last=False)
        now = self.clock()
        while self._done:  # drop expired keys from the old end
            oldest, expires = next(iter(self._done.items()))
            if expires >= now:
                break
            del self._done[oldest]

    async def begin(self, key: str) -> bool:
        """True when ``key`` was already accepted; else mark it in flight (call :meth:`end`)."""
        while True:
            if self.accepted(key):
                return True
            pending = self._inflight.get(key)
            if pending is None:
                self._inflight[key] = asyncio.get_running_loop().create_future()
                return False
            await asyncio.shield(pending)

    def end(self, key: str, ok: bool) -> None:
        if ok:
            self.add(key)
        pending = self._inflight.pop(key, None)
        if pending is not None and not pending.done():
            pending.set_result(ok)
