"""Hostile values against the pure core, without a server (issue 16): each class is a
ProtocolError with a sentence, never another exception. Against a real server:
tests/security/test_no_5xx.py."""

from __future__ import annotations

import json

import pytest

from livedata.core.frames import PositionError, parse_position
from livedata.core.protocol import (
    FrameError,
    ProtocolError,
    decode_client,
    parse_subscribe,
    parse_time,
    points_to_batch,
)
from livedata.core.sources import ParamError, resolve_generated
from livedata.core.text import shown

NOW = 1_700_000_000_000
DEEP = json.loads("[" * 900 + "1" + "]" * 900)


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662\u0663", "\uff11\uff12", "-\u00b2", "\U0001d7d9",
                                   "now-\u00b2m", "now-\u0661h", "1\u00b2", " 1 2", "1e3", "0x10", "+5",
                                   "now-99999999999999w", "now+1000000000000000ms", "99999999999999999", DEEP,
                                   {"a": DEEP}, True, float("nan"), 1e16, "\ud800", "\x00"])
def test_parse_time_refuses(value: object) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_time(value, NOW)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize(("value", "ms"), [("123", 123), ("-5", -5), (" 42 ", 42), ("now-1s", NOW - 1000),
                                           ("2024-01-01T00:00:00Z", 1_704_067_200_000), (1.9, 1)])
def test_parse_time_takes(value: object, ms: int) -> None:
    assert parse_time(value, NOW) == ms


@pytest.mark.parametrize("text", ["\u00b2", "a:\u0661-2:3", "a:99999999999999999999-0:0", ":1-2:3", "a:1-2",
                                  "a:-1-2:3", "a:1-2:3:4x", "a:1 -2:3", "a:\uff11-2:3"])
def test_positions_are_ascii_and_bounded(text: str) -> None:
    with pytest.raises(PositionError):
        parse_position(text)
    assert parse_position("e:1-2:3").pos.a == 1


@pytest.mark.parametrize("raw", ["1e400", "inf", "-inf", "nan", "\u0661", "9" * 400, 10**400, DEEP, {"x": 1}, True])
def test_params_refuse_odd_numbers(raw: object) -> None:
    with pytest.raises(ParamError) as err:
        resolve_generated("random-walk", {"series": raw})
    assert len(str(err.value)) < 300


def test_shown_never_walks_containers() -> None:
    assert shown(DEEP) == "a list"
    assert shown({"a": DEEP}) == "a dict"
    assert shown("x" * 1000) == repr("x" * 60)
    assert shown("\ud800") == "'\\ud800'"
    assert shown(10**100).endswith("...")
    assert shown(None) == "None"


@pytest.mark.parametrize("frame", ["[" * 100_000 + "]" * 100_000, "{not json", "[1]", '"x"', "", '{"a":"\\ud800"}'])
def test_frames_that_are_not_objects(frame: str) -> None:
    with pytest.raises(FrameError):
        decode_client(frame)


def test_objects_without_a_type_are_not_frame_errors() -> None:
    with pytest.raises(ProtocolError) as err:
        decode_client('{"no":"type"}')
    assert not isinstance(err.value, FrameError)


@pytest.mark.parametrize("key", ["id", "channel", "params", "from", "to", "since", "fields", "interval"])
def test_subscribe_with_deep_values(key: str) -> None:
    msg = {"type": "subscribe", "id": "a", "channel": "random-walk", key: DEEP}
    with pytest.raises(ProtocolError) as err:
        parse_subscribe(msg, NOW)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("body", [{"time": DEEP, "v": 1}, {"v": DEEP}, [{"v": 1}, DEEP], {"time": [DEEP], "v": [1]},
                                  {"v": [DEEP]}, DEEP, {"time": "\u00b2", "v": 1}, {"time": ["\u00b2"], "v": [1]}])
def test_points_with_deep_or_odd_values(body: object) -> None:
    with pytest.raises(ProtocolError):
        points_to_batch(body, NOW, 1000)
