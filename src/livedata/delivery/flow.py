"""The slow-reader policy: when a writer writes, holds, or closes a connection. One place.

Every writer to a client — the hub's fast path and its slow path, the reference stream's ticker,
and ``Conn.send_parts`` — decides with these thresholds, read from one :class:`FlowPolicy` per
connection (the hot loops copy the numbers they need into their per-subscriber tuples once, when
the subscriber joins, instead of calling in here per write):

``write``
    Unsent bytes at or below :attr:`FlowPolicy.hold_above`: write at once.
``hold``
    Above it (more than half the cap queued): the hub stops writing live packets to that reader
    and holds what it is owed, to send it as one coalesced packet once the queue drains. The
    reference stream has nothing to hold (it is a tick, not a log) and keeps writing.
``close``
    Above :attr:`FlowPolicy.cap` (queued bytes, or held values at :attr:`FlowPolicy.bytes_per_value`
    each), or no progress at all for :attr:`FlowPolicy.stall_s` while a backfill waits: closed with
    the reason ``slow``. The client resumes with ``since`` (docs/guarantees.md).

Backfill (history) waits until the queue is at or below :attr:`FlowPolicy.drain_below` before it
writes its next packet, so one reader's history never queues more than about a cap at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BYTES_PER_VALUE = 12
"""Rough encoded size of one value, to bound what a lagging subscription may hold back."""
STALL_S = 30.0
"""A backfill whose reader takes no byte for this long is closed as slow."""


@dataclass(frozen=True, slots=True)
class FlowPolicy:
    """The thresholds for one connection whose outgoing buffer may hold ``cap`` bytes."""

    cap: int
    """Unsent bytes above which the connection is closed as ``slow`` (``--buffer-bytes``)."""
    stall_s: float = STALL_S
    bytes_per_value: int = BYTES_PER_VALUE
    hold_above: int = field(init=False)
    """Unsent bytes above which live packets are held and coalesced (half the cap)."""
    drain_below: int = field(init=False)
    """A waiting backfill writes again once unsent bytes are at or below this (a quarter of the cap)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hold_above", self.cap // 2)
        object.__setattr__(self, "drain_below", self.cap // 4)

    def holds_too_much(self, values: int) -> bool:
        """True when ``values`` held back for a lagging reader would pass the cap once encoded."""
        return values * self.bytes_per_value > self.cap
