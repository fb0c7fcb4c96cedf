import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.protocol import ProtocolError, decode_client, parse_subscribe, parse_time, points_to_batch

NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [(123, 123), ("now", NOW), ("now-5m", NOW - 300_000), ("now-30s", NOW - 30_000), ("now-1h", NOW - 3_600_000),
     ("now+2d", NOW + 2 * 86_400_000), ("now-10ms", NOW - 10), ("2023-11-14T22:13:20Z", 1_700_000_000_000),
     ("1700000000000", 1_700_000_000_000)],
)
def test_parse_time(value: object, expected: int) -> None:
    assert parse_time(value, NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "now-5x", True, None, "2023-11-14T22:13:20", float("nan"), [1]])
def test_parse_time_rejects(value: object) -> None:
    with pytest.raises(ProtocolError):
        parse_time(value, NOW)


def sub(**kw: object) -> dict[str, object]:
    return {"type": "subscribe", "id": "A", "channel": "random-walk", **kw}


def test_parse_subscribe_resolves_generated_channel_and_times() -> None:
    s = parse_subscribe(sub(params={"series": 3}, **{"from": "now-10s"}, interval=100, fields=["series0"]), NOW)
    assert s.channel == "random-walk/series=3"
    assert s.from_ms == NOW - 10_000
    assert s.to_ms is None
    assert s.interval_ms == 100
    assert s.fields == ("series0",)


@pytest.mark.parametrize(
    ("msg", "needle"),
    [
        (sub(channel="a/../b"), "invalid channel name"),
        (sub(params={"colour": 1}), "unknown param 'colour'"),
        (sub(**{"from": "now", "to": "now-1h"}), "is after to"),
        (sub(since="nonsense"), "invalid position"),
        (sub(interval=-1), "interval"),
        (sub(interval=10**9), "interval"),
        (sub(fields=[]), "fields"),
        (sub(extra=1), "invalid subscribe"),
        (sub(channel=5), "invalid"),
        (sub(**{"from": "later"}), "from must be"),
    ],
)
def test_parse_subscribe_errors_carry_the_id(msg: dict[str, object], needle: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_subscribe(msg, NOW)
    assert needle in str(err.value)
    assert err.value.id == "A"


def test_subscribe_without_id() -> None:
    with pytest.raises(ProtocolError, match="needs an id") as err:
        parse_subscribe({"type": "subscribe", "channel": "x"}, NOW)
    assert err.value.id is None


@pytest.mark.parametrize("data", [b"not json", b"[1,2]", b'{"no":"type"}', b'{"type":5}', b"\xff\xfe"])
def test_decode_client_rejects(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_client(data)


@given(st.binary(max_size=200))
def test_decode_client_never_raises_anything_else(data: bytes) -> None:
    try:
        decode_client(data)
    except ProtocolError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_parse_subscribe_fuzz_only_protocol_errors(obj: object) -> None:
    msg = {"type": "subscribe", "id": "A", "channel": "random-walk", "from": obj}
    for candidate in (msg, {"type": "subscribe", "id": "A", "channel": obj}, {"type": "subscribe", "id": obj}):
        try:
            parse_subscribe(candidate, NOW)  # type: ignore[arg-type]
        except ProtocolError:
            pass


def test_points_shapes_give_the_same_batch() -> None:
    one = points_to_batch({"time": 1, "temp": 21.5}, NOW, 100)
    many = points_to_batch([{"time": 1, "temp": 21.5}, {"time": 2, "temp": 22, "ok": True}], NOW, 100)
    cols = points_to_batch({"time": [1, 2], "temp": [21.5, 22]}, NOW, 100)
    assert one.times == [1]
    assert many.columns == {"temp": [21.5, 22], "ok": [None, True]}
    assert cols.times == [1, 2]
    assert cols.columns == {"temp": [21.5, 22]}
    assert points_to_batch({"temp": 1}, NOW, 10).times == [NOW]
    assert points_to_batch({"time": "2023-11-14T22:13:20Z", "t": 1}, NOW, 10).times == [1_700_000_000_000]


@pytest.mark.parametrize(
    ("body", "needle", "line"),
    [
        ([{"time": 1, "v": 1}, {"time": 2, "v": "x"}], "is a string here but a number before", 2),
        ([{"time": 1, "v": 1}, "nope"], "must be an object", 2),
        ([{"time": "soon", "v": 1}], "time", 1),
        ([{"time": 1}], "no fields", 1),
        ([{"time": 1, "v": [1]}], "must be a number", 1),
        (5, "expected a point", None),
        ({"time": [1, 2], "v": [1]}, "same length", None),
    ],
)
def test_points_errors_name_the_point(body: object, needle: str, line: int | None) -> None:
    with pytest.raises(ProtocolError) as err:
        points_to_batch(body, NOW, 100)
    assert needle in str(err.value)
    assert err.value.line == line


def test_points_limit() -> None:
    with pytest.raises(ProtocolError, match="too many points"):
        points_to_batch([{"v": 1}] * 11, NOW, 10)
