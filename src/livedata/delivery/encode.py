"""Chunks to packet bodies: the one place that encodes what a subscriber is owed. Pure.

One message per position: whatever a subscriber is owed (one chunk, a coalesced run of them, a
piece of a backfill) goes out as *one* ``data`` message whose rows are sorted by time and whose
``position`` is the end of that run in the channel's log. So every message's position is a safe
place to resume from: the points up to it are exactly the ones the subscription was sent. A
message is marked ``late`` when some of its rows are older than the newest point the reader may
already hold (the ``floor``): readers insert those rows instead of appending them.

History is cut into pieces (:func:`pieces`) of about a target number of bytes on the wire (and at
most a number of values), whatever the chunks hold: a backfill never encodes more than that at once.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Sequence

from livedata.core.frames import Chunk, FieldDef, Rows, Sparse, Value, data_body, finite_numbers, frame_json

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


def gather(chunks: Sequence[Chunk], keys: Sequence[str], floor: int | None) -> tuple[Rows, bool]:
    """The rows of ``chunks`` (log order) as one packet sorted by time (ties keep log order), and
    whether it is late: a row older than ``floor``, the newest time the reader may already hold."""
    rows = Rows()
    newest: int | None = None
    unsorted = late = False
    for c in chunks:
        times = c.times
        if not times:
            continue
        first = times[0]
        if floor is not None and first < floor:
            late = True
        if newest is not None and first < newest:
            unsorted = True
        if newest is None or times[-1] > newest:
            newest = times[-1]
        rows.extend(times, {k: c.columns[k] for k in keys if k in c.columns})
    if unsorted:
        rows.sort()
    return rows, late


def encode_chunks(chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool,
                  position: str, floor: int | None) -> bytes:
    """One ``data`` body for ``chunks`` at ``position`` (the end of the run)."""
    rows, late = gather(chunks, keys, floor)
    schema = [fields[k] for k in keys] if with_schema else None
    return data_body(frame_json(schema, keys, rows), position, late=late)


def encode_owed(chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool,
                epoch: str, position: str | None = None) -> tuple[list[bytes], str | None]:
    """What a live subscriber owed ``chunks`` (and the schema, if ``with_schema``) is sent, and the
    position it then has. Live chunks are late against the channel's newest time before the first
    of them (``hwm``), which is at least the newest time the subscriber was sent. With no chunks,
    a schema packet carries ``position`` (where the subscriber already is)."""
    if chunks:
        position = chunks[-1].end.encode(epoch)
    elif not with_schema:
        return [], None
    return [encode_chunks(chunks, keys, fields, with_schema, position or "", chunks[0].hwm if chunks else None)], \
        position


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
            present += len(col.values) if isinstance(col, Sparse) else len(col) - _nones(col)
    missing = max(0, width * len(chunk) - present)
    return max(WIRE_ROW + WIRE_CELL * width, chunk.nbytes // n) + -(-WIRE_UNDEF * missing // n), missing > 0


def _nones(col: list[Value]) -> int:
    """How many cells of a dense column are None (``count(None)`` alone was 13 % of a large
    backfill's CPU: it compares every float with None)."""
    return 0 if finite_numbers(col) else col.count(None)


def packet_bytes(width: int) -> int:
    """What a packet of ``width`` fields with a missing cell costs beyond its rows, at most: an
    ``entities`` entry for every column."""
    return WIRE_ENTITY * width


def pieces(chunks: Iterable[Chunk], keys: Sequence[str], max_values: int, min_rows: int = 1000,
           target: int = 0) -> Iterator[list[Chunk]]:
    """Cut ``chunks`` (log order) into runs of at most about ``target`` wire bytes (0: no byte
    target; :func:`row_bytes`, and :func:`packet_bytes` once for a run with a missing cell) and
    ``max_values`` values (rows times fields, at least ``min_rows`` rows), splitting a chunk that
    alone is larger: each run ends at a cut in the log, so its end is a position to resume from."""
    width = len(keys)
    wanted = set(keys)
    cap = max(min_rows, max_values // max(1, width))
    run: list[Chunk] = []
    n = size = 0
    marked = False  # the run's entities are counted (an upper bound, once per run)
    for c in chunks:
        per, missing = _row_cost(c, width, wanted)
        at, rows = 0, len(c.times)  # a large chunk is cut where it is, never copied whole again
        while at < rows:
            if missing and target and not marked:
                size += packet_bytes(width)
                marked = True
            room = cap - n
            if target:
                room = min(room, (target - size) // per)
            if room <= 0 and not run:
                room = 1
            if room <= 0:
                yield run
                run, n, size, marked = [], 0, 0, False
                continue
            if rows - at <= room:
                run.append(c if at == 0 else c.slice(at, rows))
                n += rows - at
                size += (rows - at) * per
                break
            run.append(c.slice(at, at + room))
            at += room
            yield run
            run, n, size, marked = [], 0, 0, False
        if n >= cap or (target and size >= target):
            yield run
            run, n, size, marked = [], 0, 0, False
    if run:
        yield run
