"""Points, schemas, chunks and Grafana ``DataFrameJSON`` packets. Pure.

About 600 lines: the data model every layer passes around (batches, chunks, positions, columns)
and its one encoding; split, each part would import the others.

A *batch* is what a publisher hands in: columns of equal length, one of times (epoch ms) and one
per field. A *chunk* is a batch once the broker stored it: it has a position, its times are
sorted, and it remembers the channel's newest time before it (``hwm``), which decides which of
its points are late. Packets are encoded once with msgspec and shared as bytes.

A column is a list with one value per row (``None`` where the row has none), or, when few rows
have a value, a :class:`Sparse` column that stores only those: sparse data (every point with its
own fields, say) then costs what it carries, not rows times fields. Packets on the wire are dense
(Grafana's ``DataFrameJSON``): :class:`Rows` fills in the gaps one packet at a time.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

FieldType = Literal["number", "string", "boolean"]
Value = float | int | str | bool | None


class Sparse:
    """A column of ``n`` rows of which only ``rows`` (ascending) have values (``values``, aligned)."""

    __slots__ = ("n", "rows", "values")

    def __init__(self, n: int, rows: list[int], values: list[Value]) -> None:
        self.n = n
        self.rows = rows
        self.values = values

    def __len__(self) -> int:
        return self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sparse) and (self.n, self.rows, self.values) == (other.n, other.rows, other.values)

    def __repr__(self) -> str:
        return f"Sparse({self.n}, {self.rows!r}, {self.values!r})"


Column = list[Value] | Sparse
"""One field's values over a batch's or chunk's rows."""

SPARSE_BELOW = 0.2
"""A column with values in fewer than this share of its rows is stored :class:`Sparse` (a dense
row costs a pointer, 8 bytes; a sparse one a row number and a pointer, some 44)."""


def column(n: int, rows: list[int], values: list[Value]) -> Column:
    """The cheaper column for ``values`` at ``rows`` (ascending) of ``n``."""
    if len(rows) == n:
        return values
    if len(rows) < n * SPARSE_BELOW:
        return Sparse(n, rows, values)
    out: list[Value] = [None] * n
    for r, v in zip(rows, values, strict=True):
        out[r] = v
    return out


def compact(col: list[Value]) -> Column:
    """A dense column as :func:`column` would store it (sparse when it is mostly ``None``)."""
    n = len(col)
    nones = col.count(None)
    if nones <= n * (1 - SPARSE_BELOW):
        return col
    rows = [i for i, v in enumerate(col) if v is not None]
    return Sparse(n, rows, [col[i] for i in rows])


def dense(col: Column) -> list[Value]:
    """The column with one value per row."""
    if not isinstance(col, Sparse):
        return col
    out: list[Value] = [None] * col.n
    for r, v in zip(col.rows, col.values, strict=True):
        out[r] = v
    return out


def col_slice(col: Column, lo: int, hi: int) -> Column:
    """Rows ``lo`` to ``hi`` (exclusive) of the column."""
    if not isinstance(col, Sparse):
        return col[lo:hi]
    rows = col.rows
    i, j = bisect.bisect_left(rows, lo), bisect.bisect_left(rows, hi)
    return Sparse(max(0, hi - lo), [r - lo for r in rows[i:j]], col.values[i:j])


def col_take(col: Column, order: Sequence[int]) -> Column:
    """The column's rows in ``order`` (a permutation of its rows)."""
    if not isinstance(col, Sparse):
        return [col[i] for i in order]
    where = dict(zip(col.rows, col.values, strict=True))
    rows: list[int] = []
    values: list[Value] = []
    for new, old in enumerate(order):
        if old in where:
            rows.append(new)
            values.append(where[old])
    return Sparse(col.n, rows, values)


def col_values(col: Column) -> int:
    """Values the column holds (a dense column counts every row)."""
    return len(col.values) if isinstance(col, Sparse) else len(col)


def value_at(col: Column, i: int) -> Value:
    """The value of row ``i`` (None when the row has none)."""
    if isinstance(col, Sparse):
        j = bisect.bisect_left(col.rows, i)
        return col.values[j] if j < len(col.rows) and col.rows[j] == i else None
    return col[i]


