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
    """Chunks a feed remembers, to close the seam without asking the broker."""
    flush_grace: float = 0.2
    max_grace_s: float = 0.02
    """A batching feed's grace: this share of its interval, at most this many s (``core/pacing.py``)."""
    history_points_per_packet: int = 250_000
    """Values in one backfill packet (fewer rows when a channel has many fields)."""
    history_min_rows: int = 1000
    """Rows in one backfill packet at least, however many fields a channel has."""

    def __post_init__(self) -> None:
        if self.step_subs < 1 or self.ring < 1 or self.history_min_rows < 1:
            raise ValueError("step_subs, ring and history_min_rows must be at least 1")
