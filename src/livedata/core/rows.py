"""Points gathered per channel before they are published, checked against the channel's schema. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from livedata.core.frames import Batch, Column, FieldDef, SchemaError, Value, column, dense, value_type

_TYPE: Final[dict[type, str]] = {float: "number", int: "number", str: "string", bool: "boolean"}


class ChannelRows:
    """Points waiting to be published on one channel, checked against the channel's schema.

    ``schema`` starts as the broker's schema of the channel and learns every field added here,
    so a point whose field has another type than the channel's is refused on its own
    (:class:`SchemaError`) instead of failing the whole batch later. :meth:`take` hands over
    the points gathered so far as one :class:`Batch` (in arrival order; the broker sorts).
    """

    __slots__ = ("keys", "points", "schema")

    def __init__(self, schema: Mapping[str, FieldDef] | None = None) -> None:
        self.schema: dict[str, FieldDef] = dict(schema or {})
        self.points: list[tuple[int, Mapping[str, Value]]] = []
        self.keys: dict[str, None] = {}
        """The fields of the points gathered, in order of first appearance."""

    def __len__(self) -> int:
        return len(self.points)

    def add(self, t: int, values: Mapping[str, Value], fields: Mapping[str, FieldDef] | None = None) -> None:
        """Add one point (``fields``: its field definitions when they carry labels).

        Raises:
            SchemaError: a value's type differs from its field's; nothing is added.
        """
        schema = self.schema
        keys = self.keys
        for key, value in values.items():
            if value is None:
                continue
            have = schema.get(key)
            typ = _TYPE.get(type(value)) or value_type(value)
            if have is None:
                continue
            if have.type != typ:
                raise SchemaError(f"field {key!r} is {have.type} on this channel; got a {typ}", field=key)
            if key not in keys:
                keys[key] = None
        for key, value in values.items():  # fields new to the channel: the first type stays
            if value is not None and key not in schema:
                typ = _TYPE.get(type(value)) or value_type(value)
                schema[key] = fields[key] if fields is not None and key in fields else FieldDef.of(key, typ)  # type: ignore[arg-type]
                keys[key] = None
        self.points.append((t, values))

    def add_batch(self, batch: Batch) -> int:
        """Add every row of ``batch`` that fits the schema; returns how many did not."""
        refused = 0
        keys = list(batch.columns)
        cols = [dense(batch.columns[k]) for k in keys]
        for i, t in enumerate(batch.times):
            try:
                self.add(t, {k: c[i] for k, c in zip(keys, cols, strict=True)}, batch.fields)
            except SchemaError:
                refused += 1
        return refused

    def take(self) -> Batch | None:
        """The gathered points as a Batch (None when there are none); starts afresh."""
        points = self.points
        if not points:
            return None
        schema = self.schema
        times = [t for t, _ in points]
        at: dict[str, list[int]] = {key: [] for key in self.keys}
        vals: dict[str, list[Value]] = {key: [] for key in self.keys}
        for i, (_, values) in enumerate(points):  # what each point carries: sparse rows stay sparse
            for key, value in values.items():
                if value is not None and key in at:
                    at[key].append(i)
                    vals[key].append(value)
        columns: dict[str, Column] = {key: column(len(points), at[key], vals[key]) for key in self.keys}
        self.points = []
        self.keys = {}
        return Batch(times, columns, {k: schema[k] for k in columns})


__all__ = ["ChannelRows"]