def last_value(col: Column) -> Value:
    """The value of the column's last row (None when it has none)."""
    if isinstance(col, Sparse):
        return col.values[-1] if col.rows and col.rows[-1] == col.n - 1 else None
    return col[-1] if col else None

_encode = msgspec.json.Encoder().encode


class SchemaError(ValueError):
    """A field's value does not match the type the channel already has for it."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def field_key(name: str, labels: Mapping[str, str] | None = None) -> str:
    """The unique frame name of a field: ``name``, or ``name {k="v",...}`` with labels sorted."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name} {{{inner}}}"


def value_type(value: Value) -> FieldType | None:
    """The schema type of a value (None for a missing value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise SchemaError(f"unsupported value {value!r}: use a number, string or boolean")


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of a channel's schema."""

    key: str
    name: str
    type: FieldType
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.key, "type": self.type}
        if self.labels:
            out["labels"] = dict(self.labels)
            out["config"] = {"displayNameFromDS": self.key}
        return out

    @classmethod
    def of(cls, name: str, type_: FieldType, labels: Mapping[str, str] | None = None) -> FieldDef:
        # Ingest calls this for every field of every push: FieldDefs are immutable, so share the
        # common ones. Only short ones are remembered, and only so many: the cache is at most about
        # FIELD_DEFS_MAX * FIELD_DEF_CACHED_CHARS characters, whatever clients send (it once kept
        # 65,536 definitions of any length, and RSS grew with every round of new long tag values).
        key = (name, type_, tuple(labels.items()) if labels else ())
        fd = _FIELD_DEFS.get(key)
        if fd is None:
            fd = cls(field_key(name, labels), name, type_, tuple(sorted((labels or {}).items())))
            if len(fd.key) <= FIELD_DEF_CACHED_CHARS:
                if len(_FIELD_DEFS) >= FIELD_DEFS_MAX:
                    _FIELD_DEFS.clear()
                _FIELD_DEFS[key] = fd
        return fd


FIELD_DEFS_MAX = 4096
FIELD_DEF_CACHED_CHARS = 128
_FIELD_DEFS: dict[tuple[str, str, tuple[tuple[str, str], ...]], FieldDef] = {}


@dataclass(slots=True)
class Schema:
    """A channel's ordered fields. Fields keep their first type; new ones are appended."""

    fields: dict[str, FieldDef] = field(default_factory=dict)

    def check(self, incoming: Iterable[FieldDef]) -> list[FieldDef]:
        """Return the fields that would be new; raise SchemaError on a type conflict. No change."""
        new: list[FieldDef] = []
        seen: set[str] = set()
        for f in incoming:
            have = self.fields.get(f.key)
            if have is None:
                if f.key not in seen:
                    new.append(f)
                    seen.add(f.key)
            elif have.type != f.type:
                raise SchemaError(
                    f"field {f.key!r} is {have.type} on this channel; got a {f.type}", field=f.key
                )
        return new

    def add(self, fields: Iterable[FieldDef]) -> None:
        for f in fields:
            self.fields.setdefault(f.key, f)

    def keys(self) -> list[str]:
        return list(self.fields)


@dataclass(slots=True)
class Batch:
    """Points to publish: ``times`` and one column per field key, all the same length."""

    times: list[int]
    columns: dict[str, Column]
    fields: dict[str, FieldDef]

    def __len__(self) -> int:
        return len(self.times)

    def sorted(self) -> Batch:
        """This batch in time order (stable: equal times keep their order)."""
        times = self.times
        if times == sorted(times):  # C-speed check; timsort is linear on sorted input
            return self
        order = sorted(range(len(times)), key=times.__getitem__)
        return Batch(
            [times[i] for i in order],
            {k: col_take(col, order) for k, col in self.columns.items()},
            self.fields,
        )

    @property
    def cells(self) -> int:
        """Values in this batch (what retention counts): a dense column counts every row."""
        return sum(map(col_values, self.columns.values())) or len(self.times)


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """A position in a channel's log: ``(a, b)`` names (and orders) a chunk; ``count`` is the number
    of points of the log up to and including the last point delivered.

    A ``count`` below the chunk's own is a cut *inside* the chunk: its first points (in time order)
    were delivered, the others not (see :func:`rest_of`). Comparisons look at ``(a, b)`` only.
    """

    a: int
    b: int
    count: int = field(compare=False, default=0)

    def encode(self, epoch: str) -> str:
        return f"{epoch}:{self.a}-{self.b}:{self.count}"


