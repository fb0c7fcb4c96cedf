"""Channel and field names: allowed characters, levels, limits, measurement mapping, URL escaping."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livedata.core.limits import MAX_CHANNEL_CHARS, MAX_FIELD_CHARS
from livedata.core.names import InvalidName, channel_path, channel_problem, check_channel, check_name, child_channel
from livedata.core.protocol import ProtocolError, decode_client, points_to_batch
from livedata.core.protocol import check_channel as protocol_check_channel


@pytest.mark.parametrize(
    "name",
    [
        "sensors/kitchen", "température", "cpu load", "c,pu", '"cpu"', "job:http_requests:rate5m",
        "km/h", "m³/h", "°C", "%", "データ/温度", "emoji 🌡️", "a=b", "x" * MAX_CHANNEL_CHARS, ".hidden",
        "a/.b", "..a", "a?b#c", "100%", "tab-free name", "\u00a0nbsp", "a\\b",
    ],
)
def test_valid_channel_names(name: str) -> None:
    assert check_channel(name) == name
    assert channel_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_CHANNEL_CHARS + 1), "the limit is 256"),
        ("a/../b", "'..' is not allowed"),
        ("../etc", "'..' is not allowed"),
        ("..", "'..' is not allowed"),
        ("a/.", "'.' is not allowed"),
        ("./a", "'.' is not allowed"),
        ("a//b", "empty part"),
        ("/a", "empty part"),
        ("a/", "empty part"),
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\tb", "U+0009"),
        ("a\x7fb", "U+007F"),
        ("a\x9bb", "U+009B"),
        ("a\u2028b", "U+2028"),
        ("a\ud800b", "lone surrogate U+D800"),
        ("a\ufffdb", "not valid UTF-8"),  # what yarl makes of %ED%A0%80 in a query
    ],
)
def test_invalid_channel_names(name: str, why: str) -> None:
    with pytest.raises(InvalidName, match="invalid channel name") as info:
        check_channel(name)
    assert why in str(info.value)
    with pytest.raises(ProtocolError):
        protocol_check_channel(name)


def test_non_strings_are_not_names() -> None:
    for value in (None, 5, b"x", ["a"]):
        with pytest.raises(InvalidName, match="must be a string"):
            check_channel(value)
        with pytest.raises(InvalidName, match="must be a string"):
            check_name(value)


def test_field_names() -> None:
    assert check_name("temp {room=\"a b\"}") == 'temp {room="a b"}'
    assert check_name("k" * MAX_FIELD_CHARS)
    with pytest.raises(InvalidName, match="the limit is 256"):
        check_name("k" * (MAX_FIELD_CHARS + 1))
    with pytest.raises(InvalidName, match=r"U\+0000"):
        check_name("a\x00")
    with pytest.raises(InvalidName, match="lone surrogate"):
        check_name("\udfff")
    with pytest.raises(InvalidName, match="empty"):
        check_name("")
    assert check_name("../x")  # field names are not paths


def test_json_points_use_the_same_name_rules() -> None:
    with pytest.raises(ProtocolError, match=r"point 2: field name 'a\\x00'.*U\+0000") as info:
        points_to_batch([{"v": 1}, {"a\x00": 1}], 0, 10)
    assert info.value.line == 2
    with pytest.raises(ProtocolError, match="the limit is 256"):
        points_to_batch({"k" * 257: [1]}, 0, 10)
    assert points_to_batch({"température ✓": 1}, 5, 10).fields["température ✓"].type == "number"


def test_lone_surrogates_in_json_are_named_as_such() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client(b'{"type":"subscribe","id":"a","channel":"x\\ud800"}')
    assert "column 42: \\ud800 is a lone surrogate" in str(info.value)
    assert "truncated" not in str(info.value)
    with pytest.raises(ProtocolError, match="lone surrogate"):
        decode_client(b'{"type":"x","\\udc01":1}')
    assert decode_client(b'{"type":"x","a":"\\ud83d\\ude00"}')["a"] == "😀"


def test_child_channel_takes_the_measurement_as_it_is() -> None:
    assert child_channel("telegraf", "cpu") == "telegraf/cpu"
    assert child_channel("t", "cpu load") == "t/cpu load"
    assert child_channel("t", "c,pu") == "t/c,pu"
    assert child_channel("t", '"cpu"') == 't/"cpu"'
    assert child_channel("prom", "job:http_requests:rate5m") == "prom/job:http_requests:rate5m"
    assert child_channel("ha", "km/h") == "ha/km/h"  # a slash adds a level
    assert child_channel("ha", "température") == "ha/température"
    for bad in ("..", ".", "/x", "x/", "a//b", "x" * 256):
        with pytest.raises(InvalidName, match="makes the channel name"):
            child_channel("t", bad)


def test_channel_path_percent_encodes_each_level() -> None:
    assert channel_path("sensors/température 1") == "sensors/temp%C3%A9rature%201"
    assert channel_path("a?b#c/100%") == "a%3Fb%23c/100%25"
    assert channel_path("plain/name-1_2.x") == "plain/name-1_2.x"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="/"),
                        min_size=1, max_size=8), min_size=1, max_size=4))
def test_any_printable_levels_round_trip_through_a_url(levels: list[str]) -> None:
    name = "/".join(levels)
    if any(level in (".", "..") for level in levels):
        assert channel_problem(name) is not None
        return
    assert check_channel(name) == name
    path = channel_path(name)
    assert path.isascii() and " " not in path and "?" not in path and "#" not in path
    assert unquote(path) == name
