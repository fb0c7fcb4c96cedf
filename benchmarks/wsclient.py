"""A tiny blocking WebSocket client for the single-reader scenarios (backfill, why-streaming)."""

from __future__ import annotations

import socket
import time
from typing import Any

import msgspec

from benchmarks.common import HOST
from benchmarks.loadgen import ws_frame, ws_handshake


class WsClient:
    def __init__(self, port: int, path: str = "/api/ws", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.sendall(ws_handshake(path, port))
        self.buf = bytearray()
        self.bytes_in = 0
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        if self.buf[9:12] != b"101":
            raise ConnectionError(f"handshake failed: {bytes(self.buf[:200])!r}")
        del self.buf[:end + 4]

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed by the server")
        self.bytes_in += len(data)
        self.buf += data

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(ws_frame(msgspec.json.encode(obj)))

    def recv(self) -> bytes:
        """The next text message (answers pings, raises on close)."""
        while True:
            buf = self.buf
            while len(buf) < 2:
                self._fill()
            ln, h = buf[1] & 0x7F, 2
            if ln == 126:
                while len(buf) < 4:
                    self._fill()
                ln, h = int.from_bytes(buf[2:4], "big"), 4
            elif ln == 127:
                while len(buf) < 10:
                    self._fill()
                ln, h = int.from_bytes(buf[2:10], "big"), 10
            while len(buf) < h + ln:
                self._fill()
            op = buf[0] & 0x0F
            payload = bytes(buf[h:h + ln])
            del buf[:h + ln]
            if op == 1:
                return payload
            if op == 9:
                self.sock.sendall(ws_frame(payload, 0xA))
            elif op == 8:
                raise ConnectionError(f"closed: {payload[:100]!r}")

    def close(self) -> None:
        self.sock.close()


def wait_data(client: WsClient, timeout: float = 60.0) -> bytes:
    """Read until the first ``data`` message (the first message of a socket is ``hello``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        msg = client.recv()
        if msg.startswith(b'{"type":"data"'):
            return msg
        if msg.startswith(b'{"type":"error"'):
            raise RuntimeError(msg[:200].decode(errors="replace"))
    raise TimeoutError("no data message")


def rows_in(msg: bytes) -> int:
    """Rows of a ``data`` message, counted on the bytes (no parse)."""
    i = msg.find(b'"values":[[')
    if i < 0:
        return 0
    i += 11
    j = msg.find(b"]", i)
    return 0 if j == i else msg.count(b",", i, j) + 1


def read_rows(client: WsClient, want: int, timeout: float) -> tuple[int, float]:
    """Read until ``want`` rows arrived; returns (rows, seconds)."""
    t0 = time.perf_counter()
    rows = 0
    while rows < want and time.perf_counter() - t0 < timeout:
        msg = client.recv()
        if msg.startswith(b'{"type":"data"'):
            rows += rows_in(msg)
    return rows, time.perf_counter() - t0