ORIGIN = Pos(0, 0, 0)
"""Before every chunk of a log."""

NO_EPOCH = "0"
"""The epoch of a position taken before its channel existed: everything the channel gets is new."""


class PositionError(ValueError):
    """A ``since`` position that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Position:
    """A resume point: every point of the subscription up to it was delivered, none after it.

    A plain position is a cut in the channel's log (``pos``): resuming delivers every point after
    it. A position taken in the middle of a backfill also names that backfill: the history of
    ``[start_ms, end_ms]`` up to ``head`` was delivered, in log order, up to ``pos``; resuming
    delivers the rest of that history, then every point after ``head``.
    """

    epoch: str
    pos: Pos
    head: Pos | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def encode(self) -> str:
        text = self.pos.encode(self.epoch)
        if self.head is None:
            return text
        start = "" if self.start_ms is None else str(self.start_ms)
        end = "" if self.end_ms is None else str(self.end_ms)
        return f"{text}~{self.head.a}-{self.head.b}:{self.head.count}~{start}~{end}"


_POS = re.compile(r"([0-9]{1,19})-([0-9]{1,19}):([0-9]{1,19})")
"""``a-b:count``: ASCII digits only, at most 19 of them (below 2**64, as Redis stream IDs are)."""
_TIME = re.compile(r"-?[0-9]{1,19}")


def _pos(text: str) -> Pos:
    m = _POS.fullmatch(text)
    if m is None:
        raise ValueError(text)
    a, b, count = m.groups()
    return Pos(int(a), int(b), int(count))


def _time(text: str) -> int | None:
    if not text:
        return None
    if _TIME.fullmatch(text) is None:
        raise ValueError(text)
    return int(text)


def parse_position(text: str) -> Position:
    """Parse ``epoch:a-b:count``, or the backfill form ``epoch:a-b:count~ha-hb:hcount~start~end``.

    Raises:
        PositionError: not a position this server hands out.
    """
    try:
        parts = text.split("~")
        epoch, _, rest = parts[0].partition(":")
        pos = _pos(rest)
        head = start = end = None
        if len(parts) == 4:
            head = _pos(parts[1])
            start = _time(parts[2])
            end = _time(parts[3])
        elif len(parts) != 1:
            raise ValueError(text)
    except ValueError:
        raise PositionError(f"invalid position {text[:80]!r}: send back a position this server sent") from None
    if not epoch or ":" in epoch or (head is not None and head < pos):
        raise PositionError(f"invalid position {text[:80]!r}: send back a position this server sent")
    return Position(epoch, pos, head, start, end)


@dataclass(slots=True)
class Chunk:
    """A stored batch: sorted times, columns by field key, and where it sits in the log."""

    pos: Pos
    times: list[int]
    columns: dict[str, Column]
    hwm: int | None
    """The channel's newest point time before this chunk: earlier points here are late."""
    nbytes: int = 0
    """Its estimated size in memory (:func:`livedata.core.sizes.chunk_bytes`), set by the broker."""
    tail: int = 0
    """Points of the stored chunk after these (a time window cut them off)."""

    def __len__(self) -> int:
        return len(self.times)

    @property
    def cells(self) -> int:
        """Values in this chunk (what retention counts): a dense column counts every row."""
        return sum(map(col_values, self.columns.values())) or len(self.times)

    @property
    def count_before(self) -> int:
        """Points of the log before this chunk's first point."""
        return self.pos.count - self.tail - len(self.times)

    @property
    def end(self) -> Pos:
        """The position of this chunk's last point (inside the stored chunk when ``tail``)."""
        return Pos(self.pos.a, self.pos.b, self.pos.count - self.tail) if self.tail else self.pos

    def late_split(self) -> int:
        """Index of the first on-time point: ``times[:i]`` are late (older than ``hwm``)."""
        if self.hwm is None or not self.times or self.times[0] >= self.hwm:
            return 0
        return bisect.bisect_left(self.times, self.hwm)

    def slice(self, lo: int, hi: int) -> Chunk:
        """Rows ``lo`` to ``hi``; ``nbytes`` scaled by the rows kept (an estimate of an estimate)."""
        n = len(self.times)
        part = Chunk(self.pos, self.times[lo:hi], {k: col_slice(c, lo, hi) for k, c in self.columns.items()},
                     self.hwm, tail=self.tail + n - hi)
        part.nbytes = self.nbytes * len(part.times) // n if n else 0
        return part


