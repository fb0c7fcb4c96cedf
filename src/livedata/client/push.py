"""Push buffers: points of one channel as columns until they are sent as one request."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from livedata.client.types import Value


def to_columns(points: Sequence[Mapping[str, Any]], now: int | None = None) -> dict[str, list[Any]]:
    """Point dicts as one columnar body ``{"time": [...], field: [...]}`` (gaps are ``None``).

    A point without ``time`` gets ``now`` there; with ``now`` None the server reads it as its
    clock now. Raises TypeError (before using any point) when one is not a dict.
    """
    times: list[Any] = []
    columns: dict[str, list[Any]] = {}
    for n, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise TypeError(f"a point must be a dict, got {type(point).__name__}")
        t = point.get("time")
        times.append(now if t is None else t)
        for key, value in point.items():
            if key == "time":
                continue
            col = columns.get(key)
            if col is None:
                col = columns[key] = [None] * n
            col.append(value)
        for col in columns.values():
            if len(col) <= n:
                col.append(None)
    return {"time": times, **columns}


def is_columnar(points: Any) -> bool:
    return isinstance(points, Mapping) and bool(points) and all(
        isinstance(v, list | tuple) for v in points.values())


class PushBuffer:
    """Columns of one channel's not-yet-sent points."""

    __slots__ = ("columns", "created", "times")

    def __init__(self) -> None:
        self.times: list[int | str | None] = []
        self.columns: dict[str, list[Value]] = {}
        self.created = time.monotonic()

    def __len__(self) -> int:
        return len(self.times)

    def add_rows(self, points: Sequence[Mapping[str, Any]], now: int) -> None:
        """Append point dicts (one without ``time`` gets ``now``)."""
        self.add_columns(to_columns(points, now), now)

    def add_columns(self, cols: Mapping[str, Sequence[Any]], now: int) -> None:
        """Append columns ``{"time": [...], field: [...]}`` (no ``time``: every row gets ``now``)."""
        lengths = {len(c) for c in cols.values()}
        if len(lengths) != 1:
            raise ValueError("columnar points: every column must have the same length")
        m = lengths.pop()
        n = len(self.times)
        raw_times = cols.get("time")
        self.times.extend([now] * m if raw_times is None else raw_times)
        for key, col in cols.items():
            if key == "time":
                continue
            mine = self.columns.get(key)
            if mine is None:
                mine = self.columns[key] = [None] * n
            mine.extend(col)
        for mine in self.columns.values():
            if len(mine) < n + m:
                mine.extend([None] * (n + m - len(mine)))

    def body(self) -> dict[str, list[Any]]:
        return {"time": self.times, **self.columns}
