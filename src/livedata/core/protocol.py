"""Protocol messages, typed and validated. Pure: the caller passes ``now`` in.

Client messages are decoded in two steps so every error can name the subscription it concerns:
JSON to a dict first, then the dict to a typed message. See docs/protocol.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from livedata.core.frames import Batch, FieldDef, PositionError, SchemaError, Value, parse_position, value_type
from livedata.core.lineprotocol import Table
from livedata.core.sources import GeneratedChannel, ParamError, resolve_generated

CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-./=]{1,160}")
_RELATIVE = re.compile(r"now(?:([+-])(\d+)(ms|s|m|h|d|w))?")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_INTERVAL_MS = 60_000


class ProtocolError(ValueError):
    """A client message that cannot be served. ``id`` names the subscription when known."""

    def __init__(self, message: str, id: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.id = id
        self.line = line


def check_channel(name: Any) -> str:
    """Return ``name`` if it is a valid channel name, else raise ProtocolError."""
    if not isinstance(name, str) or not CHANNEL_RE.fullmatch(name):
        shown = name[:60] if isinstance(name, str) else type(name).__name__
        raise ProtocolError(
            f"invalid channel name {shown!r}: use 1 to 160 of A-Z a-z 0-9 _ - . / ="
        )
    return name


def parse_time(value: Any, now_ms: int, what: str = "time") -> int:
    """Epoch ms from epoch ms, ``now``/``now-5m``-style relative time, or an RFC 3339 string.

    Raises:
        ProtocolError: anything else.
    """
    if isinstance(value, bool):
        raise ProtocolError(f"{what} must be epoch ms or a time like now-5m, got {value!r}")
    if isinstance(value, int | float):
        if value != value or abs(value) > 1e15:
            raise ProtocolError(f"{what} out of range: {value!r}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        m = _RELATIVE.fullmatch(text)
        if m:
            if m.group(1) is None:
                return now_ms
            delta = int(m.group(2)) * _UNITS[m.group(3)]
            return now_ms - delta if m.group(1) == "-" else now_ms + delta
        if text.lstrip("-").isdigit():
            return parse_time(int(text), now_ms, what)
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if dt.tzinfo is not None:
                return int(dt.timestamp() * 1000)
    raise ProtocolError(
        f"{what} must be epoch ms, an RFC 3339 time, or relative like now-5m (units ms s m h d w); "
        f"got {str(value)[:60]!r}"
    )


# --- subscribe ---------------------------------------------------------------------------------


class _Subscribe(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    id: str
    channel: str
    params: dict[str, Any] | None = None
    from_: int | float | str | None = msgspec.field(default=None, name="from")
    to: int | float | str | None = None
    since: str | None = None
    fields: list[str] | None = None
    interval: int | float = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A validated subscription request."""

    id: str
    channel: str
    """The canonical channel name (a generated channel's name includes its params)."""
    generated: GeneratedChannel | None
    from_ms: int | None
    to_ms: int | None
    since: str | None
    fields: tuple[str, ...] | None
    interval_ms: int

    @property
    def live(self) -> bool:
        return self.to_ms is None


def parse_subscribe(obj: Mapping[str, Any], now_ms: int) -> Subscribe:
    """Validate a ``subscribe`` message (already a dict).

    Raises:
        ProtocolError: with ``id`` set whenever the message had a usable id.
    """
    raw_id = obj.get("id")
    sid = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 64 else None
    if sid is None:
        raise ProtocolError("subscribe needs an id: a string of 1 to 64 characters")
    try:
        msg = msgspec.convert(obj, _Subscribe)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid subscribe: {exc}", sid) from None
    try:
        channel = check_channel(msg.channel)
        generated = resolve_generated(channel, msg.params)
        from_ms = None if msg.from_ is None else parse_time(msg.from_, now_ms, "from")
        to_ms = None if msg.to is None else parse_time(msg.to, now_ms, "to")
        if from_ms is not None and to_ms is not None and from_ms > to_ms:
            raise ProtocolError(f"from ({from_ms}) is after to ({to_ms})")
        if msg.since is not None:
            parse_position(msg.since)
        interval = msg.interval
        if not 0 <= interval <= MAX_INTERVAL_MS:
            raise ProtocolError(f"interval must be 0..{MAX_INTERVAL_MS} ms, got {interval}")
        if msg.fields is not None and (not msg.fields or not all(f for f in msg.fields)):
            raise ProtocolError("fields must be a non-empty list of field names")
    except (ProtocolError, ParamError, PositionError) as exc:
        raise ProtocolError(str(exc), sid) from None
    return Subscribe(
        id=sid,
        channel=generated.name if generated else channel,
        generated=generated,
        from_ms=from_ms,
        to_ms=to_ms,
        since=msg.since,
        fields=tuple(msg.fields) if msg.fields is not None else None,
        interval_ms=int(interval),
    )


