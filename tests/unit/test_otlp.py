"""OTLP metrics to batches (livedata.core.otlp): the mapping, decoding, and refusals."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from livedata.core.otlp import OtlpError, decode_request, encode_response, encode_status, to_batches

T = 1_700_000_000_000_000_000  # ns
NOW = 42


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v)
                                                                               for v in value])))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def request(*metrics: m.Metric, resource: dict[str, object] | None = None) -> ExportMetricsServiceRequest:
    res = {"service.name": "shop", "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": "1.0",
           **(resource or {})}
    rm = m.ResourceMetrics(scope_metrics=[m.ScopeMetrics(metrics=list(metrics))])
    rm.resource.attributes.extend(kv(k, v) for k, v in res.items())
    return ExportMetricsServiceRequest(resource_metrics=[rm])


def gauge(name: str, *points: m.NumberDataPoint) -> m.Metric:
    return m.Metric(name=name, gauge=m.Gauge(data_points=list(points)))


def point(value: float | int, t: int = T, **attrs: object) -> m.NumberDataPoint:
    p = m.NumberDataPoint(time_unix_nano=t, attributes=[kv(k, v) for k, v in attrs.items()])
    if isinstance(value, int):
        p.as_int = value
    else:
        p.as_double = value
    return p


def rows(req: ExportMetricsServiceRequest) -> dict[str, list[tuple[int, dict[str, object]]]]:
    out = {}
    for channel, batch in to_batches(req, NOW, 1000).items():
        out[channel] = [(t, {k: col[i] for k, col in batch.columns.items() if col[i] is not None})
                        for i, t in enumerate(batch.times)]
    return out


def test_gauge_and_sum_with_resource_and_point_attributes() -> None:
    s = m.Metric(name="http.requests", sum=m.Sum(data_points=[point(7, method="GET"), point(2, method="POST")],
                                                 is_monotonic=True, aggregation_temporality=2))
    got = rows(request(gauge("cpu.temp", point(21.5, core=0), point(22.0, T + 10**9, core=0)), s))
    assert got == {
        "otel/cpu.temp": [(T // 10**6, {'cpu.temp {core="0",service.name="shop"}': 21.5}),
                          (T // 10**6 + 1000, {'cpu.temp {core="0",service.name="shop"}': 22.0})],
        "otel/http.requests": [(T // 10**6, {'http.requests {method="GET",service.name="shop"}': 7,
                                             'http.requests {method="POST",service.name="shop"}': 2})],
    }
    batch = to_batches(request(gauge("g", point(1, core=0))), NOW, 10)["otel/g"]
    (fd,) = batch.fields.values()
    assert (fd.name, fd.type, dict(fd.labels)) == ("g", "number", {"core": "0", "service.name": "shop"})


def test_attribute_values_that_are_not_strings_are_json_and_points_override_the_resource() -> None:
    p = point(1.0, flag=True, ratio=0.5, tags=["a", "b"], service_name="x")
    p.attributes.append(kv("service.name", "override"))
    p.attributes.append(kv("empty", ""))
    (channel,) = rows(request(gauge("g", p))).values()
    (key,) = channel[0][1]
    assert key == ('g {flag="true",ratio="0.5",service.name="override",service_name="x",'
                   'tags="["a","b"]"}')


def test_histogram_count_sum_min_max_and_cumulative_buckets() -> None:
    h = m.HistogramDataPoint(time_unix_nano=T, count=6, sum=12.5, bucket_counts=[1, 2, 3], explicit_bounds=[0.5, 1],
                             min=0.1, max=9.0, attributes=[kv("route", "/")])
    (got,) = rows(request(m.Metric(name="latency", histogram=m.Histogram(data_points=[h])))).values()
    lab = 'route="/",service.name="shop"'
    assert got == [(T // 10**6, {
        f"latency_count {{{lab}}}": 6, f"latency_sum {{{lab}}}": 12.5, f"latency_min {{{lab}}}": 0.1,
        f"latency_max {{{lab}}}": 9.0, f'latency_bucket {{le="0.5",{lab}}}': 1, f'latency_bucket {{le="1",{lab}}}': 3,
        f'latency_bucket {{le="+Inf",{lab}}}': 6,
    })]
    bad = m.HistogramDataPoint(time_unix_nano=T, count=1, bucket_counts=[1], explicit_bounds=[1.0])
    with pytest.raises(OtlpError, match="1 bucket counts for 1 explicit bounds"):
        to_batches(request(m.Metric(name="h", histogram=m.Histogram(data_points=[bad]))), NOW, 10)


def test_exponential_histogram_and_summary() -> None:
    e = m.ExponentialHistogramDataPoint(time_unix_nano=T, count=3, sum=4.0, scale=1)
    s = m.SummaryDataPoint(time_unix_nano=T, count=10, sum=55.0, quantile_values=[
        m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=5.0),
        m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=9.9)])
    got = rows(request(m.Metric(name="e", exponential_histogram=m.ExponentialHistogram(data_points=[e])),
                       m.Metric(name="s", summary=m.Summary(data_points=[s]))))
    lab = 'service.name="shop"'
    assert got["otel/e"] == [(T // 10**6, {f"e_count {{{lab}}}": 3, f"e_sum {{{lab}}}": 4.0})]
    assert got["otel/s"] == [(T // 10**6, {f"s_count {{{lab}}}": 10, f"s_sum {{{lab}}}": 55.0,
                                           f's {{quantile="0.5",{lab}}}': 5.0, f's {{quantile="0.99",{lab}}}': 9.9})]


def test_no_time_no_value_and_non_finite_values() -> None:
    flagged = point(1.0)
    flagged.flags = 1
    got = rows(request(gauge("g", point(1.0, t=0), flagged, point(float("nan")), point(float("inf")))))
    assert got == {"otel/g": [(NOW, {'g {service.name="shop"}': 1.0})]}
    assert to_batches(request(gauge("empty")), NOW, 10) == {}


@pytest.mark.parametrize(
    ("metric", "resource", "why"),
    [
        (gauge("a\x00b", point(1.0)), {}, "U+0000"),
        (gauge("..", point(1.0)), {}, "'..' is not allowed"),
        (gauge("", point(1.0)), {}, "must not be empty"),
        (gauge("g", point(1.0)), {"bad\nkey": "v"}, "U+000A"),
        (gauge("g", point(1.0)), {"k": "v\x7f"}, "U+007F"),
        (gauge("g", point(1.0)), {f"k{i}": "v" for i in range(70)}, "the limit is 64"),
        (gauge("g" * 300, point(1.0)), {}, "the limit is"),
    ],
)
def test_refusals(metric: m.Metric, resource: dict[str, object], why: str) -> None:
    with pytest.raises(OtlpError) as info:
        to_batches(request(metric, resource=resource), NOW, 10)
    assert why in str(info.value)


def test_an_empty_attribute_value_does_not_make_an_empty_key_pass() -> None:
    p = point(1.0, k="")
    to_batches(request(gauge("g", p)), NOW, 10)  # k="" is no label
    with pytest.raises(OtlpError, match="must not be empty"):
        to_batches(request(gauge("g", point(1.0, **{"": "v"}))), NOW, 10)


def test_too_many_points() -> None:
    with pytest.raises(OtlpError, match="more than 3"):
        to_batches(request(gauge("g", *(point(float(i), T + i) for i in range(4)))), NOW, 3)


def test_decode_protobuf_and_json() -> None:
    req = request(gauge("g", point(1.5, core=1)))
    assert decode_request(req.SerializeToString(), json=False) == req
    doc = json_format.MessageToDict(req)  # OTLP JSON: lowerCamelCase, int64 as strings
    doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["exemplars"] = [
        {"traceId": "5b8efff798038103d269b633813fc60c", "asDouble": 1.0, "timeUnixNano": "1"}]
    assert decode_request(json.dumps(doc).encode(), json=True) == req
    with pytest.raises(OtlpError, match="truncated"):
        decode_request(req.SerializeToString()[:-3], json=False)
    for bad in (b"{", b"[]", b'{"resourceMetrics": 5}'):
        with pytest.raises(OtlpError):
            decode_request(bad, json=True)


def test_responses() -> None:
    body, ctype = encode_response(json=False)
    assert ctype == "application/x-protobuf" and ExportMetricsServiceResponse.FromString(body) is not None
    assert encode_response(json=True) == (b"{}", "application/json")
    body, ctype = encode_status(3, "bad metric ✓", json=False)
    status = Status.FromString(body)
    assert (status.code, status.message, ctype) == (3, "bad metric ✓", "application/x-protobuf")
    body, ctype = encode_status(3, "x" * 300, json=True)
    assert json.loads(body) == {"code": 3, "message": "x" * 300}
