"""Carrier framing, pure: the bytes that wrap one encoded message on each carrier.

A message body is encoded once and shared; these functions add the few bytes each carrier needs
around it (an HTTP chunk header, a WebSocket frame header, SSE ``id:``/``data:`` lines).
"""

from __future__ import annotations

import struct

_CACHE_MAX = 4096
_chunk_headers: dict[int, bytes] = {}


def chunk_header(length: int) -> bytes:
    """HTTP/1.1 chunked-encoding header for a chunk of ``length`` bytes (the trailer is CRLF)."""
    head = _chunk_headers.get(length)
    if head is None:  # a feed's subscribers share a length: build each header once, not per write
        if len(_chunk_headers) >= _CACHE_MAX:
            _chunk_headers.clear()
        head = _chunk_headers[length] = b"%x\r\n" % length
    return head


CHUNK_TRAILER = b"\r\n"


def chunked(payload: bytes) -> bytes:
    """``payload`` as one complete HTTP/1.1 chunk: size in hex, CRLF, the data, CRLF."""
    return chunk_header(len(payload)) + payload + CHUNK_TRAILER


_WS_TEXT_SMALL = tuple(struct.pack("!BB", 0x81, n) for n in range(126))
_ws_text_headers: dict[int, bytes] = {}


def ws_header(length: int, opcode: int = 0x1) -> bytes:
    """Header of one unmasked, final WebSocket frame (server to client, RFC 6455 section 5.2)."""
    if opcode == 0x1:  # text frames are the hot path: one header per length, shared
        if length < 126:
            return _WS_TEXT_SMALL[length]
        head = _ws_text_headers.get(length)
        if head is None:
            if len(_ws_text_headers) >= _CACHE_MAX:
                _ws_text_headers.clear()
            head = _ws_text_headers[length] = _ws_header(length, opcode)
        return head
    return _ws_header(length, opcode)


def _ws_header(length: int, opcode: int) -> bytes:
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
