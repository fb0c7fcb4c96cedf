"""What delivery needs of a connection: the :class:`Sink` protocol and its fast path, the lane.

The server's carriers (``livedata.server.sinks``) implement these; delivery never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from livedata.delivery.flow import FlowPolicy


class Sink(Protocol):
    """How one connection writes messages (one implementation per carrier)."""

    def send(self, msg: bytes, position: str | None = None, force: bool = False) -> bool:
        """Write one complete message. ``force`` may pass the buffer cap (history)."""
        ...

    def send_data(self, prefix: bytes, body: bytes, position: str | None, force: bool = False) -> bool:
        """Write ``prefix + body`` as one message; the body is shared with other subscribers."""
        ...

    async def drain(self) -> None:
        """Wait until the connection's buffer is low again (:attr:`FlowPolicy.drain_below`)."""
        ...

    @property
    def is_open(self) -> bool: ...

    @property
    def pressured(self) -> bool:
        """True while more than :attr:`FlowPolicy.hold_above` bytes are still queued."""
        ...

    def close_slow(self) -> None:
        """Close the connection with the reason ``slow``."""
        ...

    @property
    def flow(self) -> FlowPolicy:
        """The connection's slow-reader thresholds."""
        ...

    @property
    def idle(self) -> bool:
        """True when nothing was written since the last call (for heartbeats)."""
        ...


class Outlet(Protocol):
    """What the fast path reads and counts on a connection (``server.conn.Conn``)."""

    close_reason: str
    bytes_out: int


Framer = Callable[[bytes, bytes, str | None], bytes]
"""``(prefix, body, position) -> bytes`` on the wire; depends only on the carrier."""

Lane = tuple[Outlet, Callable[[], int], Callable[[bytes], object], int, Framer]
"""A sink's fast path, from its optional ``lane()``: (outlet, the transport's
``get_write_buffer_size``, its ``write``, the hold threshold in bytes (:attr:`FlowPolicy.hold_above`),
and the :data:`Framer`). Subscribers whose lanes have equal framers and id prefixes get the very
same framed bytes."""