def decode_client(data: str | bytes) -> dict[str, Any]:
    """Decode one client frame into a dict with a string ``type``.

    Raises:
        ProtocolError: not JSON, not an object, or no type.
    """
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError("a message needs a string 'type'")
    return obj


# --- points (HTTP push and WebSocket publish) --------------------------------------------------


def _point_time(value: Any, now_ms: int, index: int) -> int:
    if value is None:
        return now_ms
    try:
        return parse_time(value, now_ms, "time")
    except ProtocolError as exc:
        raise ProtocolError(f"point {index + 1}: {exc}", line=index + 1) from None


INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
"""Integers a point may carry: what fits in 64 bits, signed or unsigned (as in line protocol)."""


def _out_of_range(key: str, index: int) -> ProtocolError:
    return ProtocolError(f"point {index + 1}: field {key!r} is out of range: integers must fit in 64 bits "
                         f"({INT_MIN} to {INT_MAX}); send larger numbers as floats", line=index + 1)


def _check_value(key: str, value: Any, index: int) -> Value:
    if value is None or isinstance(value, bool | int | float | str):
        if type(value) is int and not INT_MIN <= value <= INT_MAX:
            raise _out_of_range(key, index)
        return value
    raise ProtocolError(
        f"point {index + 1}: field {key!r} must be a number, string, boolean or null, "
        f"got {type(value).__name__}",
        line=index + 1,
    )


def _check_key(key: Any, index: int) -> str:
    if not isinstance(key, str) or not key or len(key) > 160:
        raise ProtocolError(f"point {index + 1}: field names must be 1 to 160 characters", line=index + 1)
    return key


def points_to_batch(body: Any, now_ms: int, max_points: int) -> Batch:
    """Turn pushed JSON (one point, a list of points, or columnar) into a Batch.

    All-or-nothing: the first problem raises ProtocolError with ``line`` = the point's number.
    """
    if isinstance(body, dict) and body and all(isinstance(v, list) for v in body.values()):
        return _columnar(body, now_ms, max_points)
    points = [body] if isinstance(body, dict) else body
    if not isinstance(points, list):
        raise ProtocolError("expected a point object, a list of points, or columns {\"time\":[...], ...}")
    if len(points) > max_points:
        raise ProtocolError(f"too many points in one request: {len(points)} > {max_points}")
    if not points:
        raise ProtocolError("no points in the body")
    times: list[int] = []
    columns: dict[str, list[Value]] = {}
    types: dict[str, str] = {}
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            raise ProtocolError(f"point {i + 1}: must be an object like {{\"time\": ..., \"temp\": 21.5}}",
                                line=i + 1)
        times.append(_point_time(point.get("time"), now_ms, i))
        if len(point) - ("time" in point) == 0:
            raise ProtocolError(f"point {i + 1}: has no fields", line=i + 1)
        for key, value in point.items():
            if key == "time":
                continue
            _check_key(key, i)
            v = _check_value(key, value, i)
            col = columns.get(key)
            if col is None:
                col = columns[key] = [None] * i
            col.append(v)
            _same_type(types, key, v, i)
        for col in columns.values():
            if len(col) <= i:
                col.append(None)
    return _batch(times, columns, types)


def _same_type(types: dict[str, str], key: str, v: Value, i: int) -> None:
    t = value_type(v)
    if t is None:
        return
    have = types.setdefault(key, t)
    if have != t:
        raise ProtocolError(f"point {i + 1}: field {key!r} is a {t} here but a {have} before", line=i + 1)


