"""The values a client hands you: frames, schema fields, notices, and the one error type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Value = float | int | str | bool | None



class LivedataError(Exception):
    """The server refused something (``status``, maybe ``line``/``field``), or is unreachable."""

    def __init__(self, message: str, *, status: int | None = None, line: int | None = None,
                 field: str | None = None, channel: str | None = None, id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.line = line
        self.field = field
        self.channel = channel
        self.id = id


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a channel's schema: its frame name, type and labels (line protocol tags)."""

    name: str
    type: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Frame:
    """One ``data`` message of a subscription, decoded.

    ``times`` are epoch ms; ``fields`` maps each schema field's name (e.g. ``temp`` or
    ``usage {host="a"}``) to its column, aligned with ``times``. A cell the row did not carry
    (``null`` on the wire, listed in ``entities.Undef``) is ``None``: no value at that time, not a
    gap; ``series()`` gives each field's points without them.
    A ``late`` frame holds points older than ones already delivered (``newest_before``, the newest
    time delivered before it; :meth:`is_late` says which rows): insert its rows in time order.
    Other frames start at or after every point delivered before them.

    ``bucket_ms`` > 0: an aggregated subscription (``max_points`` / ``resolution_ms``). Each bucket
    of that width is two rows (at its start and its middle: every field's min and max, in the order
    they happened), and **a row replaces the row you have at the same time** (a bucket is sent
    again whenever a point lands in it). :meth:`Subscription.buckets` keeps that table for you.
    """

    channel: str
    id: str
    position: str | None
    late: bool
    times: list[int]
    fields: dict[str, list[Value]]
    schema: list[Field]
    schema_changed: bool = False
    """True when this message carried a schema (the first one, or the channel gained a field)."""
    bucket_ms: int = 0
    newest_before: int | None = None
    """The newest time this subscription delivered before this frame (None: nothing yet)."""

    def is_late(self, i: int) -> bool:
        """Whether row ``i`` is older than a point delivered before this frame."""
        return self.late and self.newest_before is not None and self.times[i] < self.newest_before

    def __len__(self) -> int:
        return len(self.times)

    def series(self) -> dict[str, tuple[list[int], list[Value]]]:
        """Each field's own points, ``{name: (times, values)}``, cells it did not carry left out.

        This is Grafana's ``timeseries-multi`` view of the wide frame: one series per field, for
        labelled or sparse data (line protocol hosts, sensors whose fields arrive apart).
        """
        out: dict[str, tuple[list[int], list[Value]]] = {}
        for name, col in self.fields.items():
            if None not in col:
                out[name] = (list(self.times), list(col))
            else:
                keep = [i for i, v in enumerate(col) if v is not None]
                out[name] = ([self.times[i] for i in keep], [col[i] for i in keep])
        return out

    def points(self) -> list[dict[str, Value]]:
        """The rows as ``{"time": ms, field: value, ...}`` dicts (missing values left out)."""
        cols = list(self.fields.items())
        out: list[dict[str, Value]] = []
        for i, t in enumerate(self.times):
            row: dict[str, Value] = {"time": t}
            for name, col in cols:
                v = col[i]
                if v is not None:
                    row[name] = v
            out.append(row)
        return out


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the consumer should know, e.g. ``lost`` points after a server restart."""

    channel: str
    id: str
    level: str
    text: str
    lost: int | None = None


NoticeCallback = Callable[[Notice], None]
