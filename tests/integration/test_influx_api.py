"""The InfluxDB write API with real InfluxDB clients against a real ``livedata serve``.

``influxdb-client`` (InfluxDB 2: synchronous and batching write APIs, health, ping, ready), the
``influxdb`` 1.x client, and raw HTTP for what clients and Telegraf rely on: status codes, error
bodies, gzip (and gzip bombs), tokens in every place InfluxDB takes them.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import psutil
import pytest
from influxdb import InfluxDBClient as InfluxDB1Client
from influxdb_client import InfluxDBClient, Point, WriteOptions
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS

from tests.conftest import KEEP_OLD, LiveServer
from tests.integration.test_ingest import history

WRITE = "w-token"
READ = "r-token"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--max-body-bytes", str(1 << 20), *KEEP_OLD]).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def secured() -> Iterator[LiveServer]:
    s = LiveServer(["--write-tokens", WRITE, "--read-tokens", READ, *KEEP_OLD]).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# --- influxdb-client (InfluxDB 2) ---------------------------------------------------------------------------


async def test_influxdb_client_synchronous_write(server: LiveServer, http: aiohttp.ClientSession) -> None:
    with InfluxDBClient(url=server.url, token="anything", org="any-org") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        api.write(bucket="v2sync", record=Point("my sensor").tag("room", "salle à manger").field("temp", 21.5)
                  .field("ok", True).field("note", "line one\nline two").time(1_700_000_000_000, "ms"))
        api.write(bucket="v2sync", record=["cpu,host=a usage=1.5 1700000000000000000",
                                           "cpu,host=b usage=2.5 1700000000000000000"])
        api.write(bucket="v2sync", record={"measurement": "job:rate5m", "fields": {"v": 3}, "time": 1_700_000_000},
                  write_precision="s")
    got = await history(http, server.url, "v2sync/my sensor")
    assert got.rows == [(1_700_000_000_000, {'temp {room="salle à manger"}': 21.5, 'ok {room="salle à manger"}': True,
                                            'note {room="salle à manger"}': "line one\nline two"})]
    assert (await history(http, server.url, "v2sync/cpu")).rows == [
        (1_700_000_000_000, {'usage {host="a"}': 1.5, 'usage {host="b"}': 2.5})]
    assert (await history(http, server.url, "v2sync/job:rate5m")).rows == [(1_700_000_000_000, {"v": 3})]


async def test_influxdb_client_batching_write(server: LiveServer, http: aiohttp.ClientSession) -> None:
    with (InfluxDBClient(url=server.url, token="anything", org="any-org") as client,
          client.write_api(write_options=WriteOptions(batch_size=50, flush_interval=200)) as api):
        t0 = now_ms() - 10_000  # recent: --retention (1 h) trims older chunks
        for i in range(500):
            api.write(bucket="v2batch", record=Point("m").field("i", i).time(t0 + i, "ms"))
    got = await history(http, server.url, "v2batch/m")
    assert [row[1]["i"] for row in got.rows] == list(range(500))


def test_influxdb_client_readiness_checks(server: LiveServer) -> None:
    with InfluxDBClient(url=server.url, token="anything", org="any-org") as client:
        assert client.ping() is True
        health = client.health()
        assert (health.status, health.name) == ("pass", "influxdb")
        assert client.ready().status == "ready"
        assert client.version()


def test_influxdb_client_sees_errors(server: LiveServer) -> None:
    with InfluxDBClient(url=server.url, token="anything", org="any-org") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        with pytest.raises(InfluxDBError) as info:
            api.write(bucket="v2err", record="m v=1\nm v=oops")
        assert info.value.response.status == 400
        assert "line 2, column 5" in info.value.message
        api.write(bucket="v2err", record="t v=1")
        with pytest.raises(InfluxDBError) as info:
            api.write(bucket="v2err", record='t v="text"')  # a field keeps one type
        assert info.value.response.status == 422


def test_influxdb_client_with_tokens(secured: LiveServer) -> None:
    with InfluxDBClient(url=secured.url, token=WRITE, org="o") as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket="tok", record="m v=1")
    for token, status in (("wrong", 401), (READ, 403)):
        with InfluxDBClient(url=secured.url, token=token, org="o") as client:
            with pytest.raises(InfluxDBError) as info:
                client.write_api(write_options=SYNCHRONOUS).write(bucket="tok", record="m v=1")
            assert info.value.response.status == status
        with InfluxDBClient(url=secured.url, token=token, org="o") as client:
            assert client.ping() is True  # readiness checks need no token, as in InfluxDB


# --- the influxdb 1.x client ---------------------------------------------------------------------------------


async def test_influxdb_1x_client(server: LiveServer, http: aiohttp.ClientSession) -> None:
    client = InfluxDB1Client(host="127.0.0.1", port=server.port, database="v1db")
    try:
        assert client.ping()
        client.create_database("v1db")  # answered, nothing to do
        assert client.write_points([
            {"measurement": "cpu load", "tags": {"host": "a"}, "time": 1_700_000_000_000_000_000,
             "fields": {"value": 0.5, "n": 3}},
        ])
        assert client.write_points(["température,pièce=salon valeur=21.5 1700000000"], time_precision="s",
                                   protocol="line")
    finally:
        client.close()
    assert (await history(http, server.url, "v1db/cpu load")).rows == [
        (1_700_000_000_000, {'value {host="a"}': 0.5, 'n {host="a"}': 3})]
    assert (await history(http, server.url, "v1db/température")).rows == [
        (1_700_000_000_000, {'valeur {pièce="salon"}': 21.5})]


def test_influxdb_1x_client_with_tokens(secured: LiveServer) -> None:
    ok = InfluxDB1Client(host="127.0.0.1", port=secured.port, username="any", password=WRITE, database="t1")
    bad = InfluxDB1Client(host="127.0.0.1", port=secured.port, username="any", password="nope", database="t1")
    try:
        assert ok.write_points(["m v=1"], protocol="line")
        with pytest.raises(Exception, match="401"):
            bad.write_points(["m v=1"], protocol="line")
    finally:
        ok.close()
        bad.close()


# --- raw HTTP -------------------------------------------------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(url, data=body, headers=headers or {}) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else {}), dict(r.headers)


@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        ("bucket=b&precision=ns", 204, None),
        ("bucket=b", 204, None),
        ("org=o&bucket=b&precision=s", 204, None),
        ("org=o", 400, "bucket"),
        ("bucket=b&precision=n", 400, "precision"),
        ("bucket=a%2F..%2Fb", 400, "'..'"),
        ("bucket=random-walk", 400, "generated"),
    ],
)
async def test_v2_write_parameters(server: LiveServer, http: aiohttp.ClientSession, query: str, status: int,
                                   needle: str | None) -> None:
    code, body, headers = await post(http, f"{server.url}/api/v2/write?{query}", b"m v=1 1700000000")
    assert code == status, body
    if needle:
        assert body["code"] == "invalid" and needle in body["message"]
        assert headers.get("X-Platform-Error-Code") == "invalid"


@pytest.mark.parametrize(
    ("precision", "stamp", "status", "time_ms"),
    [
        ("n", 1_700_000_000, 204, 1700),
        ("ns", 1_700_000_000, 204, 1700),
        ("u", 1_700_000_000, 204, 1_700_000),
        ("µ", 1_700_000_000, 204, 1_700_000),
        ("ms", 1_700_000_000, 204, 1_700_000_000),
        ("s", 1_700_000_000, 204, 1_700_000_000_000),
        ("m", 28_333_333, 204, 1_699_999_980_000),
        ("h", 472_222, 204, 1_699_999_200_000),
        ("d", 1, 400, None),
        (None, 1, 204, 0),
    ],
)
async def test_v1_write_precisions(server: LiveServer, http: aiohttp.ClientSession, precision: str | None,
                                   stamp: int, status: int, time_ms: int | None) -> None:
    name = f"p_{precision or 'default'}"
    query = {"db": "d1"} | ({"precision": precision} if precision else {})
    async with http.post(f"{server.url}/write", params=query, data=f"{name} v=1 {stamp}".encode()) as r:
        assert r.status == status, await r.text()
        body = await r.text()
    if status == 204:
        got = await history(http, server.url, f"d1/{name}")
        assert got.rows[0][0] == time_ms
    else:
        assert "precision" in json.loads(body)["error"]


async def test_v1_write_needs_a_database(server: LiveServer, http: aiohttp.ClientSession) -> None:
    code, body, _ = await post(http, f"{server.url}/write?precision=s", b"m v=1")
    assert code == 400 and "db" in body["error"]


async def test_gzip_bodies_and_bombs(server: LiveServer, http: aiohttp.ClientSession) -> None:
    body = gzip.compress(b"".join(b"gz v=%d %d\n" % (i, 1_700_000_000 + i) for i in range(1000)))
    for url in (f"{server.url}/api/v2/write?bucket=gz&precision=s", f"{server.url}/write?db=gz1&precision=s"):
        code, err, _ = await post(http, url, body, {"Content-Encoding": "gzip"})
        assert code == 204, err
    assert len((await history(http, server.url, "gz/gz")).rows) == 1000
    # 200 MB of zeros in 200 KB of gzip: stopped at --max-body-bytes (1 MiB here), the server unharmed
    # and never holding the inflated body.
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(200)) + c.flush()
    for url in (f"{server.url}/api/v2/write?bucket=bomb", f"{server.url}/write?db=bomb", f"{server.url}/v1/metrics"):
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/x-protobuf"}
        async with http.post(url, data=bomb, headers=headers) as r:
            assert r.status == 413, await r.text()
    assert server.proc is not None
    assert psutil.Process(server.proc.pid).memory_info().rss < 200 << 20
    async with http.get(f"{server.url}/api/channels") as r:
        assert not [c for c in (await r.json())["channels"] if c["name"].startswith(("bomb", "otel/"))]
    code, err, _ = await post(http, f"{server.url}/api/v2/write?bucket=gzbad", b"not gzip at all",
                              {"Content-Encoding": "gzip"})
    assert code == 400, err
    async with http.get(f"{server.url}/api/health") as r:
        assert r.status == 200


async def test_v2_error_bodies_and_codes(server: LiveServer, http: aiohttp.ClientSession) -> None:
    url = f"{server.url}/api/v2/write?bucket=codes&precision=s"
    code, body, _ = await post(http, url, b"ok v=1 1\nbad v=x 2")
    assert code == 400 and body["code"] == "invalid" and body["message"].startswith("line 2, column 7:")
    assert body["line"] == 2
    assert (await post(http, url, b"typed v=1 1"))[0] == 204
    code, body, _ = await post(http, url, b'typed v="s" 2')
    assert code == 422 and body["code"] == "unprocessable entity" and "v" in body["message"]
    code, body, _ = await post(http, url, b"x" * (2 << 20))
    assert code == 413 and body["code"] == "request too large"
    code, body, _ = await post(http, url, b"# only a comment\n")
    assert code == 204
    code, body, _ = await post(http, url, b"")
    assert code == 204


async def test_v1_error_bodies(server: LiveServer, http: aiohttp.ClientSession) -> None:
    code, body, _ = await post(http, f"{server.url}/write?db=v1e", b"m v=1\nm v=")
    assert code == 400 and body["error"].startswith("line 2, column 5:")
    code, body, _ = await post(http, f"{server.url}/write?db=v1e", b"m v=1 1\nm v=\"s\" 2")
    assert code == 400 and "error" in body


async def test_ping_health_ready_and_query(server: LiveServer, http: aiohttp.ClientSession) -> None:
    for method in ("GET", "HEAD"):
        async with http.request(method, f"{server.url}/ping") as r:
            assert r.status == 204
            assert r.headers["X-Influxdb-Build"] == "livedata" and r.headers["X-Influxdb-Version"]
            assert await r.read() == b""
    async with http.get(f"{server.url}/ping?verbose=true") as r:
        assert r.status == 200 and "version" in await r.json()
    async with http.get(f"{server.url}/health") as r:
        body = await r.json()
        assert r.status == 200 and body["status"] == "pass" and body["name"] == "influxdb"
    async with http.get(f"{server.url}/ready") as r:
        assert r.status == 200 and (await r.json())["status"] == "ready"
    async with http.get(f"{server.url}/api/health") as r:  # ours, unchanged
        assert (await r.json())["status"] == "ok"
    async with http.post(f"{server.url}/query", data={"q": 'CREATE DATABASE "x"'}) as r:
        assert r.status == 200 and (await r.json())["results"][0]["statement_id"] == 0
    async with http.post(f"{server.url}/query", params={"q": "SELECT * FROM cpu"}) as r:
        assert r.status == 400 and "only" in (await r.json())["error"]


async def test_tokens_in_every_place_influxdb_takes_them(secured: LiveServer, http: aiohttp.ClientSession) -> None:
    v2 = f"{secured.url}/api/v2/write?bucket=auth"
    v1 = f"{secured.url}/write?db=auth1"
    basic = "Basic " + base64.b64encode(f"user:{WRITE}".encode()).decode()
    for url, headers, params in [
        (v2, {"Authorization": f"Token {WRITE}"}, ""),
        (v2, {"Authorization": f"Bearer {WRITE}"}, ""),
        (v1, {"Authorization": f"Token {WRITE}"}, ""),
        (v1, {"Authorization": basic}, ""),
        (v1, {}, f"&u=x&p={WRITE}"),
    ]:
        code, body, _ = await post(http, url + params, b"m v=1", headers)
        assert code == 204, (url, headers, body)
    code, body, _ = await post(http, v2, b"m v=1")
    assert code == 401 and body["code"] == "unauthorized"
    code, body, _ = await post(http, v2, b"m v=1", {"Authorization": f"Token {READ}"})
    assert code == 403 and body["code"] == "forbidden"
    code, body, _ = await post(http, v1 + "&p=nope", b"m v=1")
    assert code == 401 and "error" in body
    assert WRITE not in json.dumps(body)
