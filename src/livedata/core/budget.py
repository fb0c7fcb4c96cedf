"""The memory budget: the one accountant that everything which grows with client input reserves
from and releases to. Pure (no clock, no I/O): the server measures what it samples and hands the
numbers in.

One limit, ``--max-memory``. Every byte a client can make the server hold is in one *kind*:

=============== ========================================================= ===========================
kind            what                                                      at the limit
=============== ========================================================= ===========================
``history``     points retained by the memory broker                      the oldest points of the
                                                                          channel that holds the most
                                                                          are dropped (never refused)
``schema``      channels and their fields                                 a push that adds one: 507
``held``        points held by the memory broker's reorder windows        a push that holds more: 429
                (bounded by ``--max-held-bytes``, capped at this share)   (the broker's one bound)
``ingest``      push bodies being read, parsed and checked                the push: 429, retry
``backfill``    history pages on their way to a subscriber                the subscription waits, then
                                                                          gets an ``error``
``queues``      bytes written for clients and not yet sent (sampled)      the largest queues are closed
                                                                          as ``slow``
``inbound``     WebSocket messages being received (sampled)               the largest are closed (1009)
``connections`` a fixed estimate per open connection                      new connections: ``503``
``caches``      bounded caches (idempotency keys, parser caches)          fixed: taken off the limit
=============== ========================================================= ===========================

The rule: the caches are a fixed amount, taken off the top when the server starts (``fixed``); of
the rest, everything but history and the caches (the *work*) may use at most half, and each kind at
most its share of the rest (:data:`SHARES`); history may use whatever the work leaves. The standing
kinds (schema and held points, which stay until deleted or flushed) have shares that add up to less
than the work's half, so whatever channels and reorder windows hold, at least an eighth of the rest
stays for the passing work (connections, pushes being parsed, backfills, queues). A reservation
that would pass a cap is refused (the caller answers with the error in the table); one that succeeds
while history is using the room it needs makes the budget ask the history's owner to trim
(``on_history_over``). So the accounted total stays at or below the limit, and history keeps at
least half of what the caches leave.

The figures are *estimates* of CPython object sizes (see :mod:`livedata.core.sizes`), not
measurements; docs/guarantees.md ("Resources") says how close they come to the process's RSS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

KINDS: Final = ("history", "schema", "held", "ingest", "backfill", "queues", "inbound", "connections", "caches")

WORK_SHARE: Final = 0.5
"""Everything but history together: at most this share of the limit."""

STANDING: Final = ("schema", "held")
"""Kinds that stay until their owner lets go (a channel deleted, a reorder window flushed)."""

SHARES: Final[dict[str, float]] = {
    "schema": 0.25,
    "held": 0.125,
    "ingest": 0.25,
    "backfill": 0.125,
    "queues": 0.25,
    "inbound": 0.125,
    "connections": 0.25,
}
"""Each kind of work at most this share of what the caches leave (they add up to more than
``WORK_SHARE``: a kind may use more while the others are idle, but all of them together stay within
it). The standing kinds' shares add up to less than ``WORK_SHARE``."""

TRIM_SLACK: Final = 1 / 64
"""History trimmed for room is trimmed this share of the limit further, so that a full budget
trims once per so many bytes published instead of at every push."""


class Refused(Exception):
    """Work refused by a limit (memory, generators, ...): the message says which and what to do."""


class BudgetError(Refused):
    """A reservation the budget refused: ``kind`` says which, the message what to do."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Budget:
    """The accountant of one server process: ``limit`` bytes in :data:`KINDS`."""

    def __init__(self, limit: int, fixed: int = 0) -> None:
        if not 0 <= fixed < limit:
            raise ValueError("the memory budget must be positive and more than its fixed part")
        self.limit = limit
        self.fixed = fixed
        """Bytes taken off the top when the server starts (the bounded caches)."""
        rest = limit - fixed
        self.work_limit = int(rest * WORK_SHARE)
        self.caps: dict[str, int] = {k: int(rest * s) for k, s in SHARES.items()}
        self.caps["caches"] = fixed
        self.used: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.used["caches"] = fixed
        self.work = 0
        """Bytes in every kind but history and the fixed part."""
        self.history = 0
        self.refused: dict[str, int] = dict.fromkeys(KINDS, 0)
        """Reservations refused, per kind (``livedata_memory_refused_total``)."""
        self.on_history_over: Callable[[int], None] | None = None
        """Called with the bytes of history to drop when history passes what the work leaves it
        (the memory broker trims; nothing is called when no one holds history)."""

    # --- reading ----------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return self.fixed + self.work + self.history

    @property
    def history_room(self) -> int:
        """Bytes history may hold now: the limit less the fixed part and the work."""
        return self.limit - self.fixed - self.work

    def free(self, kind: str) -> int:
        """Bytes a reservation of ``kind`` could still get."""
        return max(0, min(self.caps[kind] - self.used[kind], self.work_limit - self.work))

    # --- the work ---------------------------------------------------------------------------------

    def reserve(self, kind: str, n: int) -> bool:
        """Reserve ``n`` bytes of ``kind`` (not history, not the caches); False, and nothing
        reserved, when it would pass the kind's cap or the work's half."""
        if n <= 0:
            return True
        used = self.used[kind] + n
        if used > self.caps[kind] or self.work + n > self.work_limit:
            self.refused[kind] += 1
            return False
        self.used[kind] = used
        self.work += n
        self._check_history()
        return True

    def take(self, kind: str, n: int) -> None:
        """Count ``n`` bytes of ``kind`` that are held already (no refusal: it is too late to say no)."""
        if n > 0:
            self.used[kind] += n
            self.work += n
            self._check_history()

    def release(self, kind: str, n: int) -> None:
        if n > 0:
            n = min(n, self.used[kind])
            self.used[kind] -= n
            self.work -= n

    def measure(self, kind: str, n: int) -> int:
        """Set a sampled kind (queues, inbound) to ``n`` bytes; returns the bytes over its cap (or
        over the work's half of the limit), which the caller sheds."""
        n = max(0, n)
        self.work += n - self.used[kind]
        self.used[kind] = n
        self._check_history()
        return max(0, n - self.caps[kind], self.work - self.work_limit if n else 0)

    # --- history ----------------------------------------------------------------------------------

    def add_history(self, n: int) -> int:
        """Count ``n`` more bytes of history; returns how many to trim (0: it fits)."""
        self.history += n
        over = self.history - self.history_room
        return over + int(self.limit * TRIM_SLACK) if over > 0 else 0

    def drop_history(self, n: int) -> None:
        self.history = max(0, self.history - n)

    def _check_history(self) -> None:
        over = self.history - self.history_room
        if over > 0 and self.on_history_over is not None:
            self.on_history_over(over + int(self.limit * TRIM_SLACK))

    def snapshot(self) -> dict[str, int]:
        """Bytes per kind, history included."""
        return {**self.used, "history": self.history}


class Reservation:
    """Bytes of one kind held by one piece of work, returned in one call (idempotent)."""

    __slots__ = ("budget", "kind", "n")

    def __init__(self, budget: Budget, kind: str) -> None:
        self.budget = budget
        self.kind = kind
        self.n = 0

    def grow(self, n: int) -> bool:
        """Reserve ``n`` more; False (and nothing more reserved) when the budget refuses."""
        if not self.budget.reserve(self.kind, n):
            return False
        self.n += max(0, n)
        return True

    def close(self) -> None:
        n, self.n = self.n, 0
        self.budget.release(self.kind, n)
