"""One client connection's outgoing side and lifecycle: direct writes, the byte cap, liveness, closing.

Writers never await: the hub hands every connection the same encoded bytes and each write is a
synchronous ``transport.write`` (``send_parts`` here; the hub's and the reference ticker's fast
paths read ``close_reason`` and the queue themselves, against thresholds taken from this
connection's :class:`~livedata.delivery.flow.FlowPolicy`). A connection whose unsent bytes pass
the cap is closed with the reason ``slow`` instead of holding up the hub or anyone else (see
docs/guarantees.md). Every carrier's connection is registered in
:class:`~livedata.server.connections.Connections`, which heartbeats, pings and closes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from livedata.delivery.flow import FlowPolicy
from livedata.delivery.sink import Sink


class Closable(Protocol):
    """What the pinger reads of a WebSocket: has a close frame been sent or received."""

    @property
    def closed(self) -> bool: ...


class Conn:
    """The writable end of one client connection (HTTP stream, WebSocket, or reference stream).

    One per connected socket, so it is kept small (10,000 idle readers add up): slots only.
    """

    __slots__ = ("_on_close", "bytes_out", "close_reason", "closed", "flow", "peer", "ping_at", "ping_sent",
                 "rx_at", "rx_pending", "sink", "transport", "ws")

    def __init__(
        self,
        transport: asyncio.BaseTransport | None,
        flow: FlowPolicy,
        *,
        peer: str = "",
        on_close: Callable[[Conn, str], None] | None = None,
    ) -> None:
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection already closed")
        # uvloop's transports are not subclasses of asyncio.WriteTransport, but behave as one.
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
        self.flow = flow
        self.peer = peer
        self.bytes_out = 0
        self.close_reason = ""
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._on_close = on_close
        self.sink: Sink | None = None
        """The carrier's sink once attached (heartbeats go to it); None for the reference stream."""
        self.ws: Closable | None = None
        """The WebSocket, for ping/pong (see ``connections.Pinger``); None for HTTP streams."""
        self.rx_at = time.monotonic()
        """When the last bytes (of any frame, pongs included) came from the peer (WebSockets)."""
        self.ping_at = 0.0
        """When the pinger last pinged it."""
        self.ping_sent = 0
        """Bytes the kernel had taken of what was written to it, when it was pinged."""
        self.rx_pending = 0
        """Bytes received since the last complete WebSocket message: a message in progress, which
        the memory budget counts (kind ``inbound``, sampled by ``monitor.py``)."""

    @property
    def is_open(self) -> bool:
        return not self.close_reason and not self.transport.is_closing()

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size()

    def touch(self) -> None:
        """Bytes came from the peer: it is alive."""
        self.rx_at = time.monotonic()

    def send_parts(self, parts: Sequence[bytes]) -> bool:
        """Write several buffers as one (a per-connection header and a shared body)."""
        # The fan-out slow path (once per subscriber per packet off the lane): ``is_open`` inlined.
        transport = self.transport
        if self.close_reason or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self.flow.cap:
            self.close("slow")
            return False
        transport.writelines(parts)
        self.bytes_out += sum(map(len, parts))
        return True

    def close(self, reason: str) -> None:
        """Mark the connection closed for ``reason``; the handler that owns it finishes it."""
        if self.close_reason:
            return
        self.close_reason = reason
        if not self.closed.done():  # a cancelled waiter cancels the future too
            self.closed.set_result(reason)
        if self._on_close is not None:
            self._on_close(self, reason)

    def abort(self) -> None:
        """Drop the transport at once (used for ``slow``: its buffer will never drain in time)."""
        self.transport.abort()
