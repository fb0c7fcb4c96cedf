"""OpenTelemetry metrics (OTLP) to batches: decode an export request, name its channels. Pure.

Decoding uses the published ``opentelemetry-proto`` messages, for protobuf and for OTLP's JSON
encoding. The mapping (docs/ingest.md, "OpenTelemetry"):

* Each metric goes to the channel ``otel/<metric name>`` (:func:`livedata.core.names.child_channel`).
* Resource attributes (except the SDK's own ``telemetry.sdk.*``) and data point attributes become
  field labels; a point attribute wins over a resource attribute of the same key. Values that are
  not strings are written as JSON (``42``, ``true``, ``["a","b"]``).
* Gauges and sums: one field named after the metric, e.g. ``http.requests {method="GET"}``.
  Sums keep their temporality and monotonicity as sent (a cumulative counter stays cumulative).
* Histograms: ``<name>_count``, ``<name>_sum`` and ``<name>_bucket`` with an ``le`` label per
  upper bound (``+Inf`` last), cumulative as in Prometheus; ``<name>_min`` / ``<name>_max`` when
  present. Exponential histograms: count, sum, min and max (their buckets are not kept).
  Summaries: count, sum and ``<name> {quantile="0.99"}``.
* A point's time is its ``time_unix_nano`` in milliseconds (the server's clock when it is 0).
  Points flagged "no recorded value" are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from livedata.core.frames import Batch, Column, FieldDef, Value, column
from livedata.core.limits import MAX_FIELD_CHARS, MAX_LABELS
from livedata.core.names import InvalidName, check_name, child_channel, show

__all__ = ["BASE", "OtlpError", "decode_request", "encode_response", "encode_status", "to_batches"]

BASE = "otel"
"""The channel level OTLP metrics go under: ``otel/<metric name>``."""

_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK
_SDK_ATTRIBUTE_PREFIXES = ("telemetry.sdk.", "telemetry.distro.")


class OtlpError(ValueError):
    """An export request that stores nothing; the message says what is wrong."""


def decode_request(body: bytes, json: bool) -> ExportMetricsServiceRequest:
    """An ``ExportMetricsServiceRequest`` from OTLP protobuf or OTLP JSON."""
    request = ExportMetricsServiceRequest()
    if not json:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpError(f"not an OTLP protobuf ExportMetricsServiceRequest ({exc}); a truncated body?") from None
        return request
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise OtlpError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise OtlpError("malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise OtlpError("an OTLP JSON body must be an object with resourceMetrics")
    _drop_exemplars(obj)  # their trace ids are hex in OTLP JSON, base64 to protobuf's JSON; unused here
    try:
        json_format.ParseDict(obj, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise OtlpError(f"not an OTLP JSON ExportMetricsServiceRequest: {exc}") from None
    except RecursionError:
        raise OtlpError("not an OTLP JSON ExportMetricsServiceRequest: nested too deeply") from None
    return request


def _drop_exemplars(obj: Any, depth: int = 0) -> None:
    if depth > 12:
        return
    if isinstance(obj, dict):
        obj.pop("exemplars", None)
        for v in obj.values():
            _drop_exemplars(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _drop_exemplars(v, depth + 1)


def encode_response(json: bool) -> tuple[bytes, str]:
    """An empty ``ExportMetricsServiceResponse`` (everything accepted) and its content type."""
    if json:
        return b"{}", "application/json"
    return ExportMetricsServiceResponse().SerializeToString(), "application/x-protobuf"


def encode_status(code: int, message: str, json: bool) -> tuple[bytes, str]:
    """A ``google.rpc.Status`` for an error response, as OTLP/HTTP says to send it."""
    if json:
        return msgspec.json.encode({"code": code, "message": message}), "application/json"
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text, "application/x-protobuf"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _attribute_text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return ""
    return msgspec.json.encode(_plain(value)).decode()


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)
    return getattr(value, kind) if kind else None


_GOOD: set[str] = set()
"""Label keys and values already found allowed (bounded): most points repeat their attributes."""


def _labels(attributes: Iterable[KeyValue], into: dict[str, str], where: str) -> None:
    good = _GOOD
    for kv in attributes:
        key = kv.key
        text = _attribute_text(kv.value)
        if key not in good or (text and text not in good):
            try:
                check_name(key, f"{where} attribute key")
                if text:
                    check_name(text, f"value of {where} attribute {show(key)}")
            except InvalidName as exc:
                raise OtlpError(str(exc)) from None
            if len(good) > 65_536:
                good.clear()
            good.add(key)
            if text:
                good.add(text)
        if text:
            into[key] = text
        else:
            into.pop(key, None)  # an empty value is no label, as in Prometheus


class _Channel:
    """Rows (one per distinct time) and columns of one channel being built."""

    __slots__ = ("by_series", "columns", "fields", "rows", "times")

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}
        self.times: list[int] = []
        self.columns: dict[str, dict[int, Value]] = {}
        self.fields: dict[str, FieldDef] = {}
        self.by_series: dict[tuple[str, frozenset[tuple[str, str]]], dict[int, Value]] = {}

    def put(self, time_ms: int, name: str, labels: Mapping[str, str], value: Value) -> None:
        row = self.rows.get(time_ms)
        if row is None:
            row = self.rows[time_ms] = len(self.times)
            self.times.append(time_ms)
        series = (name, frozenset(labels.items()))
        column = self.by_series.get(series)
        if column is None:
            fd = FieldDef.of(name, "number", dict(sorted(labels.items())) or None)
            self.fields.setdefault(fd.key, fd)
            column = self.by_series[series] = self.columns.setdefault(fd.key, {})
        column[row] = value

    def batch(self) -> Batch:
        order = sorted(range(len(self.times)), key=self.times.__getitem__)
        times = [self.times[i] for i in order]
        row_of = {i: r for r, i in enumerate(order)}
        columns: dict[str, Column] = {}
        for k, col in self.columns.items():  # a series holds a value in some rows only: sparse when few
            rows = sorted((row_of[i], v) for i, v in col.items())
            columns[k] = column(len(times), [r for r, _ in rows], [v for _, v in rows])
        return Batch(times, columns, self.fields)


def to_batches(request: ExportMetricsServiceRequest, now_ms: int, max_points: int) -> dict[str, Batch]:
    """One batch per channel (``otel/<metric name>``). All or nothing: raises :class:`OtlpError`."""
    out: dict[str, _Channel] = {}
    count = 0
    for rm in request.resource_metrics:
        resource: dict[str, str] = {}
        _labels((kv for kv in rm.resource.attributes if not kv.key.startswith(_SDK_ATTRIBUTE_PREFIXES)),
                resource, "resource")
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                name = metric.name
                try:
                    check_name(name, "metric name", MAX_FIELD_CHARS - len("_bucket"))
                    channel = child_channel(BASE, name, "metric")
                except InvalidName as exc:
                    raise OtlpError(str(exc)) from None
                sink = out.get(channel)
                if sink is None:
                    sink = out[channel] = _Channel()
                count += _add_metric(sink, metric, resource, now_ms)
                if count > max_points:
                    raise OtlpError(f"too many data points in one request: more than {max_points}; "
                                    "export smaller batches")
    return {channel: sink.batch() for channel, sink in out.items() if sink.times}


def _point_labels(resource: Mapping[str, str], attributes: Sequence[KeyValue]) -> dict[str, str]:
    labels = dict(resource)
    _labels(attributes, labels, "data point")
    if len(labels) > MAX_LABELS:
        raise OtlpError(f"a data point has {len(labels)} labels (resource and point attributes); "
                        f"the limit is {MAX_LABELS}")
    return labels


def _time(time_unix_nano: int, now_ms: int) -> int:
    return time_unix_nano // 1_000_000 if time_unix_nano else now_ms


def _add_metric(sink: _Channel, metric: Any, resource: Mapping[str, str], now_ms: int) -> int:
    name = metric.name
    kind = metric.WhichOneof("data")
    n = 0
    if kind in ("gauge", "sum"):
        for p in getattr(metric, kind).data_points:
            if p.flags & _NO_RECORDED_VALUE:
                continue
            value: Value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
            if isinstance(value, float) and not math.isfinite(value):
                continue  # NaN/Inf: no number a Grafana frame can carry; a gap instead
            sink.put(_time(p.time_unix_nano, now_ms), name, _point_labels(resource, p.attributes), value)
            n += 1
    elif kind == "histogram":
        for p in metric.histogram.data_points:
            if p.flags & _NO_RECORDED_VALUE:
                continue
            t = _time(p.time_unix_nano, now_ms)
            labels = _point_labels(resource, p.attributes)
            _summary_fields(sink, t, name, labels, p)
            if p.bucket_counts:
                bounds = [*(_bound(b) for b in p.explicit_bounds), "+Inf"]
                if len(bounds) != len(p.bucket_counts):
                    raise OtlpError(f"histogram {show(name)}: {len(p.bucket_counts)} bucket counts for "
                                    f"{len(p.explicit_bounds)} explicit bounds (expected one more count)")
                total = 0
                for le, c in zip(bounds, p.bucket_counts, strict=True):
                    total += c
                    sink.put(t, f"{name}_bucket", {**labels, "le": le}, total)
            n += 1
    elif kind == "exponential_histogram":
        for p in metric.exponential_histogram.data_points:
            if p.flags & _NO_RECORDED_VALUE:
                continue
            _summary_fields(sink, _time(p.time_unix_nano, now_ms), name, _point_labels(resource, p.attributes), p)
            n += 1
    elif kind == "summary":
        for p in metric.summary.data_points:
            if p.flags & _NO_RECORDED_VALUE:
                continue
            t = _time(p.time_unix_nano, now_ms)
            labels = _point_labels(resource, p.attributes)
            sink.put(t, f"{name}_count", labels, p.count)
            sink.put(t, f"{name}_sum", labels, p.sum)
            for q in p.quantile_values:
                sink.put(t, name, {**labels, "quantile": _bound(q.quantile)}, q.value)
            n += 1
    return n


def _summary_fields(sink: _Channel, t: int, name: str, labels: Mapping[str, str], p: Any) -> None:
    sink.put(t, f"{name}_count", labels, p.count)
    if p.HasField("sum"):
        sink.put(t, f"{name}_sum", labels, p.sum)
    if p.HasField("min"):
        sink.put(t, f"{name}_min", labels, p.min)
    if p.HasField("max"):
        sink.put(t, f"{name}_max", labels, p.max)


def _bound(x: float) -> str:
    """A bucket bound or quantile as Prometheus writes it: 0.5, 1, 2.5, +Inf."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    return repr(float(x)) if x != int(x) else str(int(x))
