"""ReorderBuffer with a fake clock: holds points at most their window, releases them sorted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.window import ReorderBuffer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_holds_until_due_then_releases_sorted() -> None:
    clock = Clock()
    buf: ReorderBuffer[str] = ReorderBuffer(clock)
    buf.add([(30, "c"), (10, "a")], 100)
    clock.now = 50
    buf.add([(20, "b")], 100)
    assert buf.next_due() == 100
    assert buf.pop_due() == []
    clock.now = 100
    # a and c are due; b is not, but it is older than c, so it goes now too (else it would be late)
    assert buf.pop_due() == [(10, "a"), (20, "b"), (30, "c")]
    assert len(buf) == 0 and buf.next_due() is None


def test_newer_points_not_yet_due_stay() -> None:
    clock = Clock()
    buf: ReorderBuffer[int] = ReorderBuffer(clock)
    buf.add([(10, 1)], 100)
    clock.now = 60
    buf.add([(40, 4), (5, 0)], 100)
    clock.now = 100
    assert buf.pop_due() == [(5, 0), (10, 1)]
    assert len(buf) == 1 and buf.next_due() == 160
    clock.now = 160
    assert buf.pop_due() == [(40, 4)]


def test_equal_times_keep_arrival_order_and_pop_all() -> None:
    clock = Clock()
    buf: ReorderBuffer[str] = ReorderBuffer(clock)
    buf.add([(5, "x"), (5, "y")], 10)
    buf.add([(1, "z")], 50)
    assert buf.pop_all() == [(1, "z"), (5, "x"), (5, "y")]
    assert buf.pop_due(1e9) == []


def test_window_bounds() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(Clock())
    with pytest.raises(ValueError, match="hold_ms"):
        buf.add([(1, 1)], -1)
    with pytest.raises(ValueError, match="hold_ms"):
        buf.add([(1, 1)], 60_001)


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200), st.integers(0, 100)), max_size=60),
       st.integers(1, 50))
def test_every_item_once_sorted_per_release_never_held_past_its_window(
        arrivals: list[tuple[int, int, int]], step: int) -> None:
    """Arrivals (point time, arrival offset, window); the flusher polls every ``step`` ms."""
    clock = Clock()
    buf: ReorderBuffer[int] = ReorderBuffer(clock)
    events = sorted(((at, t, hold, i) for i, (t, at, hold) in enumerate(arrivals)))
    deadline: dict[int, float] = {}
    out: list[tuple[int, int]] = []
    k = 0
    now = 0
    while k < len(events) or len(buf):
        while k < len(events) and events[k][0] <= now:
            at, t, hold, i = events[k]
            clock.now = at
            buf.add([(t, i)], hold)
            deadline[i] = at + hold
            k += 1
        clock.now = now
        released = buf.pop_due()
        assert [t for t, _ in released] == sorted(t for t, _ in released)
        assert all(deadline[i] > now for i in _held(buf)), "a due item was kept"
        out.extend(released)
        now += step
    assert sorted(i for _, i in out) == list(range(len(arrivals)))


def _held(buf: ReorderBuffer[int]) -> list[int]:
    return [item for _, _, item in buf._by_time]
