"""Tokens against a real server: push, HTTP stream, WebSocket (header and ``auth`` message), delete.

Write tokens may push and read; read tokens may only read; anything else is 401 (none or unknown)
or 403 (known, but not allowed). Tokens never appear in the server's log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from livedata.client import Client, LivedataError
from tests.conftest import LiveServer
from tests.integration.test_ingest import WS, open_ws, subscribed

WRITE = "write-SECRET-9f3a1c"
READ = "read-SECRET-77b1d0"
WRONG = "wrong-SECRET-000000"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # --retention: the tests push fixed early timestamps (time 1000) and read them back.
    s = LiveServer(["--write-tokens", WRITE, "--read-tokens", READ, "--log-level", "debug",
                    "--retention", "3153600000"]).start()
    yield s
    s.stop()
    assert "SECRET" not in s.log_path.read_text(), "a token was logged"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.mark.parametrize(("token", "status"), [(None, 401), (READ, 403), (WRONG, 401), (WRITE, 204)])
async def test_push(server: LiveServer, http: aiohttp.ClientSession, token: str | None, status: int) -> None:
    async with http.post(f"{server.url}/api/push/tok/a", json={"v": 1}, headers=bearer(token)) as r:
        assert r.status == status
        if status != 204:
            text = (await r.json())["error"]
            assert "SECRET" not in text
            assert {401: "token", 403: "may not write"}[status] in text


@pytest.mark.parametrize(("token", "status"), [(None, 401), (READ, 200), (WRONG, 401), (WRITE, 200)])
async def test_http_stream(server: LiveServer, http: aiohttp.ClientSession, token: str | None, status: int) -> None:
    async with http.get(f"{server.url}/api/stream", params={"channel": "tok/a", "from": "now-1m", "to": "now"},
                        headers=bearer(token)) as r:
        assert r.status == status
        body = await r.text()
    if status == 200:
        assert json.loads(body.splitlines()[-1])["type"] == "complete"


async def test_stream_token_in_query(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """``?token=`` works where a header cannot be set (EventSource): the same stream as with the
    header, the same refusals without or with a wrong one; pushes still need the header."""
    async with http.post(f"{server.url}/api/push/tok/q", json={"time": 1_000, "v": 7}, headers=bearer(WRITE)) as r:
        assert r.status == 204
    params = {"channel": "tok/q", "from": "0", "to": "now"}
    async with http.get(f"{server.url}/api/stream", params={**params, "token": READ}) as r:
        assert r.status == 200
        messages = [json.loads(line) for line in (await r.text()).splitlines()]
    assert [m["type"] for m in messages] == ["hello", "data", "complete"]
    assert messages[1]["frame"]["data"]["values"] == [[1_000], [7]]
    for token, status in ((None, 401), (WRONG, 401)):
        query = {**params, "token": token} if token else params
        async with http.get(f"{server.url}/api/stream", params=query) as r:
            assert r.status == status
            assert "SECRET" not in (await r.json())["error"]
    async with http.post(f"{server.url}/api/push/tok/q", params={"token": WRITE}, json={"v": 8}) as r:
        assert r.status == 401  # a token in a URL ends up in logs: pushes take the header only


@pytest.mark.parametrize(("token", "status"), [(None, 401), (READ, 403), (WRONG, 401), (WRITE, 204)])
async def test_delete_needs_write(server: LiveServer, http: aiohttp.ClientSession, token: str | None,
                                  status: int) -> None:
    channel = f"tok/del-{status}-{token is None}"
    async with http.post(f"{server.url}/api/push/{channel}", json={"time": 1_000, "v": 1},
                         headers=bearer(WRITE)) as r:
        assert r.status == 204
    async with http.delete(f"{server.url}/api/channels/{channel}", headers=bearer(token)) as r:
        assert r.status == status
        if status != 204:
            assert {401: "token", 403: "may not write"}[status] in (await r.json())["error"]
    async with http.get(f"{server.url}/api/channels", headers=bearer(READ)) as r:
        names = {c["name"] for c in (await r.json())["channels"]}
    assert (channel in names) is (status != 204), "a refused delete deletes nothing; an allowed one deletes"


async def test_channels_list_needs_read(server: LiveServer, http: aiohttp.ClientSession) -> None:
    for headers in ({}, bearer(WRONG)):
        async with http.get(f"{server.url}/api/channels", headers=headers) as r:
            assert r.status == 401
            assert "channels" not in (body := await r.json()) and "token" in body["error"]
    for token in (READ, WRITE):
        async with http.get(f"{server.url}/api/channels", headers=bearer(token)) as r:
            assert r.status == 200
            names = {c["name"] for c in (await r.json())["channels"]}
        assert "random-walk" in names  # the list itself, not only a status


def errors(w: WS) -> list[str]:
    return [m["message"] for m in w.other if m["type"] == "error"]


async def close_of(http: aiohttp.ClientSession, url: str, send: list[dict[str, object]],
                   headers: dict[str, str] | None = None) -> tuple[int | None, str, list[dict[str, object]]]:
    """Open a socket, send ``send``, and read to the end: (close code, reason, messages)."""
    async with http.ws_connect(f"{url}/api/ws", headers=headers) as ws:
        for m in send:
            await ws.send_json(m)
        got: list[dict[str, object]] = []
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            got.append(json.loads(msg.data))
        assert msg.type == aiohttp.WSMsgType.CLOSE, msg
        return ws.close_code, str(msg.extra), got


@pytest.mark.parametrize("first", [
    {"type": "subscribe", "id": "A", "channel": "tok/ws"},
    {"type": "publish", "channel": "tok/ws", "points": {"v": 1}},
    {"type": "ping"},
])
async def test_websocket_needs_auth_first(server: LiveServer, http: aiohttp.ClientSession,
                                          first: dict[str, object]) -> None:
    """With read tokens, a socket opened without one must send ``auth`` first: anything else ends it (4001)."""
    code, reason, got = await close_of(http, server.url, [first])
    assert code == 4001
    assert reason.startswith("unauthorized: this server needs a token")
    assert [m["type"] for m in got] == ["hello"]


@pytest.mark.parametrize(("auth", "reason"), [
    ({"type": "auth", "token": WRONG}, "unauthorized: unknown token"),
    ({"type": "auth"}, "unauthorized: auth needs a non-empty string 'token'"),
    ({"type": "auth", "token": ""}, "unauthorized: auth needs a non-empty string 'token'"),
    ({"type": "auth", "token": ["x"]}, "unauthorized: auth needs a non-empty string 'token'"),
])
async def test_websocket_bad_auth_closes_4001(server: LiveServer, http: aiohttp.ClientSession,
                                              auth: dict[str, object], reason: str) -> None:
    code, text, _ = await close_of(http, server.url, [auth])
    assert (code, text) == (4001, reason)
    assert "SECRET" not in text


async def test_websocket_auth_then_rights(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """A read token subscribes; publishing with it is an error (the socket goes on); a write token publishes."""
    w = await open_ws(http, server.url)
    await w.send({"type": "auth", "token": READ})
    await w.until(lambda: any(m["type"] == "auth" for m in w.other))
    sub = await subscribed(w, "B", "tok/ws")
    assert sub.all[0]["type"] == "data"
    await w.send({"type": "publish", "channel": "tok/ws", "points": {"v": 1}, "ack": "p"})
    await w.until(lambda: len(errors(w)) == 1)
    assert "may not write" in errors(w)[0]
    assert {"type": "error", "message": "this token may not write", "ack": "p"} in w.other
    await w.send({"type": "auth", "token": WRITE})
    await w.send({"type": "publish", "channel": "tok/ws", "points": {"v": 1}, "ack": "q"})
    await w.until(lambda: {"type": "ack", "ack": "q"} in w.other)
    await w.until(lambda: len(sub.rows) == 1)
    await w.ws.close()


async def test_websocket_later_bad_auth_ends_earlier_subscriptions(server: LiveServer,
                                                                  http: aiohttp.ClientSession) -> None:
    """Subscriptions made with a good token stop when a later ``auth`` brings a bad one: the socket
    closes with 4001 and nothing more is delivered."""
    w = await open_ws(http, server.url)
    await w.send({"type": "auth", "token": READ})
    sub = await subscribed(w, "live", "random-walk")
    await w.until(lambda: len(sub.rows) >= 3)
    await w.send({"type": "auth", "token": WRONG})
    await asyncio.wait_for(w.task, 5)
    assert w.ws.close_code == 4001
    assert w.ws.closed


@pytest.mark.parametrize(("token", "ok"), [(READ, True), (WRITE, True), (WRONG, False), (None, False)])
async def test_websocket_authorization_header(server: LiveServer, http: aiohttp.ClientSession,
                                              token: str | None, ok: bool) -> None:
    if ok:
        w = await open_ws(http, server.url, headers=bearer(token))
        sub = await subscribed(w, "A", "tok/hdr")
        assert sub.all[0]["type"] == "data" and "schema" in sub.all[0]["frame"]
        await w.ws.close()
        return
    # a wrong token ends the socket at once; no token, at the first message that is not auth
    code, reason, got = await close_of(http, server.url, [] if token else [{"type": "subscribe", "id": "A",
                                                                            "channel": "tok/hdr"}],
                                       headers=bearer(token))
    assert code == 4001
    assert reason == ("unauthorized: unknown token" if token else
                      'unauthorized: this server needs a token: send {"type":"auth","token":...} first')
    assert [m["type"] for m in got] == ["hello"]


async def test_websocket_token_in_query(server: LiveServer, http: aiohttp.ClientSession) -> None:
    """A browser's WebSocket cannot set headers: ``?token=`` works as the header does."""
    async with http.ws_connect(f"{server.url}/api/ws", params={"token": READ}) as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_json({"type": "subscribe", "id": "A", "channel": "tok/q2", "from": "now-1m"})
        assert (await ws.receive_json(timeout=5))["type"] == "data"
    async with http.ws_connect(f"{server.url}/api/ws", params={"token": WRONG}) as ws:
        assert (await ws.receive_json())["type"] == "hello"
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001


