"""Rollups: per channel and numeric field, aggregates per time bucket at a few tiers. Pure.

An **aggregate** (``Agg``) of some points of one field is a list of ten numbers::

    [count, sum, min, min_t, max, max_t, first, first_t, last, last_t]

over the field's finite values (``None``, NaN and infinities are missing: JSON has no NaN, and
Grafana draws a missing value as a gap). ``min_t``/``max_t`` are the times of the minimum and
the maximum (the earliest one when a value repeats), ``first``/``last`` the values at the smallest
and the largest time. Points are taken in the channel's order: by time, and in log order among
equal times, which is how a backfill of raw history is sorted. So an aggregate is exactly what
one gets by aggregating the raw points of its bucket, late points included.

Aggregates **merge**: ``merge(a, b)`` with ``b`` later in log order gives the aggregate of both
sets of points. Brokers keep *tiers* (bucket widths that divide each other, 1 s, 10 s, 1 min,
10 min by default) updated at ingest: :func:`chunk_rollup` computes a stored chunk's partial
aggregates per tier, and each broker merges them into what it keeps. A subscription at a
bucket width ``w`` that is a multiple of a tier reads that tier and merges runs of buckets
(:func:`regroup`); below the finest tier it aggregates raw points (:func:`aggregate`).

A subscription's frame shows each bucket as **two rows**, at the bucket's start and at its middle:
a field's minimum and maximum in the order they happened (M4-style: a line through them keeps
every spike visible, as the raw points would draw at that width). See docs/protocol.md.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import is_not

from livedata.core.frames import Column, Rows, Sparse, Value, compact

Agg = list[float]
"""``[count, sum, min, min_t, max, max_t, first, first_t, last, last_t]``."""

AGG_LEN = 10
COUNT, SUM, MIN, MIN_T, MAX, MAX_T, FIRST, FIRST_T, LAST, LAST_T = range(AGG_LEN)

_not_none = partial(is_not, None)


# --- aggregates ------------------------------------------------------------------------------------


def agg_of(times: Sequence[int], col: Sequence[Value], lo: int, hi: int) -> Agg | None:
    """The aggregate of ``col[lo:hi]`` (``times`` sorted, the same length), or None when it has no
    finite number. Strings and booleans are not numbers here."""
    seg = col if lo == 0 and hi == len(col) else col[lo:hi]  # one bucket: no copy
    if not seg:
        return None
    try:
        total = sum(seg)  # type: ignore[arg-type]
    except TypeError:  # missing values (None), or not numbers at all
        return _agg_sparse(times, seg, lo)
    if isinstance(total, bool) or not isinstance(total, int | float):
        return None
    if isinstance(total, float) and not math.isfinite(total):
        return _agg_sparse(times, seg, lo)  # a NaN or an infinity among them (or an overflow)
    first = seg[0]
    if isinstance(first, bool):
        return None
    mn = min(seg)  # type: ignore[type-var]
    mx = max(seg)  # type: ignore[type-var]
    return [float(len(seg)), float(total), float(mn), float(times[lo + seg.index(mn)]),  # type: ignore[arg-type]
            float(mx), float(times[lo + seg.index(mx)]), float(first),  # type: ignore[arg-type]
            float(times[lo]), float(seg[-1]), float(times[hi - 1])]  # type: ignore[arg-type]


def _finite(v: object) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)
            and (not isinstance(v, float) or math.isfinite(v)))


_PLAIN = frozenset((int, float))


def _agg_sparse(times: Sequence[int], seg: Sequence[Value], lo: int) -> Agg | None:
    """:func:`agg_of` for a segment with missing or non-finite values (line protocol's columns are
    mostly ``None``: C-speed filtering first, a Python loop only for what remains)."""
    vals = list(filter(_not_none, seg))
    if not vals:
        return None
    total: float | None = None
    if _PLAIN.issuperset(map(type, vals)):  # ints and floats only (no bool, no str): C speed
        total = sum(vals)  # type: ignore[arg-type]
        if not math.isfinite(total):
            if not all(map(_finite, vals)):  # a NaN or an infinity among them: the loop below skips them
                total = None
            else:  # an overflow on the way: the exact sum, where it has one
                with contextlib.suppress(OverflowError):
                    total = math.fsum(vals)  # type: ignore[arg-type]
    if total is not None:
        mn = min(vals)  # type: ignore[type-var]
        mx = max(vals)  # type: ignore[type-var]
        first, last = vals[0], vals[-1]
        i_first = seg.index(first)
        i_last = len(seg) - 1 - seg[::-1].index(last)
        return [float(len(vals)), float(total), float(mn), float(times[lo + seg.index(mn)]),  # type: ignore[arg-type]
                float(mx), float(times[lo + seg.index(mx)]), float(first),  # type: ignore[arg-type]
                float(times[lo + i_first]), float(last), float(times[lo + i_last])]  # type: ignore[arg-type]
    out: Agg | None = None
    for i, v in enumerate(seg):
        if _finite(v):
            t = float(times[lo + i])
            x = float(v)  # type: ignore[arg-type]
            if out is None:
                out = [1.0, x, x, t, x, t, x, t, x, t]
            else:
                merge(out, [1.0, x, x, t, x, t, x, t, x, t])
    return out


def _agg_rows(times: Sequence[int], rows: Sequence[int], vals: Sequence[Value], i: int, j: int) -> Agg | None:
    """The aggregate of a sparse column's values ``vals[i:j]`` at rows ``rows[i:j]``: when they are
    all plain numbers with a finite sum (the usual case) at C speed, reading ``times`` only at the
    four rows the aggregate names; else :func:`_agg_sparse`."""
    seg = vals[i:j]
    if _PLAIN.issuperset(map(type, seg)):  # no None, bool or str
        total = sum(seg)  # type: ignore[arg-type]
        if math.isfinite(total):
            mn = min(seg)  # type: ignore[type-var]
            mx = max(seg)  # type: ignore[type-var]
            return [float(j - i), float(total), float(mn), float(times[rows[i + seg.index(mn)]]),  # type: ignore[arg-type]
                    float(mx), float(times[rows[i + seg.index(mx)]]), float(seg[0]),  # type: ignore[arg-type]
                    float(times[rows[i]]), float(seg[-1]), float(times[rows[j - 1]])]  # type: ignore[arg-type]
    return _agg_sparse(list(map(times.__getitem__, rows[i:j])), seg, 0)


def merge(a: Agg, b: Agg) -> None:
    """Fold ``b`` into ``a``; ``b``'s points come after ``a``'s in log order (that decides ties)."""
    if b[COUNT] == 0:
        return
    if a[COUNT] == 0:
        a[:] = b
        return
    a[COUNT] += b[COUNT]
    a[SUM] += b[SUM]
    if b[MIN] < a[MIN] or (b[MIN] == a[MIN] and b[MIN_T] < a[MIN_T]):
        a[MIN], a[MIN_T] = b[MIN], b[MIN_T]
    if b[MAX] > a[MAX] or (b[MAX] == a[MAX] and b[MAX_T] < a[MAX_T]):
        a[MAX], a[MAX_T] = b[MAX], b[MAX_T]
    if b[FIRST_T] < a[FIRST_T]:
        a[FIRST], a[FIRST_T] = b[FIRST], b[FIRST_T]
    if b[LAST_T] >= a[LAST_T]:
        a[LAST], a[LAST_T] = b[LAST], b[LAST_T]


def mean(a: Agg) -> float | None:
    return a[SUM] / a[COUNT] if a[COUNT] else None


# --- tiers --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tier:
    width_ms: int
    retention_ms: int

    @property
    def name(self) -> str:
        return width_name(self.width_ms)


def width_name(ms: int) -> str:
    """``1s``, ``10s``, ``1m``, ``10m``, ``2h``, ``1d``, ``500ms``: a width as people write it."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(1_000, 86_400_000),            # 1 s for 1 day
    Tier(10_000, 7 * 86_400_000),       # 10 s for 7 days
    Tier(60_000, 90 * 86_400_000),      # 1 min for 90 days
    Tier(600_000, 730 * 86_400_000),    # 10 min for 2 years
)


