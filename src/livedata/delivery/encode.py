"""Chunks to packet bodies: the one place that encodes what a subscriber is owed. Pure.

Live packets (:func:`encode_owed`) and history packets (:func:`history_packets`, :func:`groups`)
are cut so that one packet holds about a target number of bytes on the wire, whatever the chunks
hold: a backfill never encodes more than that at once.
"""

from __future__ import annotations

import bisect
from collections.abc import Container, Iterable, Iterator, Sequence

from livedata.core.frames import Chunk, FieldDef, Rows, Sparse, Value, col_slice, data_body, frame_json

WIRE_ROW = 16
"""Bytes of a row's time on the wire, with its separators."""
WIRE_CELL = 6
"""Bytes of an empty cell on the wire (``null,``), the least any cell costs."""
WIRE_UNDEF = 5
"""Bytes a missing cell adds beyond its ``null``: its row's index in its column's
``data.entities[i].Undef`` list (up to 4 digits, and a comma; see ``frames.mark_missing``)."""
WIRE_ENTITY = 16
"""Bytes of one column's entry in ``data.entities`` (``{"Undef":[`` ... ``]},``), once per packet.
A sparse row costs these too: 1,000 one-value rows of a 1,000-field channel made packets of
84 KB where 64 KiB were laid out when only the ``null`` cells were counted."""


def select(keys: Iterable[str], fields: dict[str, FieldDef], wanted: tuple[str, ...] | None) -> list[str]:
    """The field keys a subscription asked for (by key or display name), in schema order."""
    if wanted is None:
        return list(keys)
    want = set(wanted)
    return [k for k in keys if k in want or fields[k].name in want]


def split_rows(chunks: Sequence[Chunk], keys: Sequence[str]) -> tuple[Rows, Rows]:
    """Split chunks into on-time and late rows (late: older than the channel's newest before)."""
    ontime, late = Rows(), Rows()
    for c in chunks:
        i = c.late_split()
        cols = {k: c.columns[k] for k in keys if k in c.columns}
        if i == 0:
            ontime.extend(c.times, cols)
        else:
            n = len(c.times)
            late.extend(c.times[:i], {k: col_slice(v, 0, i) for k, v in cols.items()})
            ontime.extend(c.times[i:], {k: col_slice(v, i, n) for k, v in cols.items()})
    return ontime, late


def encode_chunks(
    chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool,
    position: str | None
) -> list[bytes]:
    """Bodies for ``chunks`` as live packets: a late one (if any), then the on-time one."""
    ontime, late = split_rows(chunks, keys)
    schema = [fields[k] for k in keys] if with_schema else None
    out = []
    if len(late):
        late.sort()
        out.append(data_body(frame_json(schema, keys, late), position, late=True))
        schema = None
    if len(ontime) or schema is not None:
        out.append(data_body(frame_json(schema, keys, ontime), position))
    return out


def encode_owed(chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool,
                epoch: str) -> tuple[list[bytes], str | None]:
    """What a subscriber owed ``chunks`` (and the schema, if ``with_schema``) is sent, and the
    position it then has (None when there are no chunks: a schema-only packet carries none)."""
    position = chunks[-1].pos.encode(epoch) if chunks else None
    if not chunks and not with_schema:
        return [], None
    return encode_chunks(chunks, keys, fields, with_schema, position), position


def row_bytes(chunk: Chunk, width: int, keys: Container[str] | None = None) -> int:
    """About what one row of ``chunk`` costs on the wire in a frame of ``width`` fields (of
    ``keys``; None: all of the chunk's): at least its width in empty cells, and at most what the
    chunk holds in memory per row (values are smaller as JSON than as Python objects); and each
    missing cell's index in ``entities``. A packet with a missing cell costs
    :func:`packet_bytes` more."""
    return _row_cost(chunk, width, keys)[0]


