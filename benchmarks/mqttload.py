"""MQTT load for the sources benchmark: a publisher that costs almost nothing.

The packets (CONNECT, PUBLISH) are encoded by hand and written in large ``sendall`` calls, so the
publisher process spends its CPU on the kernel, not on an MQTT library, and the machine's cores
go to mosquitto and livedata. Payloads are JSON objects ``{"ts": <send time, epoch ms>, "v": n}``:
the point's time is the time of sending, which is what the latency is measured from.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    vh = _s(b"MQTT") + bytes([4, 2]) + struct.pack("!H", keepalive) + _s(client_id.encode())
    return b"\x10" + _varint(len(vh)) + vh


def publish_packet(topic: bytes, payload: bytes, qos: int = 0, mid: int = 1) -> bytes:
    vh = _s(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(vh)) + vh


class Publisher:
    """One MQTT connection publishing to ``topics`` round-robin (QoS 0 or 1)."""

    def __init__(self, port: int, topics: int = 100, qos: int = 0, prefix: str = "bench",
                 host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(f"bench-pub-{time.monotonic_ns()}"))
        ack = self.sock.recv(4)
        if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {ack!r}")
        self.topics = [f"{prefix}/t{i}".encode() for i in range(topics)]
        self.qos = qos
        self.sent = 0
        self._mid = 0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)  # PUBACKs, PINGRESPs
        self._reader.start()

    def _drain(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.sock.recv(1 << 16):
                    return
        except OSError:
            return

    def packets(self, n: int, stamp_ms: int | None = None) -> Iterator[bytes]:
        """``n`` PUBLISH packets; ``stamp_ms`` None: the time of building each one."""
        topics = self.topics
        k = len(topics)
        for _ in range(n):
            i = self.sent
            ts = stamp_ms if stamp_ms is not None else time.time_ns() // 1_000_000
            self._mid = self._mid % 65535 + 1
            yield publish_packet(topics[i % k], b'{"ts":%d,"v":%d}' % (ts, i), self.qos, self._mid)
            self.sent += 1

    def burst(self, n: int, chunk: int = 2000) -> float:
        """Publish ``n`` messages as fast as the socket takes them; returns the seconds it took."""
        pre = list(self.packets(n, time.time_ns() // 1_000_000))
        t0 = time.perf_counter()
        for i in range(0, n, chunk):
            self.sock.sendall(b"".join(pre[i:i + chunk]))
        return time.perf_counter() - t0

    def paced(self, rate: float, seconds: float, tick_s: float = 0.002) -> int:
        """Publish ``rate`` messages per second for ``seconds``, stamped when sent (every ``tick_s``)."""
        start = time.perf_counter()
        done = 0
        while True:
            now = time.perf_counter() - start
            if now >= seconds:
                return done
            due = int(now * rate) - done
            if due > 0:
                self.sock.sendall(b"".join(self.packets(due)))
                done += due
            time.sleep(tick_s)

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
            self.sock.close()
        except OSError:
            pass


__all__ = ["Publisher", "connect_packet", "publish_packet"]