async def test_python_client_tokens(server: LiveServer) -> None:
    async with Client(server.url, WRITE) as c:
        await c.send("tok/client", {"v": 1})
        sub = await c.subscribe("tok/client", from_="now-1m")
        frame = await asyncio.wait_for(sub.__anext__(), 5)
        assert len(frame) == 1  # type: ignore[arg-type]
    async with Client(server.url, READ) as c:
        with pytest.raises(LivedataError) as info:
            await c.send("tok/client", {"v": 2})
        assert info.value.status == 403
    async with Client(server.url) as c:  # no token: the socket is closed with 4001, and the client gives up
        sub = await c.subscribe("tok/client")
        with pytest.raises(LivedataError, match="4001: unauthorized: this server needs a token") as info:
            await asyncio.wait_for(sub.__anext__(), 10)
        assert info.value.status == 401
    async with Client(server.url, WRONG) as c:
        sub = await c.subscribe("tok/client")
        with pytest.raises(LivedataError, match="4001: unauthorized: unknown token"):
            await asyncio.wait_for(sub.__anext__(), 10)


async def test_websocket_with_write_tokens_only(http: aiohttp.ClientSession) -> None:
    """Reading is open (no read tokens): a socket subscribes without a token; a publish without
    one closes it with 4001, a publish after ``auth`` with the write token is stored."""
    s = LiveServer(["--write-tokens", WRITE]).start()
    try:
        w = await open_ws(http, s.url)
        sub = await subscribed(w, "A", "random-walk")
        assert sub.all[0]["type"] == "data"
        await w.send({"type": "auth", "token": WRITE})
        await w.send({"type": "publish", "channel": "tok/wo", "points": {"v": 1}, "ack": "ok"})
        await w.until(lambda: {"type": "ack", "ack": "ok"} in w.other)
        await w.ws.close()
        code, reason, _ = await close_of(http, s.url, [{"type": "publish", "channel": "tok/wo", "points": {"v": 2}}])
        assert (code, reason) == (4001, "unauthorized: a token is required to write: send 'Authorization: Bearer "
                                        "<token>'")
    finally:
        s.stop()
