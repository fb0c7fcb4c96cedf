"""Carrier framing, pure: the bytes that wrap one encoded message on each carrier.

A message body is encoded once and shared; these functions add the few bytes each carrier needs
around it (an HTTP chunk header, a WebSocket frame header, SSE ``id:``/``data:`` lines).
"""

from __future__ import annotations

import struct


def chunk_header(length: int) -> bytes:
    """HTTP/1.1 chunked-encoding header for a chunk of ``length`` bytes (the trailer is CRLF)."""
    return b"%x\r\n" % length


CHUNK_TRAILER = b"\r\n"


def ws_header(length: int, opcode: int = 0x1) -> bytes:
    """Header of one unmasked, final WebSocket frame (server to client, RFC 6455 section 5.2)."""
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def ws_close_frame(code: int, reason: str) -> bytes:
    """A complete WebSocket close frame with a status code and a reason (at most 123 bytes)."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return ws_header(len(payload), 0x8) + payload


def sse_event(data: bytes, event_id: str | None = None) -> bytes:
    """One Server-Sent Event. ``data`` must not contain newlines (compact JSON never does)."""
    if event_id is None:
        return b"data: " + data + b"\n\n"
    return b"id: " + event_id.encode() + b"\ndata: " + data + b"\n\n"
