"""Points, schemas, chunks and Grafana ``DataFrameJSON`` packets. Pure.

A *batch* is what a publisher hands in: columns of equal length, one of times (epoch ms) and one
per field. A *chunk* is a batch once the broker stored it: it has a position, its times are
sorted, and it remembers the channel's newest time before it (``hwm``), which decides which of
its points are late. Packets are encoded once with msgspec and shared as bytes.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

FieldType = Literal["number", "string", "boolean"]
Value = float | int | str | bool | None

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
        # Ingest calls this for every field of every line: FieldDefs are immutable, so share them.
        key = (name, type_, tuple(labels.items()) if labels else ())
        fd = _FIELD_DEFS.get(key)
        if fd is None:
            if len(_FIELD_DEFS) >= 65_536:
                _FIELD_DEFS.clear()
            fd = _FIELD_DEFS[key] = cls(field_key(name, labels), name, type_, tuple(sorted((labels or {}).items())))
        return fd


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
    columns: dict[str, list[Value]]
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
            {k: [col[i] for i in order] for k, col in self.columns.items()},
            self.fields,
        )


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


def _pos(text: str) -> Pos:
    ab, count = text.split(":")
    a, b = ab.split("-")
    pos = Pos(int(a), int(b), int(count))
    if pos.a < 0 or pos.b < 0 or pos.count < 0:
        raise ValueError(text)
    return pos


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
            start = int(parts[2]) if parts[2] else None
            end = int(parts[3]) if parts[3] else None
        elif len(parts) != 1:
            raise ValueError(text)
    except ValueError:
        raise PositionError(f"invalid position {text[:80]!r}") from None
    if not epoch or ":" in epoch or (head is not None and head < pos):
        raise PositionError(f"invalid position {text[:80]!r}")
    return Position(epoch, pos, head, start, end)


@dataclass(slots=True)
class Chunk:
    """A stored batch: sorted times, columns by field key, and where it sits in the log."""

    pos: Pos
    times: list[int]
    columns: dict[str, list[Value]]
    hwm: int | None
    """The channel's newest point time before this chunk: earlier points here are late."""
    tail: int = 0
    """Points of the stored chunk after these (a time window cut them off)."""

    def __len__(self) -> int:
        return len(self.times)

    @property
    def cells(self) -> int:
        """Values in this chunk (rows times fields): what retention counts."""
        return len(self.times) * max(1, len(self.columns))

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
        return Chunk(self.pos, self.times[lo:hi], {k: c[lo:hi] for k, c in self.columns.items()}, self.hwm,
                     self.tail + len(self.times) - hi)


def rest_of(chunk: Chunk, after: Pos) -> Chunk | None:
    """The points of ``chunk`` after the position ``after``: all of them, its end, or None."""
    if chunk.pos > after:
        return chunk
    if chunk.pos < after:
        return None
    lo = max(0, after.count - chunk.count_before)
    if lo >= len(chunk.times):
        return None
    return chunk if lo == 0 else chunk.slice(lo, len(chunk.times))


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

    def extend(self, times: Sequence[int], columns: Mapping[str, Sequence[Value]]) -> None:
        n0, n = len(self.times), len(times)
        if n == 0:
            return
        self.times.extend(times)
        for key, col in columns.items():
            mine = self.columns.get(key)
            if mine is None:
                mine = self.columns[key] = [None] * n0
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


def _clean(col: Sequence[Value]) -> Sequence[Value]:
    # JSON has no NaN/Infinity: Grafana reads null as a gap.
    for v in col:
        if isinstance(v, float) and not math.isfinite(v):
            return [None if isinstance(x, float) and not math.isfinite(x) else x for x in col]
    return col


def frame_json(fields: Sequence[FieldDef] | None, keys: Sequence[str], rows: Rows) -> dict[str, Any]:
    """A ``DataFrameJSON`` dict: ``schema`` when ``fields`` is given, ``data.values`` column-major."""
    n = len(rows.times)
    values: list[Sequence[Value]] = [rows.times]
    for key in keys:
        col = rows.columns.get(key)
        values.append(_clean(col) if col is not None else [None] * n)
    if fields is None:
        return {"data": {"values": values}}
    schema = {"fields": [{"name": "time", "type": "time"}, *(f.to_json() for f in fields)]}
    return {"schema": schema, "data": {"values": values}}


def data_body(frame: dict[str, Any], position: str | None, late: bool = False) -> bytes:
    """The shared tail of a ``data`` message, from the comma after ``id`` to the closing brace.

    A subscriber's message is its own ``{"type":"data","id":...`` prefix followed by these bytes,
    so one encoding serves every subscriber of a feed.
    """
    head = b""
    if position is not None:
        head += b',"position":' + _encode(position)
    if late:
        head += b',"late":true'
    return head + b',"frame":' + _encode(frame) + b"}"


def data_prefix(sub_id: str) -> bytes:
    return b'{"type":"data","id":' + _encode(sub_id)


def message(obj: Mapping[str, Any]) -> bytes:
    """Encode any other server message (compact JSON, no newline)."""
    return _encode(obj)
