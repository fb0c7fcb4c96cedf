"""Hostile input on the producer routes (/api/push, /api/v2/write, /write, /v1/metrics): always a
4xx with a sentence, never a 5xx, never a stall, and the server keeps serving everyone else.

Timing bounds here are generous limits that catch a hang or a quadratic blow-up, not benchmarks.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.conftest import KEEP_OLD, LiveServer
from tests.integration.test_ingest import history

ROUTES = ["/api/push/h", "/api/v2/write?bucket=h", "/write?db=h"]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--max-body-bytes", str(4 << 20), *KEEP_OLD]).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def send(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
               ) -> tuple[int, str, float]:
    t0 = time.monotonic()
    async with http.post(url, data=body, headers={"Content-Type": "text/plain", **(headers or {})}) as r:
        return r.status, await r.text(), time.monotonic() - t0


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"m\x00 v=1", 400, "U+0000"),
        (b"m v=1\nm,k=\x00 v=1", 400, "line 2, column 5"),
        (b"m s=\"\xff\" 1", 400, "invalid UTF-8"),
        (b"\\" * 200_000 + b" v=1", 400, "line 1"),  # 100,000 escaped backslashes, no fields after them
        (b"m " + b"k" * 1_000_000 + b"=1", 400, "the limit is 256"),
        (b"m," + b",".join(b"t%d=v" % i for i in range(10_000)) + b" v=1", 400, "more than 64 tags"),
        (b'm s="' + b"\n" * 500_000, 400, "unterminated string"),
        (b"m v=1 " + b"9" * 5000, 400, "invalid timestamp"),
        (b"\xef\xbb\xbfbom v=1 1\r\nbom v=2 2\nbom v=3 3\r\n", 204, None),
        (b"# nothing but a comment", 204, None),
    ],
)
async def test_hostile_line_protocol(server: LiveServer, http: aiohttp.ClientSession, route: str, body: bytes,
                                     status: int, needle: str | None) -> None:
    code, text, took = await send(http, server.url + route, body)
    assert code == status, text[:300]
    assert took < 20
    if needle:
        assert needle in text


async def test_a_bom_and_mixed_line_endings_are_read(server: LiveServer, http: aiohttp.ClientSession) -> None:
    code, text, _ = await send(http, f"{server.url}/api/push/bomtest?precision=ms",
                               b"\xef\xbb\xbfm v=1 1\r\nm v=2 2\nm v=3 3\r\n")
    assert code == 204, text
    assert [t for t, _ in (await history(http, server.url, "bomtest/m")).rows] == [1, 2, 3]


@pytest.mark.parametrize("route", [*ROUTES, "/v1/metrics"])
@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip"])
async def test_unsupported_content_encodings(server: LiveServer, http: aiohttp.ClientSession, route: str,
                                             encoding: str) -> None:
    ctype = "application/x-protobuf" if route == "/v1/metrics" else "text/plain"
    code, text, _ = await send(http, server.url + route, b"m v=1", {"Content-Encoding": encoding,
                                                                      "Content-Type": ctype})
    assert 400 <= code < 500, text


async def test_hostile_otlp(server: LiveServer, http: aiohttp.ClientSession) -> None:
    url = f"{server.url}/v1/metrics"
    deep = (b'{"resourceMetrics":[{"resource":{"attributes":[{"key":"k","value":'
            + b'{"kvlistValue":{"values":[{"key":"a","value":' * 5000 + b'{"stringValue":"x"}' + b"}]}}" * 5000
            + b"}]}}]}")
    cases = [
        (os.urandom(4096), "application/x-protobuf"),
        (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf"),
        (deep, "application/json"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json"),
        (b'{"resourceMetrics": "x"}', "application/json"),
        (json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "h", "histogram": {"dataPoints": [{"count": "1", "bucketCounts": ["1", "2"]}]}}]}]}]}).encode(),
         "application/json"),
    ]
    for body, ctype in cases:
        for compress in (False, True):
            data = gzip.compress(body) if compress else body
            headers = {"Content-Type": ctype} | ({"Content-Encoding": "gzip"} if compress else {})
            async with http.post(url, data=data, headers=headers) as r:
                assert r.status == 400, (body[:80], await r.read())


async def test_others_are_served_while_a_big_body_is_parsed(server: LiveServer, http: aiohttp.ClientSession) -> None:
    big = b"".join(b'big,host=h%d v=%d,s="a string, with spaces" %d\n' % (i % 50, i, i) for i in range(60_000))
    assert len(big) < 4 << 20
    task = asyncio.ensure_future(send(http, f"{server.url}/api/v2/write?bucket=big&precision=s", big))
    worst = 0.0
    while not task.done():
        t0 = time.monotonic()
        async with http.get(f"{server.url}/api/health") as r:
            assert r.status == 200
        worst = max(worst, time.monotonic() - t0)
        await asyncio.sleep(0.01)
    code, text, _ = await task
    assert code == 204, text
    assert worst < 2.0  # parsed in slices: the loop is never held for long
