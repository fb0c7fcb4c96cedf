"""OpenTelemetry metrics end to end: the real Python SDK's OTLP/HTTP exporter, pointed at livedata.

Counters, up-down counters, gauges and histograms from the SDK land in ``otel/<metric>`` with
resource and point attributes as labels; raw OTLP (protobuf, JSON, gzip, truncated, wrong
types) gets the answers the OTLP/HTTP specification gives.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.conftest import KEEP_OLD, LiveServer
from tests.integration.test_ingest import history

TOKEN = "otel-write"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--max-body-bytes", str(1 << 20), *KEEP_OLD]).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def export_with_sdk(url: str, compression: Compression, headers: dict[str, str] | None = None,
                    service: str = "checkout") -> None:
    exporter = OTLPMetricExporter(endpoint=f"{url}/v1/metrics", compression=compression, headers=headers)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    resource = Resource.create({"service.name": service, "service.instance.id": "i-1", "deployment": "test"})
    provider = MeterProvider(resource=resource,
                             metric_readers=[reader])
    meter = provider.get_meter("shop")
    orders = meter.create_counter("orders", unit="1")
    queue = meter.create_up_down_counter("queue.depth")
    latency = meter.create_histogram("http.server.duration", unit="ms")
    temp = meter.create_gauge("room.temperature")  # the SDK takes ASCII instrument names only
    orders.add(3, {"method": "card"})
    orders.add(2, {"method": "cash"})
    queue.add(7)
    for v in (5, 20, 20, 300):
        latency.record(v, {"route": "/pay"})
    temp.set(21.5, {"pièce": "salon"})
    provider.force_flush()
    provider.shutdown()


def labels(**extra: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted({"deployment": "test", "service.instance.id": "i-1",
                                                      "service.name": "checkout", **extra}.items()))
    return "{" + inner + "}"


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
async def test_sdk_exporter(server: LiveServer, http: aiohttp.ClientSession, compression: Compression) -> None:
    service = f"svc-{compression.value}"
    export_with_sdk(server.url, compression, service=service)

    def last(rows: list[tuple[int, dict[str, object]]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for _, values in rows:
            out.update(values)
        return {k: v for k, v in out.items() if f'service.name="{service}"' in k}

    def key(name: str, **extra: str) -> str:
        return f"{name} {labels(**extra)}".replace('service.name="checkout"', f'service.name="{service}"')

    orders = last((await history(http, server.url, "otel/orders")).rows)
    assert orders == {key("orders", method="card"): 3, key("orders", method="cash"): 2}
    assert last((await history(http, server.url, "otel/queue.depth")).rows) == {key("queue.depth"): 7}
    assert last((await history(http, server.url, "otel/room.temperature")).rows) == {
        key("room.temperature", pièce="salon"): 21.5}
    hist = last((await history(http, server.url, "otel/http.server.duration")).rows)
    assert hist[key("http.server.duration_count", route="/pay")] == 4
    assert hist[key("http.server.duration_sum", route="/pay")] == 345
    assert hist[key("http.server.duration_min", route="/pay")] == 5
    assert hist[key("http.server.duration_max", route="/pay")] == 300
    assert hist[key("http.server.duration_bucket", route="/pay", le="+Inf")] == 4
    assert hist[key("http.server.duration_bucket", route="/pay", le="25")] == 3
    assert hist[key("http.server.duration_bucket", route="/pay", le="5")] == 1
    async with http.get(f"{server.url}/api/channels") as r:
        names = {c["name"] for c in (await r.json())["channels"]}
    assert {"otel/orders", "otel/queue.depth", "otel/http.server.duration", "otel/room.temperature"} <= names


async def test_sdk_exporter_with_tokens(http: aiohttp.ClientSession) -> None:
    secured = LiveServer(["--write-tokens", TOKEN, *KEEP_OLD]).start()
    try:
        export_with_sdk(secured.url, Compression.NoCompression, {"Authorization": "Bearer nope"}, service="bad")
        export_with_sdk(secured.url, Compression.NoCompression, {"Authorization": f"Bearer {TOKEN}"}, service="ok")
        rows = (await history(http, secured.url, "otel/orders")).rows
        services = {k.split('service.name="')[1].split('"')[0] for _, values in rows for k in values}
        assert services == {"ok"}
        async with http.post(f"{secured.url}/v1/metrics", data=one_gauge("x").SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf"}) as r:
            assert r.status == 401
            assert "token" in Status.FromString(await r.read()).message
    finally:
        secured.stop()


def one_gauge(name: str, value: float = 1.0, t: int = 1_700_000_000_000_000_000) -> ExportMetricsServiceRequest:
    point = m.NumberDataPoint(time_unix_nano=t, as_double=value,
                              attributes=[KeyValue(key="k", value=AnyValue(string_value="v"))])
    metric = m.Metric(name=name, gauge=m.Gauge(data_points=[point]))
    return ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(scope_metrics=[m.ScopeMetrics(
        metrics=[metric])])])


async def test_raw_protobuf_json_and_gzip(server: LiveServer, http: aiohttp.ClientSession) -> None:
    url = f"{server.url}/v1/metrics"
    req = one_gauge("raw.pb")
    async with http.post(url, data=req.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/x-protobuf")
        ExportMetricsServiceResponse.FromString(await r.read())
    doc = json_format.MessageToJson(one_gauge("raw.json", 2.5))
    async with http.post(url, data=gzip.compress(doc.encode()),
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}) as r:
        assert r.status == 200 and await r.json() == {}
    assert (await history(http, server.url, "otel/raw.json")).rows == [(1_700_000_000_000, {'raw.json {k="v"}': 2.5})]
    assert (await history(http, server.url, "otel/raw.pb")).rows == [(1_700_000_000_000, {'raw.pb {k="v"}': 1.0})]


async def test_raw_refusals(server: LiveServer, http: aiohttp.ClientSession) -> None:
    url = f"{server.url}/v1/metrics"
    body = one_gauge("refused").SerializeToString()
    cases = [
        (body[:-4], "application/x-protobuf", 400, "truncated"),
        (b"{not json", "application/json", 400, "malformed JSON"),
        (one_gauge("a/../b").SerializeToString(), "application/x-protobuf", 400, "'..'"),
        (one_gauge("nul\x00").SerializeToString(), "application/x-protobuf", 400, "U+0000"),
        (body, "text/plain", 415, "application/x-protobuf"),
    ]
    for data, ctype, status, needle in cases:
        async with http.post(url, data=data, headers={"Content-Type": ctype}) as r:
            raw = await r.read()
            assert r.status == status, raw
            if ctype == "application/json":
                assert needle in json.loads(raw)["message"]
            elif status == 400:
                assert needle in Status.FromString(raw).message
            else:
                assert needle in raw.decode(errors="replace")
    async with http.get(f"{server.url}/api/health") as r:
        assert r.status == 200
