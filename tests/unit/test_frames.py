import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.frames import (
    Batch,
    Chunk,
    FieldDef,
    Pos,
    Position,
    PositionError,
    Rows,
    Schema,
    SchemaError,
    data_body,
    data_prefix,
    decode_entities,
    field_key,
    frame_json,
    mark_missing,
    parse_position,
    rest_of,
)


def test_field_key_is_unique_per_tag_set_and_sorted() -> None:
    assert field_key("temp") == "temp"
    assert field_key("usage", {"region": "eu", "host": "a"}) == 'usage {host="a",region="eu"}'


def test_schema_keeps_first_type_and_appends_new_fields() -> None:
    s = Schema()
    s.add(s.check([FieldDef.of("a", "number"), FieldDef.of("b", "string")]))
    assert s.check([FieldDef.of("a", "number"), FieldDef.of("c", "boolean")]) == [FieldDef.of("c", "boolean")]
    with pytest.raises(SchemaError) as err:
        s.check([FieldDef.of("b", "number")])
    assert err.value.field == "b"
    assert "string" in str(err.value)
    assert s.keys() == ["a", "b"]  # check() changes nothing


def test_frame_json_is_grafana_dataframejson() -> None:
    fields = [FieldDef.of("v", "number"), FieldDef.of("usage", "number", {"host": "a"})]
    rows = Rows()
    rows.extend([1, 2], {"v": [1.5, 2.5]})
    rows.extend([3], {'usage {host="a"}': [7]})
    frame = frame_json(fields, [f.key for f in fields], rows)
    assert frame["schema"]["fields"][0] == {"name": "time", "type": "time"}
    assert frame["schema"]["fields"][2]["labels"] == {"host": "a"}
    assert frame["data"]["values"] == [[1, 2, 3], [1.5, 2.5, None], [None, None, 7]]
    assert frame["schema"]["meta"] == {"type": "timeseries-wide", "typeVersion": [0, 1]}
    # On the wire the missing cells are Grafana's undefined (entities.Undef), not a null that
    # breaks a line; the values keep their null.
    wire = msgspec.json.decode(b"{" + data_body(frame, None)[1:])["frame"]
    assert wire["data"] == {"values": [[1, 2, 3], [1.5, 2.5, None], [None, None, 7]],
                            "entities": [None, {"Undef": [2]}, {"Undef": [0, 1]}]}
    no_schema = frame_json(None, ["v"], rows)
    assert "schema" not in no_schema
    assert mark_missing(no_schema) == {"data": {"values": [[1, 2, 3], [1.5, 2.5, None]],
                                                "entities": [None, {"Undef": [2]}]}}


def test_dense_packets_have_no_entities_and_a_field_absent_from_a_packet_is_all_undef() -> None:
    rows = Rows([1, 2], {"a": [1, 2], "b": ["x", "null"]})
    frame = frame_json(None, ["a", "b"], rows)
    assert mark_missing(frame) is None
    # The word in a string is not a missing cell (the byte search only picks the slow path).
    assert msgspec.json.decode(b"{" + data_body(frame, None)[1:])["frame"] == frame
    frame = frame_json(None, ["a", "c"], rows)
    assert mark_missing(frame) == {"data": {"values": [[1, 2], [1, 2], [None, None]],
                                            "entities": [None, None, {"Undef": [0, 1]}]}}
    # An empty packet (the schema packet of a subscription with no history): nothing missing.
    empty = frame_json([FieldDef.of("a", "number")], ["a"], Rows())
    assert mark_missing(empty) is None
    assert mark_missing({"schema": {}}) is None


def test_nan_and_infinity_are_missing_cells() -> None:
    rows = Rows([1, 2, 3], {"v": [float("nan"), float("inf"), 1.0]})
    marked = mark_missing(frame_json(None, ["v"], rows))
    assert marked is not None
    assert marked["data"] == {"values": [[1, 2, 3], [None, None, 1.0]], "entities": [None, {"Undef": [0, 1]}]}


def test_data_message_is_prefix_plus_shared_body() -> None:
    body = data_body({"data": {"values": [[1], [2]]}}, "e:1-0:1", late=True)
    msg = msgspec.json.decode(data_prefix("A") + body)
    assert msg == {"type": "data", "id": "A", "position": "e:1-0:1", "late": True,
                   "frame": {"data": {"values": [[1], [2]]}}}
    assert msgspec.json.decode(data_prefix('we"ird') + data_body({}, None))["id"] == 'we"ird'


@given(st.text(alphabet="abcdef0123", min_size=1, max_size=8), st.integers(0, 2**48), st.integers(0, 2**20),
       st.integers(0, 2**40), st.none() | st.tuples(st.integers(0, 2**20), st.integers(0, 2**40)),
       st.none() | st.integers(-2**45, 2**45), st.none() | st.integers(-2**45, 2**45))
