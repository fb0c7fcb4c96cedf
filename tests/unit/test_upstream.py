"""Upstream stream decoding: framing, the reference stream, livedata's protocol, JSON lines, resume."""

from __future__ import annotations

import json
import random
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.payloads import PayloadError
from livedata.core.sources import reference_lines
from livedata.core.upstream import (
    LineSplitter,
    LivedataFollower,
    ReferenceAssembler,
    SseParser,
    StreamDecoder,
    UpstreamError,
    detect,
    resume_subscribe,
    resume_url,
)

NOW = 1_700_000_000_000


@given(st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=20), st.data())
def test_line_splitter_gives_the_lines_whatever_the_reads(lines: list[bytes], data: st.DataObject) -> None:
    body = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=10)))
    sp = LineSplitter()
    got: list[bytes] = []
    prev = 0
    for c in [*cuts, len(body)]:
        got.extend(sp.feed(body[prev:c]))
        prev = c
    assert got == [line[:-1] if line.endswith(b"\r") else line for line in lines]


def test_line_splitter_drops_over_long_lines_and_goes_on() -> None:
    sp = LineSplitter(max_line=10)
    assert sp.feed(b"short\n" + b"x" * 25) == [b"short"]
    assert sp.feed(b"yyyy\nok\r\n") == [b"ok"]
    assert sp.too_long == 1
    assert sp.feed(b"z" * 11 + b"\nfine\n") == [b"fine"]
    assert sp.too_long == 2


def test_sse_parser_joins_data_lines_and_keeps_ids() -> None:
    p = SseParser()
    events = [p.feed_line(x) for x in [": comment", "id: 7", "event: m", "data: a", "data:b", "", "", "data: c", ""]]
    got = [e for e in events if e is not None]
    assert [(e.data, e.event, e.id) for e in got] == [("a\nb", "m", "7"), ("c", "message", "7")]
    assert p.last_id == "7"


def _ref(n: int, ticks: int) -> list[bytes]:
    rng = random.Random(1)
    out: list[bytes] = []
    for k in range(ticks):
        out.append(reference_lines(1_700_000_000_000 + 50 * k, n, rng))
    return out


def test_reference_stream_rows_per_timestamp_from_the_real_line_encoder() -> None:
    dec = StreamDecoder("seed")
    rows = []
    for chunk in _ref(3, 4):  # one HTTP chunk per tick, as the server sends them
        for line in chunk.splitlines():
            rows.extend(dec.feed(line, NOW).points)
        rows.extend(dec.end_of_read().points)
    rows.extend(dec.flush().points)
    assert dec.kind == "reference"
    assert [t for t, _ in rows] == [1_700_000_000_000 + 50 * k for k in range(4)]
    assert all(set(v) == {"series0", "series1", "series2"} for _, v in rows)
    assert all(10 * i <= v[f"series{i}"] <= 10 * i + 9 for _, v in rows for i in range(3))  # type: ignore[operator]


def test_reference_rows_are_whole_even_when_a_tick_is_split_across_reads() -> None:
    a = ReferenceAssembler()
    lines = [json.loads(x) for c in _ref(2, 3) for x in c.splitlines()]
    out = a.feed(lines[0]) + a.ready()             # first tick, half of it: nothing yet
    assert out == []
    out = a.feed(lines[1]) + a.feed(lines[2]) + a.ready()  # tick 1 ends when tick 2 begins
    assert len(out) == 1 and set(out[0][1]) == {"series0", "series1"}
    assert a.ready() == []                         # tick 2 has one series of two: not yet
    out = a.feed(lines[3]) + a.ready()
    assert len(out) == 1 and out[0][0] == lines[3]["timestamp"]


def _hello() -> bytes:
    return b'{"type":"hello","version":"0.1.0","time":1,"heartbeat_ms":15000}'


