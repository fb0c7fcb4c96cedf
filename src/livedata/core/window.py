"""A reorder window: hold points a little while, then release them in time order. Pure.

Pushes from several devices (or one device over a flaky link) arrive slightly out of order. A
push with ``reorder_ms=N`` is held as one entry, due N ms after it arrived; when the oldest held
entry of a channel is due, every held point of that channel up to the newest time among the due
entries is released, sorted by time (ties keep arrival order), as one batch. A point that
arrives after a newer one was released is late, as without a window; nothing is dropped and
nothing waits longer than its window.

The brokers keep the entries (in this process, or in Redis so that a ``204`` survives this
process and a broker outage) and call :func:`release`; both get the same answer from it. Times
are milliseconds on any clock the caller chooses.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from livedata.core.frames import Batch, FieldDef, Rows, Sparse, col_slice, compact

MAX_REORDER_MS = 60_000


@dataclass(slots=True)
class Held:
    """One held push to one channel: its points sorted by time, when they are due, what they cost."""

    id: int
    """Arrival order within the channel."""
    due: float
    batch: Batch
    size: int = 0
    """:func:`held_bytes` of ``batch``."""


@dataclass(slots=True)
class Release:
    """What :func:`release` lets go: ``batch`` to publish, the entries it took whole (``gone``) and
    the ones it took in part (``kept``: the same ids, with the points left)."""

    batch: Batch
    gone: list[int]
    kept: list[Held]


def release(entries: Sequence[Held], now: float, everything: bool = False) -> Release | None:
    """The points of ``entries`` (in arrival order) to publish at ``now``, or None when none is due.

    ``everything`` releases every entry (shutdown).
    """
    due = [e for e in entries if everything or e.due <= now]
    if not due:
        return None
    horizon = max(e.batch.times[-1] for e in due)  # entries are never empty
    rows = Rows()
    fields: dict[str, FieldDef] = {}
    gone: list[int] = []
    kept: list[Held] = []
    for e in entries:
        times = e.batch.times
        n = len(times) if everything else bisect.bisect_right(times, horizon)
        if n == 0:
            continue
        columns = e.batch.columns
        rows.extend(times[:n], {k: col_slice(c, 0, n) for k, c in columns.items()} if n < len(times) else columns)
        for k, f in e.batch.fields.items():
            fields.setdefault(k, f)
        if n == len(times):
            gone.append(e.id)
        else:
            rest = Batch(times[n:], {k: col_slice(c, n, len(times)) for k, c in columns.items()}, e.batch.fields)
            kept.append(Held(e.id, e.due, rest, held_bytes(rest)))
    rows.sort()
    return Release(Batch(rows.times, {k: compact(rows.columns[k]) for k in fields if k in rows.columns}, fields), gone,
                   kept)


def held_bytes(batch: Batch) -> int:
    """What holding ``batch`` costs in memory, about (Python objects: the bound of held points)."""
    n = len(batch.times)
    size = 200 + 40 * n
    for key, col in batch.columns.items():
        values = col.values if isinstance(col, Sparse) else col
        m = len(values)
        size += 64 + 8 * m + (16 * m if isinstance(col, Sparse) else 0)
        kind = batch.fields[key].type if key in batch.fields else "number"
        if kind == "number":
            size += 24 * m
        elif kind == "string":
            size += sum(49 + len(v) for v in values if isinstance(v, str))
    return size