def check_tiers(tiers: Sequence[Tier]) -> None:
    """Raise ValueError unless every tier's width is a multiple of the one before."""
    for prev, t in itertools.pairwise(tiers):
        if t.width_ms <= prev.width_ms or t.width_ms % prev.width_ms:
            raise ValueError(f"tier {t.name} is not a multiple of tier {prev.name}")
    for t in tiers:
        if t.width_ms < 1 or t.retention_ms < 0:
            raise ValueError(f"tier {t.name}: width and retention must be positive")


Partials = list[tuple[int, dict[str, Agg]]]
"""``(bucket start, {field key: aggregate})`` in bucket order."""


def chunk_partials(times: Sequence[int], columns: Mapping[str, Column], keys: Iterable[str],
                   width: int) -> Partials:
    """Aggregates of a chunk's points (``times`` sorted) per bucket of ``width`` ms, per key.

    A column that holds values in few rows (``frames.Sparse``, or a list mostly ``None``: line
    protocol's series) is aggregated over its values only, bucket by bucket where it has any, so a
    chunk of many series costs its values, not buckets times series."""
    n = len(times)
    if not n:
        return []
    starts: list[int] = []
    bounds: list[int] = []
    lo = 0
    t_last = times[-1]
    while lo < n:
        start = times[lo] - times[lo] % width
        end = start + width
        starts.append(start)
        bounds.append(lo)
        lo = n if t_last < end else bisect.bisect_left(times, end, lo)
    bounds.append(n)
    per: list[dict[str, Agg]] = [{} for _ in starts]
    for key in keys:
        col = columns.get(key)
        if col is None:
            continue
        if not isinstance(col, Sparse):
            col = compact(col) if len(starts) > 1 else col
        if isinstance(col, Sparse):
            rows, vals = col.rows, col.values
            i, m = 0, len(rows)
            while i < m:
                b = bisect.bisect_right(bounds, rows[i]) - 1
                j = bisect.bisect_left(rows, bounds[b + 1], i)
                a = _agg_rows(times, rows, vals, i, j)
                if a is not None:
                    per[b][key] = a
                i = j
            continue
        for b in range(len(starts)):
            a = agg_of(times, col, bounds[b], bounds[b + 1])
            if a is not None:
                per[b][key] = a
    return [(start, aggs) for start, aggs in zip(starts, per, strict=True) if aggs]


