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
    ``usage {host="a"}``) to its column, aligned with ``times`` (``None`` where missing).
    A ``late`` frame holds points older than ones already delivered (``newest_before``, the newest
    time delivered before it; :meth:`is_late` says which rows): insert its rows in time order.
    Other frames start at or after every point delivered before them.
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
    newest_before: int | None = None
    """The newest time this subscription delivered before this frame (None: nothing yet)."""

    def is_late(self, i: int) -> bool:
        """Whether row ``i`` is older than a point delivered before this frame."""
        return self.late and self.newest_before is not None and self.times[i] < self.newest_before

    def __len__(self) -> int:
        return len(self.times)

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
