"""What delivery counts, as a protocol: the server injects its metrics, tests inject nothing.

Delivery never imports ``prometheus_client`` or the server's metrics: it calls these methods, at
most once per delivery step (not per subscriber) on the fast path.
"""

from __future__ import annotations

from typing import Protocol


class Stats(Protocol):
    def delivered(self, channel: str, points: int) -> None:
        """``points`` of ``channel`` were written to subscribers (counted once per subscriber)."""
        ...

    def late(self, channel: str, points: int) -> None:
        """``points`` arrived older than the channel's newest point before them."""
        ...

    def round_took(self, seconds: float) -> None:
        """A feed's delivery round (every subscriber visited once) took ``seconds``."""
        ...

    def overrun(self) -> None:
        """A batched round took longer than its interval."""
        ...

    def subscriptions_changed(self, delta: int) -> None:
        """The number of open subscriptions changed by ``delta``."""
        ...


class NullStats:
    """Counts nothing (tests, and embedding delivery without metrics)."""

    def delivered(self, channel: str, points: int) -> None:
        pass

    def late(self, channel: str, points: int) -> None:
        pass

    def round_took(self, seconds: float) -> None:
        pass

    def overrun(self) -> None:
        pass

    def subscriptions_changed(self, delta: int) -> None:
        pass
