"""Rollups equal the aggregate of their raw points, late points included (hypothesis).

The reference is the obvious one: every point ever published, stable-sorted by time (log order
among equal times, which is how a raw backfill is sorted), grouped by bucket, and aggregated with
plain loops. The code under test sees the points only as chunks in log order, the way a broker
does: per-chunk partials per tier, merged into a TierStore, read back, regrouped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livedata.core.frames import Value
from livedata.core.rollup import (
    AGG_LEN,
    COUNT,
    FIRST,
    FIRST_T,
    LAST,
    LAST_T,
    MAX,
    MAX_T,
    MIN,
    MIN_T,
    SUM,
    Agg,
    Buckets,
    Tier,
    TierStore,
    agg_of,
    aggregate,
    check_tiers,
    choose_width,
    chunk_rollup,
    m4_rows,
    nice_width,
    regroup,
    source_tier,
)

TIERS = (Tier(10, 10**9), Tier(50, 10**9), Tier(200, 10**9))
KEYS = ("a", "b")

values = st.one_of(
    st.none(),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.5]),
)


@st.composite
def chunks(draw: st.DrawFn) -> list[tuple[list[int], dict[str, list[Value]]]]:
    """Chunks as a broker stores them: times sorted within a chunk, any order across chunks (late)."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        n = draw(st.integers(1, 12))
        times = sorted(draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)))
        cols = {k: draw(st.lists(values, min_size=n, max_size=n)) for k in KEYS if draw(st.booleans()) or k == "a"}
        out.append((times, cols))
    return out