def test_livedata_protocol_frames_become_batches_with_labels_and_the_position_is_kept() -> None:
    dec = StreamDecoder("copy")
    assert len(dec.feed(_hello(), NOW)) == 0
    first = {"type": "data", "id": "A", "position": "e:1-0", "frame": {
        "schema": {"fields": [{"name": "time", "type": "time"}, {"name": "v", "type": "number"},
                              {"name": 'cpu {host="a"}', "type": "number", "labels": {"host": "a"}},
                              {"name": "s", "type": "string"}]},
        "data": {"values": [[1, 2], [1.5, None], [None, 3], [None, None]]}}}
    got = dec.feed(json.dumps(first), NOW)
    assert dec.kind == "livedata" and dec.position == "e:1-0"
    batch = got.batches["copy"]
    assert batch.times == [1, 2]
    assert batch.columns == {"v": [1.5, None], 'cpu {host="a"}': [None, 3]}  # all-null column left out
    assert batch.fields['cpu {host="a"}'].labels == (("host", "a"),)
    assert batch.fields['cpu {host="a"}'].name == "cpu"
    more = {"type": "data", "id": "A", "position": "e:2-0", "late": True,
            "frame": {"data": {"values": [[3], [4], [None], ["x"]]}}}
    batch = dec.feed(json.dumps(more), NOW).batches["copy"]
    assert batch.columns == {"v": [4], "s": ["x"]} and dec.position == "e:2-0"
    dec.feed(b'{"type":"notice","id":"A","level":"warning","text":"12 points lost"}', NOW)
    assert dec.follower.notices == ["12 points lost"]
    dec.feed(b'{"type":"heartbeat","time":5}', NOW)
    with pytest.raises(UpstreamError, match="no channel"):
        dec.feed(b'{"type":"error","id":"A","message":"no channel"}', NOW)


@pytest.mark.parametrize("frame", [
    {"data": {"values": [[1]]}},                                                     # no schema yet
    {"schema": {"fields": [{"name": "v", "type": "number"}]}, "data": {"values": [[1]]}},  # no time field
    {"schema": {"fields": [{"name": "time", "type": "time"}, {"name": "v", "type": "blob"}]}},
    {"schema": {"fields": [{"name": "time", "type": "time"}]}, "data": {"values": [[1], [2]]}},
    {"schema": {"fields": [{"name": "time", "type": "time"}, {"name": "v", "type": "number"}]},
     "data": {"values": [[1, 2], [1]]}},
    {"schema": {"fields": [{"name": "time", "type": "time"}, {"name": "v", "type": "number"}]},
     "data": {"values": [["x"], [1]]}},
])
def test_livedata_protocol_bad_frames_are_payload_errors(frame: object) -> None:
    f = LivedataFollower()
    with pytest.raises(PayloadError):
        f.feed({"type": "data", "id": "A", "frame": frame})


def test_json_lines_and_detection() -> None:
    assert detect({"type": "hello"}) == "livedata"
    assert detect({"series": 0, "timestamp": 1, "value": 2}) == "reference"
    assert detect({"series": 0, "timestamp": 1, "value": 2, "x": 1}) == "json"
    dec = StreamDecoder("j")
    assert dec.feed(b'{"ts": 1700000000, "temp": 1}', NOW).points == [(1_700_000_000_000, {"temp": 1})]
    assert dec.kind == "json"
    with pytest.raises(PayloadError):
        dec.feed(b"{not json", NOW)
    with pytest.raises(UpstreamError, match="set format"):
        StreamDecoder("j").feed(b"plain text", NOW)


def test_line_protocol_stream() -> None:
    dec = StreamDecoder("lp", "line-protocol")
    assert dec.feed(b"m v=1 1700000000000000000", NOW).batches["lp/m"].times == [1_700_000_000_000]


def test_resume_url_and_subscribe_message() -> None:
    url = "http://up:8080/api/stream?channel=a%2Fb&from=now-1h&since=old"
    q = parse_qs(urlsplit(resume_url(url, "e:5-0")).query)
    assert q == {"channel": ["a/b"], "since": ["e:5-0"]}
    q = parse_qs(urlsplit(resume_url(url, None, 1000)).query)
    assert q == {"channel": ["a/b"], "from": ["1001"]}
    assert resume_url(url, None) == url
    msg = '{"type":"subscribe","id":"A","channel":"x","from":"now-1h"}'
    assert json.loads(resume_subscribe(msg, "p"))["since"] == "p"
    assert json.loads(resume_subscribe(msg, None, 5))["from"] == 6
    assert resume_subscribe("not json", "p") == "not json"
