"""What the HTTP API answers a new user's mistakes (and what the docs promise), on a real server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--cors-origin", "http://grafana.example"]).start()
    yield s
    s.stop()


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status, hdrs = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    return status, hdrs, json.loads(raw) if raw and raw[:1] in b"{[" else raw


def channels(server: LiveServer) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in call("GET", f"{server.url}/api/channels")[2]["channels"]}


def test_json_without_content_type_is_detected(server: LiveServer) -> None:
    # What `curl -d '{"temp": 21.5}'` sends: application/x-www-form-urlencoded.
    for ctype in ("application/x-www-form-urlencoded", None):
        headers = {"Content-Type": ctype} if ctype else {}
        status, _, body = call("POST", f"{server.url}/api/push/newb/nohdr", b'{"temp": 21.5}', headers)
        assert status == 204, body
    assert channels(server)["newb/nohdr"]["points"] == 2


def test_json_sent_as_text_plain_says_which_header(server: LiveServer) -> None:
    status, _, body = call("POST", f"{server.url}/api/push/newb/txt", b'{"temp": 21.5}', {"Content-Type": "text/plain"})
    assert status == 400
    assert "looks like JSON" in body["error"] and "Content-Type: application/json" in body["error"], body


@pytest.mark.parametrize(("raw", "ctype", "expected", "line"), [
    (b'{"temp": x}', "application/json", "malformed JSON at line 1, column 10: invalid character", 1),
    (b'[{"temp": 1},\n {"temp": 2,}]', "application/json", "at line 2, column 13: trailing comma", 2),
    (b'{"temp": 1}\n{"temp": }\n', "application/x-ndjson", "line 2: malformed JSON at column 10", 2),
    (b"", "application/json", "the JSON body is empty", None),
])
def test_malformed_json_has_line_and_column(server: LiveServer, raw: bytes, ctype: str, expected: str,
                                            line: int | None) -> None:
    status, _, body = call("POST", f"{server.url}/api/push/newb/bad", raw, {"Content-Type": ctype})
    assert status == 400 and expected in body["error"], body
    assert body.get("line") == line
    assert "byte" not in body["error"]


@pytest.mark.parametrize(("query", "expected"), [
    ("precision=seconds", "precision must be ns, us, ms or s (the unit of the timestamps), got 'seconds'"),
    ("precision=s&precision=ms", "precision is given 2 times (s, ms): give it once"),
])
def test_precision_errors(server: LiveServer, query: str, expected: str) -> None:
    status, _, body = call("POST", f"{server.url}/api/push/newb/lp?{query}", b"m v=1 1", {"Content-Type": "text/plain"})
    assert status == 400 and body["error"] == expected, body


@pytest.mark.parametrize(("value", "expected"), [
    ("99999999", "interval must be 0 to 60000 ms (at most one message a minute; 0: as points come), got 99999999"),
    ("-5", "got -5"),
    ("1.5e9", "got 1500000000"),
    ("soon", "interval must be a number of ms from 0 to 60000, got 'soon'"),
])
def test_interval_errors(server: LiveServer, value: str, expected: str) -> None:
    status, _, body = call("GET", f"{server.url}/api/stream?channel=random-walk&interval={value}")
    assert status == 400 and expected in body["error"], body
    assert ".0" not in body["error"].rsplit("got", 1)[1]


def test_cors_preflight_allows_idempotency_key(server: LiveServer) -> None:
    status, headers, _ = call("OPTIONS", f"{server.url}/api/push/newb/x", headers={
        "Origin": "http://grafana.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,idempotency-key"})
    assert status == 204
    allowed = [h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")]
    assert "idempotency-key" in allowed and "content-type" in allowed and "authorization" in allowed


def test_channel_list_keys_are_the_documented_ones(server: LiveServer) -> None:
    """docs/protocol.md lists the keys of ``GET /api/channels``; nothing more, nothing less."""
    call("POST", f"{server.url}/api/push/newb/keys", b'{"v": 1}', {"Content-Type": "application/json"})
    listed = channels(server)
    pushed = listed["newb/keys"]
    assert set(pushed) == {"name", "schema", "last_time", "points_per_s", "points", "generated"}
    assert pushed["generated"] is False and pushed["schema"] == [{"name": "v", "type": "number"}]
    base = listed["random-walk"]
    assert set(base) == {"name", "schema", "last_time", "points_per_s", "points", "generated", "params"}
    assert base["generated"] is True and base["params"] == {"series": 1, "interval": 50, "spread": 1.0}


def test_new_generated_channel_with_params_is_listed_as_generated_at_its_rate(server: LiveServer) -> None:
    """A new generator publishes an hour of history at once; its rate is still its own (20 rows/s)."""
    req = urllib.request.Request(f"{server.url}/api/stream?channel=sine&series=2&interval=50&from=now-1s")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.readline()  # hello
        r.readline()  # the first data: the generator runs
    deadline = time.monotonic() + 5
    while "sine/series=2" not in channels(server):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    entry = channels(server)["sine/series=2"]
    assert entry["generated"] is True and entry["params"] == {"series": 2, "interval": 50, "period": 10000}
    assert entry["points_per_s"] == 20.0, entry
    assert entry["points"] > 1000  # the history it filled


def test_reserved_names_are_exactly_the_generated_ones(server: LiveServer) -> None:
    """docs/ingest.md: `random-walk`, `sine` and names under them are reserved; `sine2` is not."""
    ok = call("POST", f"{server.url}/api/push/sine2", b'{"v": 1}', {"Content-Type": "application/json"})
    assert ok[0] == 204
    for name in ("sine", "sine/x", "random-walk/mine"):
        status, _, body = call("POST", f"{server.url}/api/push/{name}", b'{"v": 1}',
                               {"Content-Type": "application/json"})
        assert status == 400 and "generated by the server" in body["error"], (name, body)


def test_points_beyond_retention_are_not_served(server: LiveServer) -> None:
    """Retention is 1 h by point time: 2024-dated points, pushed now, are never served."""
    body = json.dumps([{"time": "2024-05-01T12:00:00Z", "v": 1}, {"time": "2024-05-01T12:00:01Z", "v": 2}]).encode()
    assert call("POST", f"{server.url}/api/push/newb/old", body, {"Content-Type": "application/json"})[0] == 204
    url = f"{server.url}/api/stream?channel=newb/old&from=0&to=now"
    with urllib.request.urlopen(url, timeout=10) as r:
        messages = [json.loads(line) for line in r.read().splitlines()]
    rows = [v for m in messages if m["type"] == "data" for v in m["frame"]["data"]["values"][0]]
    assert rows == [] and messages[-1]["type"] == "complete", messages


@pytest.fixture
def limited() -> Iterator[dict[str, LiveServer]]:
    servers = {
        "trusting": LiveServer(["--trusted-proxies", "127.0.0.1/32", "--max-connections-per-ip", "1"]).start(),
        "plain": LiveServer(["--max-connections-per-ip", "1"]).start(),
    }
    yield servers
    for s in servers.values():
        s.stop()


def _open_stream(server: LiveServer, forwarded_for: str) -> Any:
    req = urllib.request.Request(f"{server.url}/api/stream?channel=random-walk",
                                 headers={"X-Forwarded-For": forwarded_for})
    try:
        r = urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as e:
        return e.code
    r.readline()  # hello: the connection is registered
    return r


def test_trusted_proxies_decide_the_per_address_limit(limited: dict[str, LiveServer]) -> None:
    """Behind a trusted proxy two clients are two addresses; a client's own header is not believed
    without --trusted-proxies (every connection is the proxy's then)."""
    trusting, plain = limited["trusting"], limited["plain"]
    a = _open_stream(trusting, "198.51.100.1")
    b = _open_stream(trusting, "198.51.100.2")
    again = _open_stream(trusting, "198.51.100.1")
    try:
        assert not isinstance(a, int) and not isinstance(b, int)
        assert again == 429
    finally:
        for r in (a, b, again):
            if not isinstance(r, int):
                r.close()
    c = _open_stream(plain, "198.51.100.1")
    d = _open_stream(plain, "198.51.100.2")
    try:
        assert not isinstance(c, int) and d == 429
    finally:
        for r in (c, d):
            if not isinstance(r, int):
                r.close()