def rest_of(chunk: Chunk, after: Pos) -> Chunk | None:
    """The points of ``chunk`` after the position ``after``: all of them, its end, or None.

    A cut inside the chunk delivered its first points in time order, so the end's ``hwm`` (the
    newest time before it, what its points are late against) is at least the last of those."""
    if chunk.pos > after:
        return chunk
    if chunk.pos < after:
        return None
    lo = max(0, after.count - chunk.count_before)
    if lo >= len(chunk.times):
        return None
    if lo == 0:
        return chunk
    rest = chunk.slice(lo, len(chunk.times))
    held = chunk.times[lo - 1]
    if rest.hwm is None or held > rest.hwm:
        rest.hwm = held
    return rest


def window(chunk: Chunk, start_ms: int | None, end_ms: int | None) -> Chunk | None:
    """The points of ``chunk`` with ``start_ms <= time <= end_ms`` (None: unbounded), or None."""
    times = chunk.times
    if not times:
        return None
    lo = 0 if start_ms is None or times[0] >= start_ms else bisect.bisect_left(times, start_ms)
    hi = len(times) if end_ms is None or times[-1] <= end_ms else bisect.bisect_right(times, end_ms)
    if lo == 0 and hi == len(times):
        return chunk
    return chunk.slice(lo, hi) if lo < hi else None


# --- packets -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Rows:
    """Rows gathered for one packet: times and columns by key (missing fields filled with None)."""

    times: list[int] = field(default_factory=list)
    columns: dict[str, list[Value]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)

    def extend(self, times: Sequence[int], columns: Mapping[str, Column]) -> None:
        n0, n = len(self.times), len(times)
        if n == 0:
            return
        self.times.extend(times)
        for key, col in columns.items():
            mine = self.columns.get(key)
            if mine is None:
                mine = self.columns[key] = [None] * n0
            if isinstance(col, Sparse):
                base = len(mine)
                mine.extend([None] * n)
                for r, v in zip(col.rows, col.values, strict=True):
                    mine[base + r] = v
            else:
                mine.extend(col)
        for mine in self.columns.values():
            if len(mine) < n0 + n:
                mine.extend([None] * (n0 + n - len(mine)))

    def sort(self) -> None:
        times = self.times
        if all(a <= b for a, b in itertools.pairwise(times)):
            return
        order = sorted(range(len(times)), key=times.__getitem__)
        self.times = [times[i] for i in order]
        self.columns = {k: [c[i] for i in order] for k, c in self.columns.items()}


FRAME_META: dict[str, Any] = {"type": "timeseries-wide", "typeVersion": [0, 1]}
"""The data plane type every frame declares (Grafana's ``meta.type``/``meta.typeVersion``)."""


def finite_numbers(col: Sequence[Value]) -> bool:
    """True when ``col`` holds only numbers, none of them NaN or infinite (so no None, no string):
    known at C speed from their sum, which stops at the first value that is not a number. A Python
    loop over the values is about 4x slower; ``count(None)`` compares every float with None."""
    try:
        return math.isfinite(sum(col))  # type: ignore[arg-type]
    except (TypeError, OverflowError):  # None or strings among them; an integer too large for a float
        return False


def _clean(col: Sequence[Value]) -> Sequence[Value]:
    # JSON has no NaN/Infinity: such a value is no value (a missing cell, as below).
    if finite_numbers(col):
        return col
    for v in col:
        if isinstance(v, float) and not math.isfinite(v):
            return [None if isinstance(x, float) and not math.isfinite(x) else x for x in col]
    return col


