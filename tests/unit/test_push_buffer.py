"""The client's push buffer: rows and columns go through one merge, and mixing them loses nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.client import to_columns
from livedata.client.push import PushBuffer

NOW = 1_700_000_000_000

keys = st.sampled_from(["a", "b", "c"])
values = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=2), st.booleans())
points = st.dictionaries(st.one_of(keys, st.just("time")), values, max_size=4)
pushes = st.lists(st.lists(points, max_size=5), max_size=6)


def expected(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every point as a full row: its time (or NOW) and every key seen in any push (None if absent)."""
    flat = [p for b in batches for p in b]
    seen = [k for k in dict.fromkeys(k for p in flat for k in p) if k != "time"]
    return [{"time": NOW if p.get("time") is None else p["time"], **{k: p.get(k) for k in seen}} for p in flat]


def rows_of(buf: PushBuffer) -> list[dict[str, Any]]:
    body = buf.body()
    assert all(len(col) == len(buf) for col in body.values())
    return [{k: col[i] for k, col in body.items()} for i in range(len(buf))]


@given(pushes, st.lists(st.booleans(), min_size=6, max_size=6))
def test_rows_and_columns_merge_the_same(batches: list[list[dict[str, Any]]], as_columns: list[bool]) -> None:
    buf = PushBuffer()
    for batch, columnar in zip(batches, as_columns, strict=False):
        if columnar:
            cols = to_columns(batch, NOW)
            buf.add_columns(cols, NOW)
        else:
            buf.add_rows(batch, NOW)
    assert rows_of(buf) == expected(batches)


def test_columns_without_time_get_now_and_unequal_columns_are_refused() -> None:
    buf = PushBuffer()
    buf.add_columns({"v": [1, 2]}, NOW)
    assert buf.body() == {"time": [NOW, NOW], "v": [1, 2]}
    with pytest.raises(ValueError, match="same length"):
        buf.add_columns({"v": [1], "w": [1, 2]}, NOW)
    assert len(buf) == 2


def test_a_bad_point_buffers_nothing() -> None:
    buf = PushBuffer()
    with pytest.raises(TypeError, match="a point must be a dict"):
        buf.add_rows([{"v": 1}, 3], NOW)  # type: ignore[list-item]
    assert len(buf) == 0 and buf.body() == {"time": []}


def test_to_columns_leaves_missing_times_to_the_server() -> None:
    assert to_columns([{"v": 1}, {"time": 5, "w": "x"}]) == {"time": [None, 5], "v": [1, None], "w": [None, "x"]}
