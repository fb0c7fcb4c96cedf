"""Protocol messages, typed and validated. Pure: the caller passes ``now`` in.

Client messages are decoded in two steps so every error can name the subscription it concerns:
JSON to a dict first, then the dict to a typed message. See docs/protocol.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from livedata.core import jsonerror
from livedata.core.frames import (
    Batch,
    Column,
    FieldDef,
    PositionError,
    SchemaError,
    Value,
    column,
    compact,
    parse_position,
    value_type,
)
from livedata.core.lineprotocol import Table
from livedata.core.names import InvalidName, check_name, child_channel
from livedata.core.names import check_channel as _check_channel
from livedata.core.rollup import MAX_POINTS, choose_width
from livedata.core.sources import GeneratedChannel, ParamError, resolve_generated
from livedata.core.text import shown

_RELATIVE = re.compile(r"now(?:([+-])([0-9]{1,15})(ms|s|m|h|d|w))?")
_INTEGER = re.compile(r"-?[0-9]{1,16}")
"""Epoch ms as text: ASCII digits only (``str.isdigit`` and ``int`` also take other scripts' digits)."""
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_INTERVAL_MS = 60_000
MAX_FILTER_FIELDS = 1000
"""Names in a subscription's ``fields`` filter (a channel has at most ``--max-fields-per-channel``)."""
MAX_FILTER_NAME = 512
"""Characters of one name in a ``fields`` filter (a labelled field's key spells its labels)."""
MAX_RESOLUTION_MS = 366 * 86_400_000


class ProtocolError(ValueError):
    """A client message that cannot be served. ``id`` names the subscription when known."""

    def __init__(self, message: str, id: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.id = id
        self.line = line


class FrameError(ProtocolError):
    """A WebSocket frame that is not a JSON object (malformed, another JSON value, or nested too
    deeply to decode): the socket is closed with 1008 (docs/protocol.md, close codes)."""


def check_channel(name: Any) -> str:
    """Return ``name`` if it is a valid channel name (see :mod:`livedata.core.names`), else
    raise ProtocolError saying why."""
    try:
        return _check_channel(name)
    except InvalidName as exc:
        raise ProtocolError(str(exc)) from None


def parse_time(value: Any, now_ms: int, what: str = "time") -> int:
    """Epoch ms from epoch ms, ``now``/``now-5m``-style relative time, or an RFC 3339 string.

    Raises:
        ProtocolError: anything else.
    """
    if isinstance(value, bool):
        raise ProtocolError(f"{what} must be epoch ms or a time like now-5m, got {value!r}")
    if isinstance(value, int | float):
        if value != value or abs(value) > 1e15:
            raise ProtocolError(f"{what} out of range: {shown(value)}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        m = _RELATIVE.fullmatch(text)
        if m:
            if m.group(1) is None:
                return now_ms
            delta = int(m.group(2)) * _UNITS[m.group(3)]
            return parse_time(now_ms - delta if m.group(1) == "-" else now_ms + delta, now_ms, what)
        if _INTEGER.fullmatch(text):
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
        f"got {shown(value)}"
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
    max_points: int | None = None
    resolution_ms: int | float | None = None


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
    bucket_ms: int = 0
    """0: raw points. Else an aggregated subscription: buckets of this width (``core/rollup.py``)."""
    max_points: int | None = None
    resolution_ms: int | None = None

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
            shown = str(int(interval)) if float(interval).is_integer() else repr(interval)
            raise ProtocolError(f"interval must be 0 to {MAX_INTERVAL_MS} ms (at most one message a minute; "
                                f"0: as points come), got {shown}")
        if msg.fields is not None and (not msg.fields or not all(f for f in msg.fields)):
            raise ProtocolError("fields must be a non-empty list of field names")
        if msg.fields is not None and len(msg.fields) > MAX_FILTER_FIELDS:
            raise ProtocolError(f"fields lists {len(msg.fields)} names: at most {MAX_FILTER_FIELDS} "
                                "(leave it out to get every field)")
        if msg.fields is not None and max(map(len, msg.fields)) > MAX_FILTER_NAME:
            raise ProtocolError(f"a name in fields is longer than {MAX_FILTER_NAME} characters")
        bucket_ms, resolution = _resolution(msg, from_ms, to_ms, now_ms)
    except (ProtocolError, ParamError, PositionError) as exc:
        raise ProtocolError(str(exc), sid) from None
    return Subscribe(
        id=sid,
        channel=generated.name if generated else channel,
        generated=generated,
        from_ms=from_ms,
        to_ms=to_ms,
        since=msg.since,
        fields=tuple(dict.fromkeys(msg.fields)) if msg.fields is not None else None,
        interval_ms=int(interval),
        bucket_ms=bucket_ms,
        max_points=msg.max_points,
        resolution_ms=resolution,
    )


TOO_DEEP = "JSON nested too deeply: livedata's messages and points are at most a few levels deep"


def _resolution(msg: _Subscribe, from_ms: int | None, to_ms: int | None, now_ms: int) -> tuple[int, int | None]:
    """The bucket width of an aggregated subscription (0: raw), and ``resolution_ms`` as an int."""
    mp, res = msg.max_points, msg.resolution_ms
    if mp is None and res is None:
        return 0, None
    if mp is not None and not 1 <= mp <= MAX_POINTS:
        raise ProtocolError(f"max_points must be 1..{MAX_POINTS}, got {mp}")
    if res is not None and not 1 <= res <= MAX_RESOLUTION_MS:
        raise ProtocolError(f"resolution_ms must be 1..{MAX_RESOLUTION_MS} (a year), got {res}")
    if res is None and from_ms is None:
        raise ProtocolError("max_points needs from (the range the points spread over), or give resolution_ms")
    span = None if from_ms is None else max(0, (to_ms if to_ms is not None else now_ms) - from_ms)
    resolution = None if res is None else math.ceil(res)
    return choose_width(span, mp, resolution), resolution


def decode_client(data: str | bytes) -> dict[str, Any]:
    """Decode one client frame into a dict with a string ``type``.

    Raises:
        FrameError: not JSON, not an object, or nested too deeply to decode.
        ProtocolError: an object without a string ``type``.
    """
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise FrameError(jsonerror.describe(exc, data)[0]) from None
    except RecursionError:
        raise FrameError(TOO_DEEP) from None
    if not isinstance(obj, dict):
        raise FrameError("a message must be a JSON object")
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
    try:
        return check_name(key)
    except InvalidName as exc:
        raise ProtocolError(f"point {index + 1}: {exc}", line=index + 1) from None


def points_to_batch(body: Any, now_ms: int, max_points: int) -> Batch:
    """Turn pushed JSON (one point, a list of points, or columnar) into a Batch.

    All-or-nothing: the first problem raises ProtocolError with ``line`` = the point's number.
    """
    builder = PointsBuilder(body, now_ms, max_points)
    builder.feed(len(builder))
    return builder.finish()


class PointsBuilder:
    """Pushed JSON to a Batch, a slice of points at a time (a caller on an event loop yields
    between slices). Linear in the values pushed: each field collects its rows and values, and a
    field that few points carry is stored :class:`~livedata.core.frames.Sparse` (8,000 points with
    8,000 distinct keys cost 8,000 values, not 64 million cells).
    """

    def __init__(self, body: Any, now_ms: int, max_points: int) -> None:
        self.now_ms = now_ms
        self.columnar: dict[str, Any] | None = None
        self.points: list[Any] = []
        self.done = 0
        self.times: list[int] = []
        self.rows: dict[str, list[int]] = {}
        self.values: dict[str, list[Value]] = {}
        self.types: dict[str, str] = {}
        self.batch: Batch | None = None
        if isinstance(body, dict) and body and all(isinstance(v, list) for v in body.values()):
            lengths = {len(v) for v in body.values()}
            if len(lengths) != 1:
                raise ProtocolError("columnar push: every column must have the same length")
            if lengths.pop() > max_points:
                raise ProtocolError(f"too many points in one request: {len(next(iter(body.values())))} > {max_points}")
            self.columnar = body
            return
        points = [body] if isinstance(body, dict) else body
        if not isinstance(points, list):
            raise ProtocolError("expected a point object, a list of points, or columns {\"time\":[...], ...}")
        if len(points) > max_points:
            raise ProtocolError(f"too many points in one request: {len(points)} > {max_points}")
        if not points:
            raise ProtocolError("no points in the body")
        self.points = points

    def __len__(self) -> int:
        """Points in the body."""
        return len(self.points) if self.columnar is None else 1

    def feed(self, count: int) -> None:
        """Convert the next ``count`` points (a columnar body goes in one step: it is C-speed)."""
        if self.columnar is not None:
            return
        points, now_ms = self.points, self.now_ms
        times, rows, values, types = self.times, self.rows, self.values, self.types
        start = self.done
        end = min(len(points), start + count)
        for i in range(start, end):
            point = points[i]
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
                if v is None:
                    continue
                r = rows.get(key)
                if r is None:
                    r = rows[key] = []
                    values[key] = []
                r.append(i)
                values[key].append(v)
                _same_type(types, key, v, i)
        self.done = end

    def finish(self) -> Batch:
        for _ in self.finishing():
            pass
        assert self.batch is not None
        return self.batch

    def finishing(self) -> Iterator[None]:
        """Build the batch (``self.batch``), yielding after every :data:`COLUMNS_PER_STEP` fields."""
        if self.columnar is not None:
            self.batch = _columnar(self.columnar, self.now_ms)
            return
        n = len(self.points)
        cols: dict[str, Column] = {}
        values = self.values
        for i, (k, r) in enumerate(self.rows.items(), 1):
            cols[k] = column(n, r, values[k])
            if not i % COLUMNS_PER_STEP:
                yield
        self.batch = _batch(self.times, cols, self.types)


def _same_type(types: dict[str, str], key: str, v: Value, i: int) -> None:
    t = value_type(v)
    if t is None:
        return
    have = types.setdefault(key, t)
    if have != t:
        raise ProtocolError(f"point {i + 1}: field {key!r} is a {t} here but a {have} before", line=i + 1)


def _columnar(body: dict[str, Any], now_ms: int) -> Batch:
    n = len(next(iter(body.values())))
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
    columns: dict[str, Column] = {}
    types: dict[str, str] = {}
    for key, col in body.items():
        if key == "time":
            continue
        _check_key(key, 0)
        kinds = set(map(type, col))
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
        columns[key] = compact(col)
    if not columns:
        raise ProtocolError("columnar push: no field columns besides time")
    return _batch(times, columns, types)


def _batch(times: list[int], columns: dict[str, Column], types: Mapping[str, str]) -> Batch:
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


COLUMNS_PER_STEP = 500
"""Columns :func:`tables_to_batches_steps` converts between two yields (a few ms of work)."""


def tables_to_batches(tables: Sequence[Table], base: str, now_ms: int) -> dict[str, Batch]:
    """One Batch per parsed line-protocol measurement (see :func:`tables_to_batches_steps`)."""
    out: dict[str, Batch] = {}
    for _ in tables_to_batches_steps(tables, base, now_ms, out):
        pass
    return out


def tables_to_batches_steps(tables: Sequence[Table], base: str, now_ms: int,
                            out: dict[str, Batch]) -> Iterator[None]:
    """One Batch per parsed line-protocol measurement, on channel ``base/measurement``, into ``out``;
    yields after every :data:`COLUMNS_PER_STEP` columns, so a caller on an event loop can let it run.

    Tags become field labels; a field's key is ``name {tag="v",...}``. Lines without a
    timestamp get ``now_ms``.

    Raises:
        ProtocolError: with ``line`` set, for a measurement that makes an invalid channel name,
            or a field key that a labelled and an unlabelled field would share.
    """
    done = 0
    for table in tables:
        if not table.times:
            continue
        try:
            channel = child_channel(base, table.measurement)
        except InvalidName as exc:
            raise ProtocolError(f"line {table.first_line}: {exc}", line=table.first_line) from None
        times = table.times
        if table.untimed:
            times = [now_ms if t is None else t for t in times]
        height = len(times)
        columns: dict[str, Column] = {}
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
            columns[fd.key] = column(height, col.rows, col.values)  # type: ignore[arg-type]
            done += 1
            if not done % COLUMNS_PER_STEP:
                yield
        out[channel] = Batch(times, columns, fields)  # type: ignore[arg-type]


__all__ = [
    "TOO_DEEP",
    "FrameError",
    "PointsBuilder",
    "ProtocolError",
    "SchemaError",
    "Subscribe",
    "check_channel",
    "decode_client",
    "parse_subscribe",
    "parse_time",
    "points_to_batch",
    "tables_to_batches",
    "tables_to_batches_steps",
]
