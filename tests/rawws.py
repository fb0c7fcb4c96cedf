"""A WebSocket client by hand, for tests that must break the protocol or stop reading."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    head = struct.pack("!BB", first, 0x80 | n) if n < 126 else (
        struct.pack("!BBH", first, 0x80 | 126, n) if n < 65536 else struct.pack("!BBQ", first, 0x80 | 127, n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_ws(port: int, rcvbuf: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open ``/api/ws`` by hand; ``rcvbuf`` shrinks the kernel's receive buffer (a slow reader)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0]
    return reader, writer


async def read_until_close(reader: asyncio.StreamReader,
                           wait_s: float = 20) -> tuple[list[dict[str, Any]], int | None, str]:
    """Server messages until its close frame: (messages, close code, reason). Code None: no close frame."""
    messages: list[dict[str, Any]] = []
    try:
        while True:
            b1, b2 = await asyncio.wait_for(reader.readexactly(2), wait_s)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(n)
            if b1 & 0x0F == 0x8:
                code = int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else None
                return messages, code, payload[2:].decode(errors="replace")
            if b1 & 0x0F == 0x1:
                messages.append(json.loads(payload))
    except (asyncio.IncompleteReadError, ConnectionError):
        return messages, None, ""
