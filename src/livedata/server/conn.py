"""One place that owns a connection's outgoing side: direct writes, the byte cap, and closing.

Writers never await: the hub hands every connection the same encoded bytes and each write is a
synchronous ``transport.write`` (``send_parts`` here; the hub's and the reference ticker's fast
paths read ``close_reason``, the queue and ``cap`` themselves and write to the transport). A
connection whose unsent bytes pass its cap is closed with the reason ``slow`` instead of holding
up the hub or anyone else (see docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

log = logging.getLogger("livedata.conn")


class Conn:
    """The writable end of one client connection (HTTP stream or WebSocket)."""

    __slots__ = ("_on_close", "bytes_out", "cap", "close_reason", "closed", "peer", "transport")

    def __init__(
        self,
        transport: asyncio.BaseTransport | None,
        cap: int,
        *,
        peer: str = "",
        on_close: Callable[[Conn, str], None] | None = None,
    ) -> None:
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection already closed")
        # uvloop's transports are not subclasses of asyncio.WriteTransport, but behave as one.
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
        self.cap = cap
        self.peer = peer
        self.bytes_out = 0
        self.close_reason = ""
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._on_close = on_close

    @property
    def is_open(self) -> bool:
        return not self.close_reason and not self.transport.is_closing()

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size()

    def send_parts(self, parts: Sequence[bytes]) -> bool:
        """Write several buffers as one (a per-connection header and a shared body)."""
        # The fan-out hot path (once per subscriber per packet): ``is_open`` inlined.
        transport = self.transport
        if self.close_reason or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self.cap:
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
