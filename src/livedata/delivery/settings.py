"""Delivery's tunables, in one typed object passed to the :class:`~livedata.delivery.hub.Hub`.

The defaults are what the benchmarks were tuned with (benchmarks/README.md); tests pass other
values (say ``step_subs=1``) instead of patching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    step_subs: int = 500
    """Subscribers a round writes to before it lets the loop run (about 3 ms on the fast path)."""
    ring: int = 512
    """Chunks a feed remembers, to close the seam without asking the broker..."""
    ring_bytes: int = 1 << 20
    """... and at most about this many bytes of them (chunks' estimated sizes)."""
    flush_grace: float = 0.2
    max_grace_s: float = 0.02
    """A batching feed's grace: this share of its interval, at most this many s (``core/pacing.py``)."""
    history_page_bytes: int = 1 << 20
    """A backfill reads history from the broker in pages of about this many bytes (estimated in
    memory), and holds that much of the memory budget (kind ``backfill``) while it sends one."""
    history_packet_share: float = 0.25
    """A backfill packet holds about this share of the connection's buffer cap (``--buffer-bytes``),
    and the next one is written when the queue is back below it (``FlowPolicy.drain_below``)."""
    backfill_steps: int = 4
    """Backfill packets laid out and encoded at once, server-wide: many backfills ready together
    take turns, so one turn of the event loop holds a few packets' work, not one per backfill."""
    backfill_wait_s: float = 10.0
    """A backfill waits this long for room in the memory budget before it gives up with an error."""
    history_points_per_packet: int = 250_000
    """Values in one backfill packet at most (fewer rows when a channel has many fields); packets are
    also cut by bytes (``history_packet_share``)."""
    history_min_rows: int = 1000
    """Rows in one backfill packet at least by the values cap, however many fields a channel has
    (the byte target may still cut a packet smaller)."""

    def __post_init__(self) -> None:
        if self.step_subs < 1 or self.ring < 1 or self.history_min_rows < 1:
            raise ValueError("step_subs, ring and history_min_rows must be at least 1")
