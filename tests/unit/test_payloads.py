"""Payload decoding (MQTT messages, JSON lines): formats, flattening, times, JSON paths, rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.frames import FieldDef, SchemaError
from livedata.core.payloads import (
    JsonPath,
    PayloadError,
    PayloadFormat,
    decode_payload,
    epoch_ms,
    json_points,
    parse_time_value,
)
from livedata.core.rows import ChannelRows

NOW = 1_700_000_000_000
AUTO = PayloadFormat()


def points(payload: bytes | str, fmt: PayloadFormat = AUTO) -> list[tuple[int, dict[str, object]]]:
    raw = payload.encode() if isinstance(payload, str) else payload
    return decode_payload(raw, fmt, NOW, "base").points  # type: ignore[return-value]


def test_json_object_fields_and_arrival_time() -> None:
    assert points('{"temp": 21.5, "hum": 40, "ok": true, "state": "ON"}') == [
        (NOW, {"temp": 21.5, "hum": 40, "ok": True, "state": "ON"})]


def test_nested_objects_and_arrays_are_flattened_with_dots_nulls_skipped() -> None:
    got = points('{"AM2301": {"Temperature": 21.5, "Humidity": null}, "v": [1, {"x": 2}], "TempUnit": "C"}')
    assert got == [(NOW, {"AM2301.Temperature": 21.5, "v.0": 1, "v.1.x": 2, "TempUnit": "C"})]


@pytest.mark.parametrize(("key", "value", "want"), [
    ("time", 1_700_000_001_234, 1_700_000_001_234),               # ms
    ("timestamp", 1_700_000_001, 1_700_000_001_000),              # s
    ("ts", 1_700_000_001.5, 1_700_000_001_500),                   # s with a fraction
    ("ts", 1_700_000_001_234_567, 1_700_000_001_234),             # us
    ("time", 1_700_000_001_234_567_891, 1_700_000_001_234),       # ns
    ("Time", "2023-11-14T22:13:21.234Z", 1_700_000_001_234),      # RFC 3339, any case of the key
    ("TIMESTAMP", "2023-11-14T23:13:21.234+01:00", 1_700_000_001_234),
    ("time", "1700000001234", 1_700_000_001_234),                 # digits in a string
])
def test_time_keys_units_and_strings(key: str, value: object, want: int) -> None:
    got = points(json.dumps({key: value, "v": 1}))
    assert got == [(want, {"v": 1})]


def test_time_string_without_offset_uses_the_configured_zone() -> None:
    utc = points('{"Time": "2024-01-01T12:00:00", "v": 1}')
    berlin = points('{"Time": "2024-01-01T12:00:00", "v": 1}', PayloadFormat(tz=ZoneInfo("Europe/Berlin")))
    assert utc[0][0] == int(datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp() * 1000)
    assert utc[0][0] - berlin[0][0] == 3_600_000


def test_time_key_can_be_named_or_turned_off() -> None:
    fmt = PayloadFormat(time_keys=("last_seen",))
    assert points('{"last_seen": 1700000005000, "time": 5, "v": 1}', fmt) == [(1_700_000_005_000, {"time": 5, "v": 1})]
    off = PayloadFormat(time_keys=())
    assert points('{"time": 1700000005000, "v": 1}', off) == [(NOW, {"time": 1_700_000_005_000, "v": 1})]


def test_explicit_time_unit_wins_over_magnitude() -> None:
    fmt = PayloadFormat(time_unit="ms")
    assert points('{"ts": 86400000, "v": 1}', fmt) == [(86_400_000, {"v": 1})]  # 1970-01-02 in ms
    assert points('{"ts": 86400000, "v": 1}')[0][0] == 86_400_000_000  # auto: seconds


@pytest.mark.parametrize("bad", ['{"time": "yesterday", "v": 1}', '{"time": true, "v": 1}',
                                 '{"time": 1e300, "v": 1}', '{"time": [1], "v": 1}'])
def test_a_bad_time_is_an_error_not_a_silent_arrival_time(bad: str) -> None:
    with pytest.raises(PayloadError) as err:
        points(bad)
    assert err.value.reason == "time"


def test_array_of_objects_is_one_point_each() -> None:
    got = points('[{"ts": 1700000000, "v": 1}, {"ts": 1700000001, "v": 2}]')
    assert got == [(1_700_000_000_000, {"v": 1}), (1_700_000_001_000, {"v": 2})]


def test_json_path_picks_objects_scalars_and_every_element() -> None:
    doc = {"ts": 1_700_000_000, "data": {"temp": 20.5, "unit": "C"},
           "readings": [{"ts": 1_700_000_001, "v": 1}, {"v": 2}], "sensors": [[1, 2], [3]]}
    fmt = PayloadFormat(path=JsonPath.parse("$.data"))
    assert json_points(doc, fmt, NOW) == [(1_700_000_000_000, {"temp": 20.5, "unit": "C"})]  # root time
    fmt = PayloadFormat(path=JsonPath.parse("$.data.temp"))
    assert json_points(doc, fmt, NOW) == [(1_700_000_000_000, {"temp": 20.5})]
    fmt = PayloadFormat(path=JsonPath.parse("readings[*]"))
    assert json_points(doc, fmt, NOW) == [(1_700_000_001_000, {"v": 1}), (1_700_000_000_000, {"v": 2})]
    fmt = PayloadFormat(path=JsonPath.parse("$['readings'][-1]"))
    assert json_points(doc, fmt, NOW) == [(1_700_000_000_000, {"v": 2})]
    with pytest.raises(PayloadError, match="no key 'nope'"):
        json_points(doc, PayloadFormat(path=JsonPath.parse("$.nope")), NOW)
    with pytest.raises(PayloadError, match=r"no element \[5\]"):
        json_points(doc, PayloadFormat(path=JsonPath.parse("$.readings[5]")), NOW)


@pytest.mark.parametrize("bad", ["", "$.a..b", "$[x]", "$.a[", "a b]"])
def test_bad_json_paths_are_refused_with_a_sentence(bad: str) -> None:
    with pytest.raises(ValueError, match="JSON path"):
        JsonPath.parse(bad)


@pytest.mark.parametrize(("payload", "want"), [
    ("21.5", 21.5), ("-3", -3), ("1e3", 1000.0), (" 42 \n", 42), ("true", True), ('"idle"', "idle"),
    ("ON", "ON"), ("online", "online"),
])
def test_bare_values_are_the_field_value(payload: str, want: object) -> None:
    assert points(payload) == [(NOW, {"value": want})]


def test_empty_payload_and_null_give_nothing() -> None:
    assert points(b"") == []
    assert points(b"  ") == []
    assert points(b"null") == []


def test_line_protocol_goes_to_base_slash_measurement_with_tags_as_labels() -> None:
    got = decode_payload(b"cpu,host=a usage=12.5 1700000000000000000\nmem used=3i 1700000000000000000\n",
                         AUTO, NOW, "telegraf/x")
    assert got.points == []
    assert set(got.batches) == {"telegraf/x/cpu", "telegraf/x/mem"}
    cpu = got.batches["telegraf/x/cpu"]
    assert cpu.times == [1_700_000_000_000]
    assert cpu.columns == {'usage {host="a"}': [12.5]}
    assert cpu.fields['usage {host="a"}'].labels == (("host", "a"),)


def test_line_protocol_precision_follows_time_unit() -> None:
    got = decode_payload(b"m v=1 1700000000", PayloadFormat(kind="line-protocol", time_unit="s"), NOW, "b")
    assert got.batches["b/m"].times == [1_700_000_000_000]


@pytest.mark.parametrize(("fmt", "payload", "reason"), [
    ("auto", b'{"temp": ', "json"),
    ("auto", b"\xff\xfe", "encoding"),
    ("json", b"ON", "json"),
    ("number", b"ON", "number"),
    ("number", b"1e999", "number"),
    ("auto", b'{"a": {}}', "fields"),
    ("auto", b'{"": 1}', "fields"),
    ("auto", b'{"big": 99999999999999999999999}', "fields"),
    ("auto", ("x" * 2000).encode(), "format"),
    ("auto", b"line one\nline two", "format"),
    ("auto", b"cpu usage=1\ncpu usage=", "lineprotocol"),
    ("line-protocol", b"not line protocol", "lineprotocol"),
    ("auto", b"[[1, 2]]", "json"),
    ("auto", b"[]", "json"),
])
def test_malformed_payloads_name_a_reason(fmt: str, payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        decode_payload(payload, PayloadFormat(kind=fmt), NOW, "b")  # type: ignore[arg-type]
    assert err.value.reason == reason
    assert str(err.value)


def test_too_many_fields_and_too_deep_are_refused() -> None:
    wide = json.dumps({f"f{i}": i for i in range(1001)})
    with pytest.raises(PayloadError, match="more than 1000 fields"):
        points(wide)
    deep = "[" * 100 + "]" * 100
    with pytest.raises(PayloadError):
        points('{"a": ' + deep + "}")
    very_deep = "[" * 100_000 + "]" * 100_000  # msgspec's recursion limit: an error, not a crash
    with pytest.raises(PayloadError, match="nested deeper"):
        points('{"a": ' + very_deep + "}")
    with pytest.raises(PayloadError, match="nested deeper"):
        points(very_deep)


@given(st.integers(min_value=100_000_000_000, max_value=4_102_444_800_000))  # 1973 .. 2100 in ms
def test_auto_unit_reads_the_same_instant_in_every_unit(ms: int) -> None:
    assert epoch_ms(ms) == ms
    assert epoch_ms(ms * 1000) == ms
    assert epoch_ms(ms * 1_000_000) == ms
    assert epoch_ms(ms // 1000) == ms // 1000 * 1000
    assert abs(epoch_ms(ms / 1000) - ms) <= 1


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_rfc3339_round_trips(ms: int) -> None:
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert parse_time_value(text) == ms


json_leaf = st.one_of(st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=5), st.booleans(), st.none())
json_doc = st.recursive(json_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text("abc", min_size=1, max_size=3), kids, max_size=4)),
    max_leaves=30)


@given(st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), json_doc, min_size=1, max_size=6))
def test_flattening_keeps_every_leaf_once(doc: dict[str, object]) -> None:
    fmt = PayloadFormat(time_keys=())

    def leaves(value: object, prefix: str) -> dict[str, object]:
        if isinstance(value, dict):
            out: dict[str, object] = {}
            for k, v in value.items():
                out.update(leaves(v, f"{prefix}.{k}"))
            return out
        if isinstance(value, list):
            out = {}
            for i, v in enumerate(value):
                out.update(leaves(v, f"{prefix}.{i}"))
            return out
        return {} if value is None else {prefix: value}

    want: dict[str, object] = {}
    for k, v in doc.items():
        want.update(leaves(v, k))
    if not want:
        with pytest.raises(PayloadError):
            json_points(doc, fmt, NOW)
        return
    got = json_points(doc, fmt, NOW)
    assert got == [(NOW, want)]  # a dotted name written twice ({"a": {"b": 1}, "a.b": 2}): the last wins


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_fail_cleanly(payload: bytes) -> None:
    for kind in ("auto", "json", "number", "text", "line-protocol"):
        reason = "ok"
        try:
            decode_payload(payload, PayloadFormat(kind=kind), NOW, "b")  # type: ignore[arg-type]
        except PayloadError as exc:  # the only exception allowed, always with a reason
            reason = exc.reason
        assert reason


def test_channel_rows_checks_types_against_the_schema_and_pads_missing_fields() -> None:
    rows = ChannelRows({"temp": FieldDef.of("temp", "number")})
    rows.add(1, {"temp": 1.5})
    rows.add(2, {"hum": 40})
    with pytest.raises(SchemaError, match="temp"):
        rows.add(3, {"temp": "hot", "other": 1})
    rows.add(4, {"temp": 2, "hum": None})
    with pytest.raises(SchemaError):
        rows.add(5, {"hum": "x"})  # learnt from point 2
    batch = rows.take()
    assert batch is not None
    assert batch.times == [1, 2, 4]
    assert batch.columns == {"temp": [1.5, None, 2], "hum": [None, 40, None]}
    assert set(batch.fields) == {"temp", "hum"}
    assert rows.take() is None
    rows.add(6, {"hum": 41})
    again = rows.take()
    assert again is not None and again.columns == {"hum": [41]} and set(again.fields) == {"hum"}


def test_channel_rows_add_batch_refuses_rows_one_by_one() -> None:
    lp = decode_payload(b"m a=1 1\nm a=2 2\n", AUTO, NOW, "b").batches["b/m"]
    rows = ChannelRows({"a": FieldDef.of("a", "string")})
    assert rows.add_batch(lp) == 2
    rows = ChannelRows()
    assert rows.add_batch(lp) == 0
    out = rows.take()
    assert out is not None and out.columns == {"a": [1.0, 2.0]}
