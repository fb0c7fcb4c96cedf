"""HTTP/1.1 by hand, for what client libraries will not send: two Host headers, none, HTTP/1.0,
HEAD followed by another request on the same connection, broken chunked or gzip bodies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False, wait_s: float = 5.0) -> Answer:
    """One response: status line, headers, and (unless ``head_only``) a Content-Length or chunked body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait_s)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if head_only or status in (204, 304) or status < 200:
        return Answer(status, headers)
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), wait_s)
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readline(), wait_s)).strip(), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), wait_s)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), wait_s)
    return Answer(status, headers, body)


async def request(port: int, raw: bytes, head_only: bool = False) -> Answer:
    """Send ``raw`` on a new connection; the first answer, or status 0 when the server closed the
    connection without one (it may reset a connection whose request it refused unread)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(raw)
            await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed while we were still writing: read what it said
        try:
            return await read_answer(reader, head_only)
        except (ConnectionError, asyncio.IncompleteReadError):
            return Answer(0)
    finally:
        writer.close()


def get(path: str, port: int, *headers: str, method: str = "GET", host: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {f'127.0.0.1:{port}' if host is None else host}", *headers, "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
