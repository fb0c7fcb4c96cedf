"""Cross-site writes (issue 16): a page of another site cannot push, delete or publish through the
user's browser. Real server, real HTTP and WebSocket clients; what a browser would send is sent
by hand (Origin, Sec-Fetch-Site), and the server is asked afterwards that nothing was stored.
The same through a real Chromium: tests/browser/test_cross_site.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.conftest import LiveServer

ALLOWED = "http://localhost:3000"  # the default --cors-origin (Grafana's)
FOREIGN = ["http://evil.example", "null", "http://localhost:3001", "https://localhost:3000",
           "http://localhost:3000.evil.example", "HTTP://EVIL.EXAMPLE", "file://", "x"]
SIMPLE = [  # the content types a page may POST without a CORS preflight
    ("text/plain", b"m v=1"),
    ("text/plain;charset=UTF-8", b'{"v":1}'),
    ("application/x-www-form-urlencoded", b"m v=1"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="m v"\r\n\r\n1\r\n--x--\r\n'),
]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def channel_names(http: aiohttp.ClientSession, url: str) -> set[str]:
    async with http.get(f"{url}/api/channels") as r:
        assert r.status == 200
        return {c["name"] for c in (await r.json())["channels"]}


@pytest.mark.parametrize("origin", FOREIGN)
@pytest.mark.parametrize(("ctype", "body"), SIMPLE)
async def test_push_from_a_foreign_origin_is_refused_and_stores_nothing(
        server: LiveServer, http: aiohttp.ClientSession, origin: str, ctype: str, body: bytes) -> None:
    channel = f"xs/push-{abs(hash((origin, ctype))) % 10**8}"
    async with http.post(f"{server.url}/api/push/{channel}", data=body,
                         headers={"Content-Type": ctype, "Origin": origin}) as r:
        assert r.status == 403
        answer = await r.json()
        assert "not allowed" in answer["error"] and "--cors-origin" in answer["error"]
        assert "Access-Control-Allow-Origin" not in r.headers
    names = await channel_names(http, server.url)
    assert not any(n == channel or n.startswith(channel + "/") for n in names)


@pytest.mark.parametrize("site", ["cross-site", "CROSS-SITE"])
async def test_push_marked_cross_site_without_origin_is_refused(server: LiveServer, http: aiohttp.ClientSession,
                                                                site: str) -> None:
    async with http.post(f"{server.url}/api/push/xs/fetchsite", data=b"m v=1",
                         headers={"Content-Type": "text/plain", "Sec-Fetch-Site": site}) as r:
        assert r.status == 403
        assert "Sec-Fetch-Site" in (await r.json())["error"]
    assert "xs/fetchsite/m" not in await channel_names(http, server.url)


async def test_clients_without_origin_and_allowed_origins_push(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """curl, scripts, the Python client and Telegraf send no Origin: unaffected. Grafana's origin is allowed."""
    for i, headers in enumerate([{}, {"Origin": ALLOWED}, {"Origin": ALLOWED, "Sec-Fetch-Site": "same-site"},
                                 {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                                 {"Origin": f"http://127.0.0.1:{server.port}"}]):  # the live view's own page
        async with http.post(f"{server.url}/api/push/xs/ok{i}", json={"v": 1}, headers=headers) as r:
            assert r.status == 204, (headers, await r.text())
            if "Origin" in headers and headers["Origin"] == ALLOWED:
                assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert {f"xs/ok{i}" for i in range(6)} <= await channel_names(http, server.url)


async def test_delete_from_a_foreign_origin_is_refused(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/api/push/xs/keep", json={"v": 1}) as r:
        assert r.status == 204
    for origin in FOREIGN:
        async with http.delete(f"{server.url}/api/channels/xs/keep", headers={"Origin": origin}) as r:
            assert r.status == 403
    async with http.delete(f"{server.url}/api/channels/xs/keep", headers={"Sec-Fetch-Site": "cross-site"}) as r:
        assert r.status == 403
    assert "xs/keep" in await channel_names(http, server.url)
    async with http.delete(f"{server.url}/api/channels/xs/keep", headers={"Origin": ALLOWED}) as r:
        assert r.status == 204
    assert "xs/keep" not in await channel_names(http, server.url)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_other_methods_from_a_foreign_origin_are_refused_before_routing(
        server: LiveServer, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, f"{server.url}/api/push/xs/m", data=b"x",
                            headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403
    async with http.request(method, f"{server.url}/api/push/xs/m", data=b"x") as r:
        assert r.status == 405  # no such method, said as such


@pytest.mark.parametrize("origin", FOREIGN)
async def test_websocket_from_a_foreign_origin_cannot_open(server: LiveServer, http: aiohttp.ClientSession,
                                                           origin: str) -> None:
    """Cross-site WebSocket hijacking: a foreign page cannot open the socket, so it can neither
    subscribe nor publish."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(f"{server.url}/api/ws", headers={"Origin": origin})
    assert err.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(f"{server.url}/api/ws", headers={"Sec-Fetch-Site": "cross-site"})
    assert err.value.status == 403


async def test_websocket_publish_from_allowed_origins(server: LiveServer, http: aiohttp.ClientSession) -> None:
    port = server.port
    for i, (origin, base) in enumerate([(ALLOWED, server.url), (f"http://localhost:{port}", f"http://localhost:{port}"),
                                        (f"http://127.0.0.1:{port}", server.url)]):
        async with http.ws_connect(f"{base}/api/ws", headers={"Origin": origin}) as ws:
            assert (await ws.receive_json())["type"] == "hello"
            await ws.send_json({"type": "publish", "channel": f"xs/ws{i}", "points": {"v": 1}, "ack": "a"})
            assert await ws.receive_json(timeout=5) == {"type": "ack", "ack": "a"}
    assert {"xs/ws0", "xs/ws1", "xs/ws2"} <= await channel_names(http, server.url)


async def test_reads_from_a_foreign_origin_are_refused_too(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """A fetch in CORS mode carries Origin: the browser would hide the answer; the server does not
    even open the stream (a page cannot hold streams open on the user's machine)."""
    for path in ("/api/channels", "/api/stream?channel=random-walk", "/metrics", "/?numSeries=1",
                 "/api/openapi.json", "/api/health"):
        async with http.get(server.url + path, headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403, path
            assert "Access-Control-Allow-Origin" not in r.headers
    # a link or an image from another site (no Origin, Sec-Fetch-Site: cross-site) still opens the page
    async with http.get(server.url + "/", headers={"Accept": "text/html", "Sec-Fetch-Site": "cross-site",
                                                   "Sec-Fetch-Mode": "navigate"}) as r:
        assert r.status == 200 and r.content_type == "text/html"


async def test_cors_preflight(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """A preflight from a foreign origin is refused (no Access-Control-Allow-* at all); from an
    allowed one it names the methods and headers."""
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    for origin in FOREIGN:
        async with http.options(f"{server.url}/api/push/xs/pre", headers={"Origin": origin, **ask}) as r:
            assert r.status == 403
            assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    async with http.options(f"{server.url}/api/push/xs/pre", headers={"Origin": ALLOWED, **ask}) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    async with http.options(f"{server.url}/api/push/xs/pre", headers={"Origin": ALLOWED, **ask,
                                                                       "Host": "evil.example"}) as r:
        assert r.status == 403  # a rebound name is refused before CORS is considered


async def test_allowed_origins_come_from_cors_origin() -> None:
    s = LiveServer(["--cors-origin", "https://grafana.example.com/,http://localhost:3000"]).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{s.url}/api/push/xs/g", json={"v": 1},
                                 headers={"Origin": "https://grafana.example.com"}) as r:
                assert r.status == 204
            async with http.post(f"{s.url}/api/push/xs/g", json={"v": 1},
                                 headers={"Origin": "https://grafana.example.com.evil.example"}) as r:
                assert r.status == 403
            star = LiveServer(["--cors-origin", "*", "--write-tokens", "w"]).start()
            try:
                async with http.post(f"{star.url}/api/push/xs/star", json={"v": 1},
                                     headers={"Origin": "http://evil.example", "Authorization": "Bearer w"}) as r:
                    assert r.status == 204  # '*' means every site, as documented: then a write token guards
                assert "--cors-origin * without --write-tokens" not in star.log()
            finally:
                star.stop()
            open_star = LiveServer(["--cors-origin", "*"]).start()
            try:
                assert "--cors-origin * without --write-tokens" in open_star.log()
            finally:
                open_star.stop()
    finally:
        s.stop()


async def test_refusals_are_json_sentences(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/api/push/xs/j", data=b"m v=1",
                         headers={"Origin": 'http://"evil"\\.example', "Content-Type": "text/plain"}) as r:
        assert r.status == 403
        body = json.loads(await r.read())
        assert set(body) == {"error"} and body["error"].endswith("allow it with --cors-origin")