def test_positions_round_trip(epoch: str, a: int, b: int, count: int, head: tuple[int, int] | None,
                              start: int | None, end: int | None) -> None:
    assert parse_position(Pos(a, b, count).encode(epoch)) == Position(epoch, Pos(a, b, count))
    if head is not None:
        h = Pos(a + 1 + head[0], head[0], head[1])
        p = Position(epoch, Pos(a, b, count), h, start, end)
        assert parse_position(p.encode()) == p
        assert parse_position(p.encode()).head.count == head[1]  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "x", "e:1:2", "e:a-b:1", ":1-0:1", "e:-1-0:1", "e:1-0", "e:1-0:1~",
                                 "e:1-0:1~2-0:3~~~", "e:2-0:1~1-0:3~~", "e:1-0:1~2-0:3~x~", "e:1-0:1~2-0:-3~~",
                                 "e:x:1-0:1"])
def test_bad_positions(bad: str) -> None:
    with pytest.raises(PositionError):
        parse_position(bad)


def test_late_split_uses_the_channel_high_water_mark() -> None:
    c = Chunk(Pos(2, 0, 5), [5, 7, 10, 12], {"v": [1, 2, 3, 4]}, hwm=10)
    assert c.late_split() == 2
    assert Chunk(Pos(1, 0, 1), [5], {"v": [1]}, hwm=None).late_split() == 0


def test_batch_sorted_is_stable() -> None:
    b = Batch([3, 1, 2, 1], {"v": ["c", "a", "b", "a2"]}, {"v": FieldDef.of("v", "string")}).sorted()
    assert b.times == [1, 1, 2, 3]
    assert b.columns["v"] == ["a", "a2", "b", "c"]


def test_decode_entities_is_the_inverse_of_the_encoding() -> None:
    rows = Rows()
    rows.extend([1, 2], {"a": [1.0, 2.0]})
    rows.extend([3], {"b": ["x"]})
    data = msgspec.json.decode(b"{" + data_body(frame_json(None, ["a", "b"], rows), None)[1:])["frame"]["data"]
    assert decode_entities(data["values"], data["entities"]) == [[1, 2, 3], [1.0, 2.0, None], [None, None, "x"]]
    nan, inf, neg = decode_entities([[1, 2, 3], [None, None, None]], [None, {"NaN": [0], "Inf": [1], "NegInf": [2]}])[1]
    assert isinstance(nan, float) and math.isnan(nan) and inf == math.inf and neg == -math.inf
    # Hostile entities change nothing they do not name, and never raise.
    values = [[1, 2], [5, 6]]
    for ents in (None, "x", [None, {"Undef": [9, -1, "0", 1.0]}], [{"Undef": 0}], [None, None, {"Undef": [0]}]):
        assert decode_entities(values, ents) == [[1, 2], [5, 6]]
    assert values == [[1, 2], [5, 6]]


def test_a_slice_knows_where_it_ends_in_the_stored_chunk() -> None:
    c = Chunk(Pos(3, 0, 10), [1, 2, 3, 4], {"v": [1, 2, 3, 4]}, hwm=None)  # points 7..10 of the log
    assert c.count_before == 6 and c.end == Pos(3, 0, 10) and c.end.count == 10
    mid = c.slice(1, 3)  # points 8 and 9
    assert mid.times == [2, 3] and mid.tail == 1 and mid.count_before == 7 and mid.end.count == 9
    inner = mid.slice(1, 2)  # point 9
    assert inner.times == [3] and inner.count_before == 8 and inner.end.count == 9


def test_rest_of_a_chunk_after_a_position() -> None:
    c = Chunk(Pos(3, 0, 10), [1, 2, 3, 4], {"v": [1, 2, 3, 4]}, hwm=None)
    assert rest_of(c, Pos(2, 5, 6)) is c  # an earlier chunk: all of it
    assert rest_of(c, Pos(4, 0, 11)) is None  # a later one: nothing
    assert rest_of(c, Pos(3, 0, 10)) is None  # the whole chunk was sent
    assert rest_of(c, Pos(3, 0, 6)) is c  # none of it was
    r = rest_of(c, Pos(3, 0, 8))  # its first two points were sent
    assert r is not None and r.times == [3, 4] and r.count_before == 8 and r.end == Pos(3, 0, 10)
    assert rest_of(r, Pos(3, 0, 9)) is not None and rest_of(r, Pos(3, 0, 9)).times == [4]  # type: ignore[union-attr]


def test_finite_numbers_is_the_slow_check_at_c_speed() -> None:
    """One check for the encoder's two shortcuts (NaN cleaning, None counting): it must say False
    for anything the slow loops would act on, and never raise (an integer too large for a float
    once raised OverflowError out of the None count)."""
    from livedata.core.frames import finite_numbers

    assert finite_numbers([1, 2.5, True, -0.0]) and finite_numbers([])
    for col in ([1.0, None], [None], ["a", 1], [1.0, math.nan], [math.inf, 1.0], [-math.inf],
                [10**400, 1.0], [1.0, 10**400]):
        assert not finite_numbers(col), col  # type: ignore[arg-type]
