"""Tokens mean what they say (issue 16): with tokens configured, every route but /api/health (and
the live view's page and assets, which hold no data) needs the right token, /metrics included;
a token in the query string counts only where a browser cannot send a header."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.conftest import LiveServer

WRITE, READ, METRICS, WRONG = "w-SECRET-1", "r-SECRET-2", "m-SECRET-3", "x-SECRET-4"
READS = ["/?numSeries=1", "/api/openapi.json", "/api/channels", "/api/stream?channel=random-walk&from=now-1s&to=now"]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--write-tokens", WRITE, "--read-tokens", READ, "--metrics-token", METRICS]).start()
    yield s
    s.stop()
    assert "SECRET" not in s.log_path.read_text(), "a token was logged"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def status(http: aiohttp.ClientSession, method: str, url: str, **kw: object) -> tuple[int, str]:
    async with http.request(method, url, **kw) as r:  # type: ignore[arg-type]
        if r.status == 200 and r.content_type == "application/x-ndjson" and "numSeries" in url:
            return r.status, ""  # the reference stream does not end
        text = await r.text()
        return r.status, text


@pytest.mark.parametrize("path", READS)
async def test_reads_need_a_read_token(server: LiveServer, http: aiohttp.ClientSession, path: str) -> None:
    url = server.url + path
    for token, want in ((None, 401), (WRONG, 401), (METRICS, 403), (READ, 200), (WRITE, 200)):
        code, text = await status(http, "GET", url, headers=bearer(token))
        assert code == want, (path, token, text)
        assert "SECRET" not in text or code == 200


async def test_writes_need_a_write_token(server: LiveServer, http: aiohttp.ClientSession) -> None:
    for token, want in ((None, 401), (WRONG, 401), (METRICS, 403), (READ, 403), (WRITE, 204)):
        code, _ = await status(http, "POST", f"{server.url}/api/push/tok/e", json={"v": 1}, headers=bearer(token))
        assert code == want, token
    for token, want in ((None, 401), (METRICS, 403), (READ, 403), (WRITE, 204)):
        code, _ = await status(http, "DELETE", f"{server.url}/api/channels/tok/e", headers=bearer(token))
        assert code == want, token
        if want == 204:
            break


async def test_metrics_need_a_read_or_metrics_token(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """What a Prometheus scrape job with ``bearer_token`` (or ``authorization: credentials:``) sends."""
    for token, want in ((None, 401), (WRONG, 401), (METRICS, 200), (READ, 200), (WRITE, 200)):
        code, text = await status(http, "GET", f"{server.url}/metrics", headers=bearer(token))
        assert code == want, token
        if want == 200:
            assert "livedata_connections_open" in text
        else:
            assert "livedata_" not in text  # channel names and counts stay private


async def test_open_routes(server: LiveServer, http: aiohttp.ClientSession) -> None:
    code, text = await status(http, "GET", f"{server.url}/api/health")
    assert code == 200 and '"status":"ok"' in text
    async with http.get(f"{server.url}/", headers={"Accept": "text/html"}) as r:  # the page: no data
        assert r.status == 200 and r.content_type == "text/html"
    async with http.get(f"{server.url}/?numSeries=1", headers={"Accept": "text/html"}) as r:
        assert r.status == 401  # ...but the reference stream under it is data


@pytest.mark.parametrize("path", ["/api/channels", "/metrics", "/api/openapi.json", "/?numSeries=1"])
async def test_token_in_the_query_string_counts_only_on_streams(server: LiveServer, http: aiohttp.ClientSession,
                                                                path: str) -> None:
    """A URL ends up in logs and browser history: only the stream, which an EventSource opens
    without headers, takes ``?token=`` (and the WebSocket, tests/integration/test_tokens.py)."""
    sep = "&" if "?" in path else "?"
    code, _ = await status(http, "GET", f"{server.url}{path}{sep}token={READ}")
    assert code == 401
    code, _ = await status(http, "POST", f"{server.url}/api/push/tok/q?token={WRITE}", json={"v": 1})
    assert code == 401
    code, _ = await status(http, "GET", f"{server.url}/api/stream?channel=random-walk&from=now-1s&to=now&token={READ}")
    assert code == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic cjpTRUNSRVQ=", f"bearer {READ}", f"BEARER  {READ} ",
                                    f"Token {READ}", f"Bearer {READ}\u00ff", "Bearer \udcff"])
async def test_odd_authorization_headers(server: LiveServer, header: str) -> None:
    from tests.security.rawhttp import get, request

    answer = await request(server.port, get("/api/channels", server.port, f"Authorization: {header}"))
    scheme, _, token = header.partition(" ")
    ok = scheme.lower() == "bearer" and token.strip() == READ
    assert answer.status == (200 if ok else 401), (header, answer.status)


async def test_metrics_token_alone(http: aiohttp.ClientSession) -> None:
    """Only ``--metrics-token``: /metrics needs it, reading channels stays open (no read tokens)."""
    s = LiveServer(["--metrics-token", METRICS]).start()
    try:
        assert (await status(http, "GET", f"{s.url}/metrics"))[0] == 401
        assert (await status(http, "GET", f"{s.url}/metrics", headers=bearer(METRICS)))[0] == 200
        assert (await status(http, "GET", f"{s.url}/api/channels"))[0] == 200
    finally:
        s.stop()