def frame_json(fields: Sequence[FieldDef] | None, keys: Sequence[str], rows: Rows) -> dict[str, Any]:
    """A ``DataFrameJSON`` dict: ``schema`` when ``fields`` is given, ``data.values`` column-major.

    A cell a row did not carry is ``None`` here; ``data_body`` marks it for Grafana.
    """
    n = len(rows.times)
    values: list[Sequence[Value]] = [rows.times]
    for key in keys:
        col = rows.columns.get(key)
        values.append(_clean(col) if col is not None else [None] * n)
    if fields is None:
        return {"data": {"values": values}}
    schema = {"meta": FRAME_META, "fields": [{"name": "time", "type": "time"}, *(f.to_json() for f in fields)]}
    return {"schema": schema, "data": {"values": values}}


def mark_missing(frame: dict[str, Any]) -> dict[str, Any] | None:
    """``frame`` with its missing cells listed in ``data.entities`` (``Undef``); None if it has none.

    A missing cell stays ``null`` in ``values`` (what a client that ignores ``entities`` reads) and
    its row is listed in that column's ``data.entities[i].Undef``, Grafana's encoding of
    ``undefined``: ``StreamingDataFrame`` decodes it, and a time series panel draws a line through
    ``undefined`` where a ``null`` would break the line. One entry per column, ``None`` for a column
    with nothing missing (protocol.md, "Missing cells").
    """
    data = frame.get("data")
    if not isinstance(data, dict):
        return None
    values = data.get("values")
    if not values:
        return None
    entities: list[dict[str, list[int]] | None] = [None] * len(values)
    found = False
    for c in range(1, len(values)):
        col = values[c]
        if None in col:
            entities[c] = {"Undef": [i for i, v in enumerate(col) if v is None]}
            found = True
    if not found:
        return None
    return {**frame, "data": {**data, "entities": entities}}


_ENTITY_VALUES: dict[str, Value] = {"Undef": None, "NaN": math.nan, "Inf": math.inf, "NegInf": -math.inf}


def decode_entities(values: list[list[Value]], entities: Any) -> list[list[Value]]:
    """``data.values`` with DataFrameJSON ``entities`` applied (a client's side of ``frame_json``).

    ``Undef`` cells become ``None`` (a missing cell, as Python has no ``undefined``); ``NaN``,
    ``Inf`` and ``NegInf`` the floats. Rows out of range and entries that are not lists are
    ignored; a column is copied only when it changes.
    """
    if not isinstance(entities, list):
        return values
    out = list(values)
    for c, ents in enumerate(entities):
        if not isinstance(ents, dict) or c >= len(out) or not isinstance(out[c], list):
            continue
        col: list[Value] | None = None
        for kind, value in _ENTITY_VALUES.items():
            rows = ents.get(kind)
            if not isinstance(rows, list):
                continue
            for r in rows:
                if isinstance(r, int) and 0 <= r < len(out[c]):
                    if col is None:
                        col = out[c] = list(out[c])
                    col[r] = value
    return out


def data_body(frame: dict[str, Any], position: str | None, late: bool = False, bucket_ms: int = 0) -> bytes:
    """The shared tail of a ``data`` message, from the comma after ``id`` to the closing brace.

    A subscriber's message is its own ``{"type":"data","id":...`` prefix followed by these bytes,
    so one encoding serves every subscriber of a feed. ``bucket_ms`` marks a message of an
    aggregated subscription (its rows are buckets of that width, see ``core/rollup.py``).
    """
    encoded = _encode(frame)
    # A missing cell encodes as `null` (and nothing else does but a string holding the word): a
    # packet without one, every packet of a dense channel, costs one byte search here.
    if b"null" in encoded:
        marked = mark_missing(frame)
        if marked is not None:
            encoded = _encode(marked)
    head = b""
    if bucket_ms:
        head += b',"bucket_ms":' + _encode(bucket_ms)
    if position is not None:
        head += b',"position":' + _encode(position)
    if late:
        head += b',"late":true'
    return head + b',"frame":' + encoded + b"}"


def data_prefix(sub_id: str) -> bytes:
    return b'{"type":"data","id":' + _encode(sub_id)


def message(obj: Mapping[str, Any]) -> bytes:
    """Encode any other server message (compact JSON, no newline)."""
    return _encode(obj)