def coarsen(parts: Partials, width: int) -> Partials:
    """Partials of a finer tier merged into buckets of ``width`` (a multiple), in order."""
    out: Partials = []
    for start, aggs in parts:
        b = start - start % width
        if out and out[-1][0] == b:
            mine = out[-1][1]
            for k, a in aggs.items():
                have = mine.get(k)
                if have is None:
                    mine[k] = list(a)
                else:
                    merge(have, a)
        else:
            out.append((b, {k: list(a) for k, a in aggs.items()}))
    return out


def chunk_rollup(times: Sequence[int], columns: Mapping[str, Column], keys: Iterable[str],
                 tiers: Sequence[Tier]) -> list[Partials]:
    """A chunk's partial aggregates for every tier (finest first), computed once from the points."""
    if not tiers:
        return []
    first = chunk_partials(times, columns, keys, tiers[0].width_ms)
    out = [first]
    for t in tiers[1:]:
        out.append(coarsen(out[-1], t.width_ms))
    return out


# --- buckets read back -----------------------------------------------------------------------------


@dataclass(slots=True)
class Buckets:
    """Aggregates per bucket of ``width`` ms: ``starts`` sorted, ``aggs[key][i]`` for ``starts[i]``."""

    width: int
    starts: list[int] = field(default_factory=list)
    aggs: dict[str, list[Agg | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: int, row: Mapping[str, Agg]) -> None:
        """Append bucket ``start`` (after every bucket here)."""
        n = len(self.starts)
        self.starts.append(start)
        for k, a in row.items():
            col = self.aggs.get(k)
            if col is None:
                col = self.aggs[k] = [None] * n
            col.append(a)
        for col in self.aggs.values():
            if len(col) <= n:
                col.append(None)

    def get(self, key: str, i: int) -> Agg | None:
        col = self.aggs.get(key)
        return None if col is None else col[i]


def regroup(b: Buckets, width: int) -> Buckets:
    """``b`` (sorted buckets of a width dividing ``width``) merged into buckets of ``width``."""
    if width == b.width:
        return b
    if width % b.width:
        raise ValueError(f"{width} ms is not a multiple of {b.width} ms")
    out = Buckets(width)
    i, n = 0, len(b.starts)
    while i < n:
        start = b.starts[i] - b.starts[i] % width
        j = i
        while j < n and b.starts[j] < start + width:
            j += 1
        row: dict[str, Agg] = {}
        for k, col in b.aggs.items():
            acc: Agg | None = None
            for a in col[i:j]:
                if a is None:
                    continue
                if acc is None:
                    acc = list(a)
                else:
                    merge(acc, a)
            if acc is not None:
                row[k] = acc
        out.add(start, row)
        i = j
    return out


def aggregate(times: Sequence[int], columns: Mapping[str, Column], keys: Iterable[str],
              width: int) -> Buckets:
    """Buckets of ``width`` ms straight from raw points (``times`` sorted, stable)."""
    out = Buckets(width)
    for start, aggs in chunk_partials(times, columns, list(keys), width):
        out.add(start, aggs)
    return out


def m4_rows(b: Buckets, keys: Sequence[str]) -> Rows:
    """Two rows per bucket, at its start and its middle: each field's min and max in time order."""
    w2 = b.width // 2
    times: list[int] = []
    for s in b.starts:
        times.append(s)
        times.append(s + w2)
    columns: dict[str, list[Value]] = {}
    for key in keys:
        col = b.aggs.get(key)
        out: list[Value] = []
        if col is None:
            out = [None] * len(times)
        else:
            for a in col:
                if a is None or not a[COUNT]:
                    out.append(None)
                    out.append(None)
                elif a[MAX_T] < a[MIN_T]:
                    out.append(a[MAX])
                    out.append(a[MIN])
                else:
                    out.append(a[MIN])
                    out.append(a[MAX])
        columns[key] = out
    return Rows(times, columns)


# --- choosing a width ------------------------------------------------------------------------------

NICE_MS: tuple[int, ...] = (
    2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_200_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    86_400_000, 172_800_000, 604_800_000, 1_209_600_000, 2_592_000_000,
)
"""Bucket widths a subscription may get (like Grafana's intervals); beyond: multiples of 30 days."""

MAX_POINTS = 100_000
MIN_WIDTH_MS = NICE_MS[0]


def nice_width(ms: float) -> int:
    """The smallest nice width >= ``ms``."""
    i = bisect.bisect_left(NICE_MS, ms)
    if i < len(NICE_MS):
        return NICE_MS[i]
    top = NICE_MS[-1]
    return int(-(-ms // top)) * top


def choose_width(range_ms: int | None, max_points: int | None, resolution_ms: int | None) -> int:
    """The bucket width of a subscription: at least ``resolution_ms``, and at most ``max_points``
    buckets over ``range_ms``; rounded up to a nice width (so it is a multiple of a tier when
    it is 1 s or more)."""
    want = float(resolution_ms or 0)
    if max_points is not None and range_ms is not None:
        want = max(want, range_ms / max_points)
    return nice_width(max(want, MIN_WIDTH_MS))


def source_tier(width: int, tiers: Sequence[Tier]) -> Tier | None:
    """The coarsest tier whose width divides ``width`` (the fewest buckets to read, and the longest
    retention among those that fit); None when none does (then raw points are aggregated)."""
    best: Tier | None = None
    for t in tiers:
        if width % t.width_ms == 0:
            best = t
    return best


def bucket_of(t: int, width: int) -> int:
    return t - t % width


# --- one channel's tiers in memory -------------------------------------------------------------------


class TierStore:
    """One channel's buckets at one width, compact: ``array`` columns of 10 doubles per bucket per
    field (80 bytes per field and bucket), for brokers that keep tiers in memory."""

    __slots__ = ("cols", "starts", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.starts: array[int] = array("q")
        self.cols: dict[str, array[float]] = {}

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def cells(self) -> int:
        """Field-buckets held (what a memory cap counts)."""
        return len(self.starts) * max(1, len(self.cols))

    def _index(self, start: int) -> int:
        starts = self.starts
        n = len(starts)
        if n and starts[-1] == start:
            return n - 1
        i = bisect.bisect_left(starts, start)
        if i < n and starts[i] == start:
            return i
        starts.insert(i, start)
        blank = _BLANK
        for col in self.cols.values():
            col[i * AGG_LEN:i * AGG_LEN] = blank
        return i

    def add(self, parts: Partials, cutoff: int | None = None) -> None:
        """Merge a chunk's partials for this width (in log order); buckets ending at or before
        ``cutoff`` are past retention and skipped."""
        for start, aggs in parts:
            if cutoff is not None and start + self.width <= cutoff:
                continue
            i = self._index(start)
            o = i * AGG_LEN
            for key, a in aggs.items():
                col = self.cols.get(key)
                if col is None:
                    col = self.cols[key] = array("d", _BLANK * len(self.starts))
                if col[o] == 0:
                    col[o:o + AGG_LEN] = array("d", a)
                else:
                    have = col[o:o + AGG_LEN].tolist()
                    merge(have, a)
                    col[o:o + AGG_LEN] = array("d", have)

    def trim(self, cutoff: int | None, max_buckets: int | None = None) -> None:
        """Drop buckets that end at or before ``cutoff``, then the oldest beyond ``max_buckets``."""
        starts = self.starts
        k = 0 if cutoff is None else bisect.bisect_left(starts, cutoff - self.width + 1)
        if max_buckets is not None:
            k = max(k, len(starts) - max_buckets)
        if k > 0:
            del starts[:k]
            for col in self.cols.values():
                del col[:k * AGG_LEN]

    def read(self, start_ms: int | None, end_ms: int | None, keys: Iterable[str] | None = None) -> Buckets:
        """Buckets overlapping ``[start_ms, end_ms]`` (None: unbounded)."""
        starts = self.starts
        lo = 0 if start_ms is None else bisect.bisect_left(starts, start_ms - self.width + 1)
        hi = len(starts) if end_ms is None else bisect.bisect_right(starts, end_ms)
        out = Buckets(self.width, starts[lo:hi].tolist())
        for key in (self.cols if keys is None else keys):
            col = self.cols.get(key)
            if col is None:
                continue
            flat = col[lo * AGG_LEN:hi * AGG_LEN].tolist()
            out.aggs[key] = [flat[i:i + AGG_LEN] if flat[i] else None for i in range(0, len(flat), AGG_LEN)]
        return out


_BLANK = array("d", [0.0] * AGG_LEN)
