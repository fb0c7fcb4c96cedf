"""DNS rebinding (issue 16): a server bound to a loopback address answers loopback host names only,
on every route; ``--allowed-hosts`` adds the names a proxy uses. Real server; Host headers a
rebinding page would make its browser send, and a few no browser would."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import LiveServer
from tests.security.rawhttp import get, request

ROUTES = ["/", "/?numSeries=1", "/api/health", "/metrics", "/api/openapi.json", "/api/channels",
          "/api/stream?channel=random-walk", "/api/ws", "/no/such/path"]
REBOUND = ["evil.example", "EVIL.example", "evil.example.", "localhost.evil.example", "127.0.0.1.nip.io",
           "10.0.0.1", "[::ffff:7f00:1]", "0.0.0.0", "[2001:db8::1]", "2130706433", "localhost..", "xn--lcalhost-9wa"]
LOOPBACK = ["localhost", "LOCALHOST", "LocalHost.", "127.0.0.1", "127.0.0.2", "[::1]", "[0:0:0:0:0:0:0:1]",
            "grafana.localhost"]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("name", REBOUND)
async def test_foreign_host_names_are_refused_on_every_route(server: LiveServer, path: str, name: str) -> None:
    for host in (name, f"{name}:{server.port}"):
        answer = await request(server.port, get(path, server.port, "Accept: */*", host=host))
        assert answer.status == 403, (host, path, answer)
        assert b"is not allowed" in answer.body and b"--allowed-hosts" in answer.body


@pytest.mark.parametrize("name", LOOPBACK)
async def test_loopback_names_are_served(server: LiveServer, name: str) -> None:
    for host in (name, f"{name}:{server.port}"):
        answer = await request(server.port, get("/api/health", server.port, host=host))
        assert answer.status == 200, (host, answer)


async def test_push_and_websocket_with_a_rebound_host(server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s:
        rebound = f"evil.example:{server.port}"
        async with s.post(f"{server.url}/api/push/dns/x", json={"v": 1}, headers={"Host": rebound}) as r:
            assert r.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:  # the page's own origin, on its rebound name
            await s.ws_connect(f"{server.url}/api/ws", headers={"Host": rebound, "Origin": f"http://{rebound}"})
        assert err.value.status == 403
        async with s.get(f"{server.url}/api/channels") as r:
            assert "dns/x" not in {c["name"] for c in (await r.json())["channels"]}


@pytest.mark.parametrize("host", ["", "a b", "evil.example@127.0.0.1", "127.0.0.1:99999", "[::1", "127.0.0.1:80:80",
                                  "127.0.0.1/x", "\u00e9vil.example", "localhost:\u0668\u0660"])
async def test_malformed_host_headers_are_400(server: LiveServer, host: str) -> None:
    answer = await request(server.port, get("/api/health", server.port, host=host))
    assert answer.status == 400, (host, answer)


async def test_two_host_headers_and_none(server: LiveServer) -> None:
    two = (f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nHost: evil.example\r\n\r\n").encode()
    answer = await request(server.port, two)
    assert answer.status in (400, 403), answer  # never served under the foreign name
    # HTTP/1.0 without Host: not a browser (browsers always send one), served
    answer = await request(server.port, b"GET /api/health HTTP/1.0\r\n\r\n")
    assert answer.status == 200


async def test_allowed_hosts_for_a_proxy() -> None:
    s = LiveServer(["--allowed-hosts", "livedata.example.com,.corp.example"]).start()
    try:
        for host, status in (("livedata.example.com", 200), ("LIVEDATA.example.com.", 200), ("a.corp.example", 200),
                             ("corp.example:443", 200), ("localhost", 200), ("evilcorp.example", 403),
                             ("example.com", 403)):
            answer = await request(s.port, get("/api/health", s.port, host=host))
            assert answer.status == status, (host, answer)
        # the proxy's public origin is this server's own under an allowed name
        async with aiohttp.ClientSession() as http, http.post(f"{s.url}/api/push/dns/proxied", json={"v": 1},
                             headers={"Host": "livedata.example.com", "Origin": "http://livedata.example.com"}) as r:
            assert r.status == 204
    finally:
        s.stop()


def test_allowed_hosts_are_checked_at_start() -> None:
    with pytest.raises(RuntimeError, match="--allowed-hosts takes host names"):
        LiveServer(["--allowed-hosts", "https://livedata.example.com"]).start()