def _columnar(body: dict[str, Any], now_ms: int, max_points: int) -> Batch:
    lengths = {len(v) for v in body.values()}
    if len(lengths) != 1:
        raise ProtocolError("columnar push: every column must have the same length")
    n = lengths.pop()
    if n > max_points:
        raise ProtocolError(f"too many points in one request: {n} > {max_points}")
    raw_times = body.get("time")
    if raw_times is None:
        times = [now_ms] * n
    elif all(type(t) is int for t in raw_times):
        times = raw_times
        for i, t in enumerate(times):
            if abs(t) > 1e15:
                raise ProtocolError(f"point {i + 1}: time out of range", line=i + 1)
    else:
        times = [_point_time(t, now_ms, i) for i, t in enumerate(raw_times)]
    columns: dict[str, list[Value]] = {}
    types: dict[str, str] = {}
    for key, col in body.items():
        if key == "time":
            continue
        _check_key(key, 0)
        kinds = {type(v) for v in col}
        if kinds <= {float, int}:
            if int in kinds and not (min(v for v in col if type(v) is int) >= INT_MIN
                                     and max(v for v in col if type(v) is int) <= INT_MAX):
                raise _out_of_range(key, next(i for i, v in enumerate(col)
                                              if type(v) is int and not INT_MIN <= v <= INT_MAX))
            if col:
                types[key] = "number"
            columns[key] = col
            continue
        for i, v in enumerate(col):
            _check_value(key, v, i)
            _same_type(types, key, v, i)
        columns[key] = col
    if not columns:
        raise ProtocolError("columnar push: no field columns besides time")
    return _batch(times, columns, types)


def _batch(times: list[int], columns: dict[str, list[Value]], types: Mapping[str, str]) -> Batch:
    fields: dict[str, FieldDef] = {}
    for key in columns:
        t = types.get(key)
        if t is None:
            continue  # only nulls so far: the field gets its type from its first value
        fields[key] = FieldDef(key, key, t)  # type: ignore[arg-type]
    columns = {k: c for k, c in columns.items() if k in fields}
    if not columns:
        raise ProtocolError("no field has a value (all null)")
    return Batch(times, columns, fields)


def tables_to_batches(tables: Sequence[Table], base: str, now_ms: int) -> dict[str, Batch]:
    """One Batch per parsed line-protocol measurement, on channel ``base/measurement``.

    Tags become field labels; a field's key is ``name {tag="v",...}``. Lines without a
    timestamp get ``now_ms``.

    Raises:
        ProtocolError: with ``line`` set, for a measurement that makes an invalid channel name,
            or a field key that a labelled and an unlabelled field would share.
    """
    out: dict[str, Batch] = {}
    for table in tables:
        if not table.times:
            continue
        channel = f"{base}/{table.measurement}"
        if not CHANNEL_RE.fullmatch(channel):
            raise ProtocolError(
                f"line {table.first_line}: measurement {table.measurement!r} makes an invalid channel "
                f"name {channel[:60]!r}",
                line=table.first_line,
            )
        times = table.times
        if table.untimed:
            times = [now_ms if t is None else t for t in times]
        height = len(times)
        columns: dict[str, list[Value]] = {}
        fields: dict[str, FieldDef] = {}
        for col in table.columns.values():
            fd = FieldDef.of(col.key, col.kind, dict(col.tags) if col.tags else None)  # type: ignore[arg-type]
            if fd.key in fields:
                raise ProtocolError(
                    f"line {table.first_line}: field {fd.key!r} of {channel!r} is written both as a "
                    "field with tags and as a field name that spells them; rename one",
                    line=table.first_line,
                )
            fields[fd.key] = fd
            columns[fd.key] = col.dense(height)
        out[channel] = Batch(times, columns, fields)  # type: ignore[arg-type]
    return out


__all__ = [
    "CHANNEL_RE",
    "ProtocolError",
    "SchemaError",
    "Subscribe",
    "check_channel",
    "decode_client",
    "parse_subscribe",
    "parse_time",
    "points_to_batch",
    "tables_to_batches",
]
