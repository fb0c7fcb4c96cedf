"""Connections: a global limit, the per-address limit on every kind of connection, request heads and
bodies that must arrive in time, and /api/health answered at every limit."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from pathlib import Path

import aiohttp

from tests.resources.conftest import resource_server, victim, watch


def open_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(True)
    sock.connect(("127.0.0.1", port))
    return sock


def host(port: int) -> bytes:
    """A ``Host`` header naming the loopback server (any other name is a 403 from a server bound to
    loopback: it could be a page that re-pointed a DNS name at it)."""
    return f"Host: 127.0.0.1:{port}".encode()


def answer(sock: socket.socket, timeout: float = 5.0, whole: bool = False) -> bytes:
    """The response's head (``whole``: everything until the server closes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while whole or b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
    except (TimeoutError, ConnectionError):
        pass
    return data


class RawMetrics:
    """``/metrics`` over one keep-alive connection opened before a flood (new ones would be refused)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = open_socket(port)

    def get(self, name: str) -> float:
        self.sock.sendall(b"GET /metrics HTTP/1.1\r\n" + host(self.port) + b"\r\n\r\n")
        self.sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += self.sock.recv(65536)
        m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", body.decode(), re.M)
        assert m, name
        return float(m.group(1))


async def test_trickled_request_heads_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    """3,000 connections trickling a request head were all open after 40 s; now each is closed when
    its head has not arrived within --header-timeout, and the server answers everyone else."""
    server = resource_server("--header-timeout", "3")
    try:
        with watch(server, tmp_path) as w:
            async with victim(server.url):
                socks = [open_socket(server.port) for _ in range(1500)]
                t0 = time.monotonic()
                for second in range(3):  # a valid head, a byte a second: it never ends
                    for sock in socks:
                        with contextlib.suppress(OSError):  # closed already (over the per-address limit)
                            sock.send(b"GET /api/channels HTTP/1.1\r\nX-Slow: " if second == 0 else b"z")
                    await asyncio.sleep(1)
                await asyncio.sleep(max(0.0, 5 - (time.monotonic() - t0)))
                closed = 0
                for sock in socks:
                    sock.settimeout(0.5)
                    try:
                        closed += sock.recv(1) == b""  # the server closed it
                    except ConnectionError:  # or aborted it
                        closed += 1
                    except TimeoutError:  # still open
                        pass
                    sock.close()
                assert closed == len(socks), f"{len(socks) - closed} trickling connections still open"
        w.check()
    finally:
        server.stop()


async def test_the_per_address_limit_covers_every_connection_and_health_answers(tmp_path: Path) -> None:
    """Keep-alive HTTP connections count in --max-connections-per-ip as streams do; over it a
    connection gets 429, except /api/health."""
    server = resource_server("--max-connections-per-ip", "50")
    try:
        socks = [open_socket(server.port) for _ in range(50)]
        for sock in socks:
            sock.sendall(b"GET /api/openapi.json HTTP/1.1\r\n" + host(server.port) + b"\r\n\r\n")
        assert all(b" 200 " in answer(sock).split(b"\r\n")[0] for sock in socks)
        extra = open_socket(server.port)
        extra.sendall(b"GET /api/channels HTTP/1.1\r\n" + host(server.port) + b"\r\n\r\n")
        head = answer(extra)
        assert b" 429 " in head.split(b"\r\n")[0] and b"Retry-After" in head
        extra.close()
        health = open_socket(server.port)
        health.sendall(b"GET /api/health HTTP/1.1\r\n" + host(server.port) + b"\r\n\r\n")
        assert b" 200 " in answer(health).split(b"\r\n")[0]
        health.close()
        for sock in socks:
            sock.close()
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/api/channels") as r:
            assert r.status == 200
    finally:
        server.stop()


async def test_at_the_connection_limit_health_still_answers(tmp_path: Path) -> None:
    """20,000 connections used up the descriptors and /api/health failed; now the server stops at
    --max-connections, answers /api/health above it, and refuses the rest with 503."""
    server = resource_server("--max-connections", "400", "--max-connections-per-ip", "100000")
    try:
        with watch(server, tmp_path) as w:
            async with victim(server.url):
                metrics = RawMetrics(server.port)
                socks = [open_socket(server.port) for _ in range(450)]
                await asyncio.sleep(0.5)
                probe = open_socket(server.port)
                probe.sendall(b"GET /api/channels HTTP/1.1\r\n" + host(server.port) + b"\r\n\r\n")
                head = answer(probe)
                assert b" 503 " in head.split(b"\r\n")[0] and b"Retry-After" in head
                probe.close()
                more = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
                await asyncio.sleep(1)
                assert metrics.get("livedata_connections_refused") >= 100
                assert metrics.get("livedata_tcp_connections") <= 400 + 64
                for sock in socks + more:
                    sock.close()
                metrics.sock.close()
        w.check()
    finally:
        server.stop()


async def test_a_push_body_that_never_ends_times_out(tmp_path: Path) -> None:
    server = resource_server("--body-timeout", "2")
    try:
        sock = open_socket(server.port)
        sock.sendall(b"POST /api/push/slow/body HTTP/1.1\r\n" + host(server.port) + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"v\":")
        t0 = time.monotonic()
        head = answer(sock, timeout=10)
        assert time.monotonic() - t0 < 5
        reply = head + answer(sock, timeout=10, whole=True)
        assert b" 408 " in reply.split(b"\r\n")[0] and b"body-timeout" in reply
        sock.close()
    finally:
        server.stop()