def _finite(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def reference(all_chunks: Sequence[tuple[list[int], dict[str, list[Value]]]], key: str,
              width: int) -> dict[int, Agg]:
    """Aggregate the raw points of every bucket with plain loops."""
    pts: list[tuple[int, int, float]] = []  # (time, log order, value)
    order = 0
    for times, cols in all_chunks:
        col = cols.get(key)
        for i, t in enumerate(times):
            order += 1
            if col is not None and _finite(col[i]):
                pts.append((t, order, float(col[i])))  # type: ignore[arg-type]
    pts.sort(key=lambda p: (p[0], p[1]))
    out: dict[int, Agg] = {}
    by: dict[int, list[tuple[int, int, float]]] = {}
    for p in pts:
        by.setdefault(p[0] - p[0] % width, []).append(p)
    for b, ps in by.items():
        vals = [p[2] for p in ps]
        mn = min(vals)
        mx = max(vals)
        out[b] = [float(len(ps)), math.fsum(vals), mn, float(next(p[0] for p in ps if p[2] == mn)),
                  mx, float(next(p[0] for p in ps if p[2] == mx)), ps[0][2], float(ps[0][0]),
                  ps[-1][2], float(ps[-1][0])]
    return out


def same(got: Agg | None, want: Agg | None) -> bool:
    if got is None or want is None:
        return got is want
    assert len(got) == AGG_LEN
    exact = [COUNT, MIN, MIN_T, MAX, MAX_T, FIRST, FIRST_T, LAST, LAST_T]
    return all(got[i] == want[i] for i in exact) and math.isclose(got[SUM], want[SUM], rel_tol=1e-9, abs_tol=1e-6)


def store_all(all_chunks: Sequence[tuple[list[int], dict[str, list[Value]]]]) -> list[TierStore]:
    stores = [TierStore(t.width_ms) for t in TIERS]
    for times, cols in all_chunks:
        for store, parts in zip(stores, chunk_rollup(times, cols, KEYS, TIERS), strict=True):
            store.add(parts)
    return stores


@settings(max_examples=300, deadline=None)
@given(chunks())
def test_every_tier_equals_its_raw_points(all_chunks: list[tuple[list[int], dict[str, list[Value]]]]) -> None:
    for tier, store in zip(TIERS, store_all(all_chunks), strict=True):
        got = store.read(None, None)
        for key in KEYS:
            want = reference(all_chunks, key, tier.width_ms)
            have = {s: got.get(key, i) for i, s in enumerate(got.starts) if got.get(key, i) is not None}
            assert set(have) == set(want), (tier, key)
            for b, a in want.items():
                assert same(have[b], a), (tier, key, b, have[b], a)


@settings(max_examples=200, deadline=None)
@given(chunks(), st.sampled_from([50, 100, 200, 400, 1000]))
def test_a_tier_regrouped_equals_the_raw_points_at_that_width(
        all_chunks: list[tuple[list[int], dict[str, list[Value]]]], width: int) -> None:
    stores = store_all(all_chunks)
    tier = source_tier(width, TIERS)
    assert tier is not None
    store = stores[TIERS.index(tier)]
    got = regroup(store.read(None, None), width)
    for key in KEYS:
        want = reference(all_chunks, key, width)
        have = {s: got.get(key, i) for i, s in enumerate(got.starts) if got.get(key, i) is not None}
        assert set(have) == set(want)
        for b, a in want.items():
            assert same(have[b], a)


@settings(max_examples=200, deadline=None)
@given(chunks(), st.integers(2, 300))
def test_aggregating_sorted_raw_points_equals_the_reference(
        all_chunks: list[tuple[list[int], dict[str, list[Value]]]], width: int) -> None:
    pts = []
    order = 0
    for times, cols in all_chunks:
        for i, t in enumerate(times):
            order += 1
            pts.append((t, order, {k: c[i] for k, c in cols.items()}))
    pts.sort(key=lambda p: (p[0], p[1]))
    times = [p[0] for p in pts]
    columns: dict[str, list[Value]] = {k: [p[2].get(k) for p in pts] for k in KEYS}
    got = aggregate(times, columns, KEYS, width)
    for key in KEYS:
        want = reference(all_chunks, key, width)
        have = {s: got.get(key, i) for i, s in enumerate(got.starts) if got.get(key, i) is not None}
        assert set(have) == set(want)
        for b, a in want.items():
            assert same(have[b], a)


def test_read_range_trim_and_late_insert() -> None:
    store = TierStore(10)
    store.add(chunk_rollup([5, 25, 45], {"a": [1.0, 2.0, 3.0]}, ["a"], [Tier(10, 1)])[0])
    store.add(chunk_rollup([12], {"a": [7]}, ["a"], [Tier(10, 1)])[0])  # late: a bucket in between
    assert store.starts.tolist() == [0, 10, 20, 40]
    got = store.read(15, 30)  # buckets overlapping [15, 30]
    assert got.starts == [10, 20]
    assert got.aggs["a"][0] == [1.0, 7.0, 7.0, 12.0, 7.0, 12.0, 7.0, 12.0, 7.0, 12.0]
    store.trim(cutoff=20)  # buckets ending at or before 20 go
    assert store.starts.tolist() == [20, 40]
    store.trim(None, max_buckets=1)
    assert store.starts.tolist() == [40]
    store.add(chunk_rollup([1], {"a": [1.0]}, ["a"], [Tier(10, 1)])[0], cutoff=30)  # past retention
    assert store.starts.tolist() == [40]


def test_m4_rows_keep_min_and_max_in_time_order() -> None:
    b = aggregate([0, 1, 2, 3, 10, 11], {"a": [5.0, 9.0, 1.0, 4.0, 3.0, 3.0], "b": [1, None, None, 0, None, None]},
                  ["a", "b"], 10)
    rows = m4_rows(b, ["a", "b", "c"])
    assert rows.times == [0, 5, 10, 15]
    assert rows.columns["a"] == [9.0, 1.0, 3.0, 3.0]  # max at t=1 before min at t=2
    assert rows.columns["b"] == [1.0, 0.0, None, None]
    assert rows.columns["c"] == [None] * 4


def test_agg_of_skips_missing_and_non_finite_and_non_numbers() -> None:
    assert agg_of([1, 2, 3], [None, math.nan, math.inf], 0, 3) is None
    assert agg_of([1, 2], ["x", "y"], 0, 2) is None
    assert agg_of([1, 2], [True, False], 0, 2) is None
    a = agg_of([1, 2, 3, 4], [None, 2, math.nan, 2.0], 0, 4)
    assert a == [2.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.0]
    assert agg_of([1, 2, 3], [None, True, 2], 0, 3) == [1.0, 2.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]
    assert agg_of([1, 2, 3], [None, "x", 2.5], 0, 3) == [1.0, 2.5, 2.5, 3.0, 2.5, 3.0, 2.5, 3.0, 2.5, 3.0]
    big = agg_of([1, 2, 3], [None, 1e308, 1e308], 0, 3)  # the sum overflows a float: counted, not dropped
    assert big is not None and big[COUNT] == 2 and big[SUM] == math.inf and big[MAX] == 1e308


def test_choosing_a_width_and_its_tier() -> None:
    day = 86_400_000
    tiers = (Tier(1000, day), Tier(10_000, 7 * day), Tier(60_000, 90 * day), Tier(600_000, 730 * day))
    check_tiers(tiers)
    assert choose_width(day, 1000, None) == 120_000  # 86.4 s -> 2 min: 720 buckets
    assert source_tier(120_000, tiers) == tiers[2]
    assert choose_width(3_600_000, 1000, None) == 5_000
    assert source_tier(5_000, tiers) == tiers[0]
    assert choose_width(300_000, 1000, None) == 500
    assert source_tier(500, tiers) is None  # below the finest tier: raw points
    assert choose_width(None, None, 60_000) == 60_000
    assert choose_width(day, 1000, 600_000) == 600_000  # resolution_ms wins when coarser
    assert choose_width(0, 1000, None) == 2
    assert nice_width(10**11) % 2_592_000_000 == 0
    for rng in (1, 999, 10**5, 10**7, 10**9, 10**11):
        for mp in (1, 7, 1000, 100_000):
            w = choose_width(rng, mp, None)
            assert math.ceil(rng / w) <= mp
    with pytest.raises(ValueError, match="multiple"):
        check_tiers((Tier(1000, 1), Tier(1500, 1)))


def test_buckets_add_fills_missing_keys() -> None:
    b = Buckets(10)
    b.add(0, {"a": [1.0] * AGG_LEN})
    b.add(10, {"b": [1.0] * AGG_LEN})
    assert b.aggs["a"][1] is None and b.aggs["b"][0] is None