def _row_cost(chunk: Chunk, width: int, keys: Container[str] | None) -> tuple[int, bool]:
    """:func:`row_bytes`, and whether the chunk has a missing cell."""
    n = max(1, len(chunk))
    present = 0
    for k, col in chunk.columns.items():
        if keys is None or k in keys:
            present += len(col.values) if isinstance(col, Sparse) else len(col) - col.count(None)
    missing = max(0, width * len(chunk) - present)
    return max(WIRE_ROW + WIRE_CELL * width, chunk.nbytes // n) + -(-WIRE_UNDEF * missing // n), missing > 0


def packet_bytes(width: int) -> int:
    """What a packet of ``width`` fields with a missing cell costs beyond its rows, at most: an
    ``entities`` entry for every column."""
    return WIRE_ENTITY * width


def groups(chunks: Iterable[Chunk], keys: Sequence[str], target: int) -> Iterator[tuple[list[Chunk], bool]]:
    """``chunks`` (log order) in groups of about ``target`` wire bytes each; a chunk larger than that
    is cut by rows. Each group comes with whether it ends at a chunk's end (only then does its last
    chunk's position name what the group holds)."""
    group: list[Chunk] = []
    width = len(keys)
    wanted = set(keys)
    size = 0
    marked = False  # the group's entities are counted (an upper bound, once per group)
    for c in chunks:
        per, missing = _row_cost(c, width, wanted)
        n = len(c)
        lo = 0
        while lo < n:
            if missing and not marked:
                size += packet_bytes(width)
                marked = True
            hi = min(n, lo + max(1, (target - size) // per))
            group.append(c if lo == 0 and hi == n else c.slice(lo, hi))
            size += (hi - lo) * per
            lo = hi
            if size >= target:
                yield group, lo == n
                group, size, marked = [], 0, False
    if group:
        yield group, True


def _getter(chunk: Chunk, key: str) -> Sequence[Value] | dict[int, Value] | None:
    col = chunk.columns.get(key)
    if isinstance(col, Sparse):
        return dict(zip(col.rows, col.values, strict=True))
    return col


def history_packets(chunks: Sequence[Chunk], keys: Sequence[str], hwm: int | None,
                    target: int) -> Iterator[tuple[Rows, bool]]:
    """A page of history (chunks in log order) as packets in time order: ``(rows, late)``
    (see :func:`history_page`)."""
    return history_page(chunks, keys, hwm, target)[1]


def history_page(chunks: Sequence[Chunk], keys: Sequence[str], hwm: int | None,
                 target: int) -> tuple[int, Iterator[tuple[Rows, bool]]]:
    """A page of history (chunks in log order) as packets in time order: how many, and an iterator
    of ``(rows, late)`` that lays each one out only when asked for it.

    Rows older than ``hwm`` (the newest time already sent on time) come first, in packets marked
    late; then the rest, sorted. Each packet holds about ``target`` wire bytes. Only the rows of
    one packet are ever laid out densely, so sparse chunks stay cheap until they are sent.
    """
    if not chunks:
        return 0, iter(())
    width = len(keys)
    wanted = set(keys)
    costs = [_row_cost(c, width, wanted) for c in chunks]
    per = max(cost for cost, _ in costs)
    step = max(1, (target - (packet_bytes(width) if any(m for _, m in costs) else 0)) // per)
    # Where each chunk's rows start in the page, and the page's times in log order.
    starts: list[int] = []
    times: list[int] = []
    for c in chunks:
        starts.append(len(times))
        times.extend(c.times)
    n = len(times)
    in_order = all(chunks[i - 1].times[-1] <= chunks[i].times[0] for i in range(1, len(chunks)) if chunks[i].times)
    order: list[int] | None = None
    if in_order:
        ordered = times
    else:
        order = sorted(range(n), key=times.__getitem__)
        ordered = [times[i] for i in order]
    cut = 0 if hwm is None else bisect.bisect_left(ordered, hwm)

    def packets() -> Iterator[tuple[Rows, bool]]:
        for lo, hi, late in ((0, cut, True), (cut, n, False)):
            for a in range(lo, hi, step):
                b = min(hi, a + step)
                if order is None:
                    yield _slice_rows(chunks, starts, keys, a, b), late
                else:
                    yield _gather_rows(chunks, starts, keys, order[a:b], ordered[a:b]), late

    return -(-cut // step) + -(-(n - cut) // step), packets()


def _slice_rows(chunks: Sequence[Chunk], starts: Sequence[int], keys: Sequence[str], a: int, b: int) -> Rows:
    rows = Rows()
    i = max(0, bisect.bisect_right(starts, a) - 1)
    while i < len(chunks) and starts[i] < b:
        c = chunks[i]
        lo, hi = max(0, a - starts[i]), min(len(c), b - starts[i])
        if lo < hi:
            part = c if lo == 0 and hi == len(c) else c.slice(lo, hi)
            rows.extend(part.times, {k: part.columns[k] for k in keys if k in part.columns})
        i += 1
    return rows


def _gather_rows(chunks: Sequence[Chunk], starts: Sequence[int], keys: Sequence[str], picks: Sequence[int],
                 times: list[int]) -> Rows:
    where = [(j := bisect.bisect_right(starts, p) - 1, p - starts[j]) for p in picks]
    columns: dict[str, list[Value]] = {}
    getters = [{k: _getter(c, k) for k in keys} for c in chunks]
    for k in keys:
        col: list[Value] = []
        seen = False
        for j, r in where:
            g = getters[j][k]
            if g is None:
                col.append(None)
            elif isinstance(g, dict):
                v = g.get(r)
                col.append(v)
                seen = seen or v is not None
            else:
                col.append(g[r])
                seen = True
        if seen:
            columns[k] = col
    return Rows(times, columns)
