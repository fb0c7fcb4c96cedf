import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.sources import (
    GENERATORS,
    Generator,
    ParamError,
    TickSchedule,
    grid_delay,
    parse_num_series,
    reference_lines,
    resolve_generated,
)
from livedata.core.wire import chunked


def test_tick_schedule_has_no_drift_with_a_fake_clock() -> None:
    s = TickSchedule(start=100.0, interval=0.05)
    now = 100.0
    deadlines = []
    for _ in range(1200):
        d = s.next_deadline(now)
        deadlines.append(d)
        now = d + 0.003  # every wake-up is 3 ms late: must not accumulate
    assert deadlines[-1] == pytest.approx(100.0 + 1200 * 0.05)
    assert s.index == 1200


def test_tick_schedule_skips_missed_ticks_instead_of_bursting() -> None:
    s = TickSchedule(start=0.0, interval=1.0)
    assert s.next_deadline(0.0) == 1.0
    assert s.next_deadline(5.5) == 5.0  # stalled 4.5 s: fire the current slot once
    assert s.next_deadline(5.6) == 6.0
    assert s.next_deadline(6.0) == 7.0


@given(st.integers(1_600_000_000_000, 2_000_000_000_000), st.sampled_from([1, 10, 50, 100, 1000, 60_000]),
       st.integers(0, 999))
def test_generator_ticks_land_just_after_their_grid_point(now_ms: int, interval_ms: int, micros: int) -> None:
    now = now_ms / 1000 + micros / 1e6
    interval = interval_ms / 1000
    d = grid_delay(now, interval)
    assert 0 < d <= interval + 1e-6
    wake_ms = (now + d) * 1000
    phase = (wake_ms - 1.0) % interval_ms  # 1 ms lead past a multiple of the interval
    assert min(phase, interval_ms - phase) < 1e-3


def test_a_generator_tick_waits_for_its_grid_point_when_it_wakes_early() -> None:
    assert grid_delay(1000.0495, 0.05) == pytest.approx(0.0015)  # 0.5 ms before grid + 1 ms
    assert grid_delay(1000.051, 0.05) == pytest.approx(0.05)  # on time: the next one
    assert grid_delay(1000.052, 0.05) == pytest.approx(0.049)


@given(st.integers(1, 1000), st.integers(0, 2**41), st.integers(0, 2**32))
def test_reference_lines_match_the_original_format(n: int, ts: int, seed: int) -> None:
    body = reference_lines(ts, n, random.Random(seed)).decode()
    lines = body.splitlines()
    assert body.endswith("\n") and len(lines) == n
    for i, line in enumerate(lines):
        obj = json.loads(line)
        assert list(obj) == ["series", "timestamp", "value"]
        assert obj["series"] == i and obj["timestamp"] == ts
        assert isinstance(obj["value"], int) and 10 * i <= obj["value"] <= 10 * i + 9
        assert line == json.dumps(obj, separators=(",", ":"))


def test_chunked_framing() -> None:
    assert chunked(b"hello") == b"5\r\nhello\r\n"
    assert chunked(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


@pytest.mark.parametrize(("raw", "n"), [(None, 1), ("", 1), ("1", 1), ("10", 10), ("1000", 1000)])
def test_num_series_valid(raw: str | None, n: int) -> None:
    assert parse_num_series(raw) == n


@pytest.mark.parametrize("raw", ["0", "-1", "1001", "abc", "1.5", "1e3", " 2"])
def test_num_series_invalid_names_the_parameter_and_range(raw: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_num_series(raw)
    assert "numSeries" in str(err.value) and "1 to 1000" in str(err.value)


def test_resolve_generated_canonical_names() -> None:
    assert resolve_generated("random-walk", None).name == "random-walk"  # type: ignore[union-attr]
    g = resolve_generated("random-walk", {"series": 3, "spread": "2.5"})
    assert g is not None and g.name == "random-walk/series=3/spread=2.5"
    again = resolve_generated(g.name, None)
    assert again is not None and again.name == g.name and again.series == 3
    assert resolve_generated("sensors/kitchen", None) is None
    assert resolve_generated("random-walk", {"series": 1}).name == "random-walk"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"colour": 1}, "unknown param 'colour'"), ({"series": 0}, "1..100"), ({"series": 1.5}, "integer"),
     ({"interval": 5}, "10..3600000"), ({"spread": 0}, "> 0"), ({"series": True}, "number"),
     ({"series": "x"}, "number")],
)
def test_resolve_generated_rejects_bad_params(params: dict[str, object], needle: str) -> None:
    with pytest.raises(ParamError, match=needle):
        resolve_generated("random-walk", params)
    with pytest.raises(ParamError, match="takes no params"):
        resolve_generated("sensors/kitchen", {"series": 1})


@pytest.mark.parametrize("base", sorted(GENERATORS))
def test_generator_rows_are_aligned_and_continue_without_overlap(base: str) -> None:
    g = Generator(resolve_generated(base, {"series": 2, "interval": 100}), random.Random(1))  # type: ignore[arg-type]
    t1, c1 = g.rows(1050, 1500)
    assert t1 == [1100, 1200, 1300, 1400, 1500] and len(c1) == 2 and len(c1[0]) == 5
    t2, _ = g.rows(1000, 1750)
    assert t2 == [1600, 1700]
    assert g.rows(1000, 1750) == ([], [[], []])
