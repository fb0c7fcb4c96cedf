"""Carrier adapters: how one encoded message becomes bytes on each carrier. Thin by design."""

from __future__ import annotations

import asyncio

from livedata.core.wire import CHUNK_TRAILER, chunk_header, sse_event, ws_close_frame, ws_header
from livedata.delivery.flow import FlowPolicy
from livedata.delivery.sink import Lane
from livedata.server.conn import Conn


class BaseSink:
    __slots__ = ("_seen", "conn")  # one per connection: no per-instance dict (10,000 idle sockets add up)
    carrier = "base"

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self._seen = 0

    @property
    def is_open(self) -> bool:
        return self.conn.is_open

    @property
    def flow(self) -> FlowPolicy:
        return self.conn.flow

    @property
    def pressured(self) -> bool:
        return self.conn.buffered > self.conn.flow.hold_above

    def close_slow(self) -> None:
        if self.conn.is_open:
            self.conn.close("slow")
            self.kill("slow")

    @property
    def idle(self) -> bool:
        out = self.conn.bytes_out
        idle = out == self._seen
        self._seen = out
        return idle

    async def drain(self) -> None:
        """Wait until the buffer is low (``flow.drain_below``); a reader that takes nothing for
        ``flow.stall_s`` is closed as slow."""
        conn = self.conn
        low, stall_s = conn.flow.drain_below, conn.flow.stall_s
        loop = asyncio.get_running_loop()
        last, since = conn.buffered, loop.time()
        # Only the backfill path waits here; polling keeps the hot path free of per-write futures.
        while conn.is_open and conn.buffered > low:
            await asyncio.sleep(0.005)
            now, size = loop.time(), conn.buffered
            if size < last:
                last, since = size, now
            elif now - since > stall_s:
                self.close_slow()
                return

    @classmethod
    def data_parts(cls, prefix: bytes, body: bytes, position: str | None) -> list[bytes]:
        """``prefix + body`` framed for this carrier: the buffers that go on the wire, in order."""
        raise NotImplementedError

    def send_data(self, prefix: bytes, body: bytes, position: str | None, force: bool = False) -> bool:
        """One data message: the shared body is written as it is, next to its small framing."""
        return self._write(self.data_parts(prefix, body, position), force)

    @classmethod
    def frame_data(cls, prefix: bytes, body: bytes, position: str | None) -> bytes:
        """:meth:`data_parts` joined into one buffer.

        The result depends only on the sink's class and the arguments, so the hub frames a packet
        once per (carrier, prefix) and hands the same bytes to every such subscriber.
        """
        return b"".join(cls.data_parts(prefix, body, position))

    def lane(self) -> Lane:
        """This connection's fast path for the hub (see ``livedata.delivery.sink.Lane``).

        Per subscriber per packet the hub then reads the close reason and the transport's queued
        bytes (above ``flow.hold_above``: pressured, the slow path decides), and writes the framed
        packet it shares with every subscriber of the same carrier and id prefix: one
        ``transport.write`` of shared bytes, no call into this class.
        """
        conn = self.conn
        transport = conn.transport
        return conn, transport.get_write_buffer_size, transport.write, conn.flow.hold_above, type(self).frame_data

    def _write(self, parts: list[bytes], force: bool) -> bool:
        conn = self.conn
        if force and conn.is_open:
            conn.transport.writelines(parts)
            conn.bytes_out += sum(map(len, parts))
            return True
        if conn.send_parts(parts):
            return True
        if conn.close_reason == "slow":
            self.kill(conn.close_reason)
        return False

    def kill(self, reason: str) -> None:
        """Close the transport after what is buffered, and abort it if the peer never reads."""
        transport = self.conn.transport
        transport.close()
        asyncio.get_running_loop().call_later(2.0, transport.abort)


CLOSE_CODES = {
    "slow": (4000, "slow"),
    "too big": (1009, "message too big: the server's memory budget for messages in progress is full"),
}
"""WebSocket close code and reason per close reason (docs/protocol.md); anything else is 1001."""


class WsSink(BaseSink):
    """WebSocket: one text frame per message, header built here, payload shared."""

    __slots__ = ()
    carrier = "ws"

    def send(self, msg: bytes, position: str | None = None, force: bool = False) -> bool:
        return self._write([ws_header(len(msg)), msg], force)

    @classmethod
    def data_parts(cls, prefix: bytes, body: bytes, position: str | None) -> list[bytes]:
        return [ws_header(len(prefix) + len(body)), prefix, body]

    def kill(self, reason: str) -> None:
        code, text = CLOSE_CODES.get(reason, (1001, reason))
        if not self.conn.transport.is_closing():
            self.conn.transport.write(ws_close_frame(code, text))
        super().kill(reason)


class NdjsonSink(BaseSink):
    """HTTP stream, one JSON message per line, one HTTP chunk per message."""

    __slots__ = ()
    carrier = "ndjson"

    def send(self, msg: bytes, position: str | None = None, force: bool = False) -> bool:
        return self._write([chunk_header(len(msg) + 1), msg, b"\n" + CHUNK_TRAILER], force)

    @classmethod
    def data_parts(cls, prefix: bytes, body: bytes, position: str | None) -> list[bytes]:
        return [chunk_header(len(prefix) + len(body) + 1), prefix, body, b"\n" + CHUNK_TRAILER]


class SseSink(BaseSink):
    """Server-Sent Events: ``id:`` is the position so ``Last-Event-ID`` resumes."""

    __slots__ = ()
    carrier = "sse"

    def send(self, msg: bytes, position: str | None = None, force: bool = False) -> bool:
        event = sse_event(msg, position)
        return self._write([chunk_header(len(event)), event, CHUNK_TRAILER], force)

    @classmethod
    def data_parts(cls, prefix: bytes, body: bytes, position: str | None) -> list[bytes]:
        head = (b"id: " + position.encode() + b"\n" if position else b"") + b"data: "
        n = len(head) + len(prefix) + len(body) + 2
        return [chunk_header(n), head, prefix, body, b"\n\n" + CHUNK_TRAILER]
