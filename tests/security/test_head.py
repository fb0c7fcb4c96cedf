"""HEAD answers headers only, on every route (issue 16): a proxy that reuses the connection reads the
next answer where it starts. Raw HTTP/1.1 on one keep-alive connection: HEAD, then GET /api/health;
the second answer must be the first bytes after the HEAD's headers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer
from tests.security.rawhttp import get, read_answer

NDJSON, SSE, JSON = "application/x-ndjson", "text/event-stream", "application/json"
PATHS = [
    ("/", "Accept: text/html", 200, "text/html"),
    ("/", "Accept: */*", 200, NDJSON),  # the reference stream
    ("/?numSeries=3", "Accept: */*", 200, NDJSON),
    ("/?numSeries=0", "Accept: */*", 400, JSON),
    ("/api/stream?channel=random-walk", "Accept: */*", 200, NDJSON),
    ("/api/stream?channel=random-walk&from=now-1m", "Accept: text/event-stream", 200, SSE),
    ("/api/stream?channel=random-walk&from=%C2%B2", "Accept: */*", 400, JSON),
    ("/api/stream", "Accept: */*", 400, JSON),
    ("/api/health", "Accept: */*", 200, JSON),
    ("/metrics", "Accept: */*", 200, "text/plain"),
    ("/api/openapi.json", "Accept: */*", 200, JSON),
    ("/api/channels", "Accept: */*", 200, JSON),
    ("/api/ws", "Accept: */*", 400, JSON),  # not an upgrade
    ("/api/push/x", "Accept: */*", 405, JSON),
    ("/api/channels/x", "Accept: */*", 405, JSON),
    ("/nope", "Accept: */*", 404, JSON),
]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


@pytest.mark.parametrize(("path", "accept", "status", "ctype"), PATHS)
async def test_head_is_headers_only_and_the_connection_stays_in_step(server: LiveServer, path: str, accept: str,
                                                                    status: int, ctype: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        t0 = time.monotonic()
        writer.write(get(path, server.port, accept, method="HEAD") + get("/api/health", server.port))
        await writer.drain()
        head = await read_answer(reader, head_only=True)
        assert head.status == status, (path, head)
        assert time.monotonic() - t0 < 5, "HEAD must not wait for a stream"
        after = await read_answer(reader)  # would be stream bytes if HEAD had sent a body
        assert after.status == 200, (path, after)
        assert json.loads(after.body)["status"] == "ok"
        assert head.headers["content-type"].startswith(ctype), head  # what GET would say
        assert head.headers["x-content-type-options"] == "nosniff"  # no answer is ever run as a script
    finally:
        writer.close()


async def test_head_opens_no_connection_or_subscription(server: LiveServer) -> None:
    """HEAD on the streams never registers a connection (``livedata_connections_open`` stays)."""
    from tests.security.rawhttp import request

    for _ in range(20):
        await request(server.port, get("/api/stream?channel=random-walk", server.port, method="HEAD"), head_only=True)
        await request(server.port, get("/?numSeries=2", server.port, method="HEAD"), head_only=True)
    answer = await request(server.port, get("/metrics", server.port))
    text = answer.body.decode()
    assert "livedata_connections_open 0.0" in text
    assert "livedata_reference_listeners 0.0" in text
