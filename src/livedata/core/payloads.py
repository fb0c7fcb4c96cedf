"""Message payloads to points: JSON objects, bare numbers, text, line protocol. Pure.

What an MQTT message or a line of an upstream JSON stream carries becomes one or more points:

* a **JSON object**: every number, string and boolean is a field; nested objects (and arrays)
  are flattened with ``.`` (``{"a": {"b": 1}, "v": [2, 3]}`` gives ``a.b``, ``v.0``, ``v.1``);
  ``null`` is a missing value. A top-level ``time``/``timestamp``/``ts`` key (any case) is the
  point's time, else the arrival time. A JSON array of objects is one point per object.
* a **JSON path** (``$.data.readings``, ``$.sensors[0]``, ``$.items[*]``) picks the part of
  the document that holds the point(s); the time key is looked up there first, then at the root.
* a **bare number** (``21.5``) or JSON scalar is the field ``value``.
* **line protocol** (what Telegraf's MQTT output sends) is parsed as a push is: one batch per
  measurement, tags as labels.
* in ``auto`` format, any other one-line text of at most :data:`MAX_TEXT` characters (``ON``,
  ``online``) is the string field ``value``.

Times: epoch numbers in s, ms, us or ns, or an RFC 3339 / ISO 8601 string. With
``time_unit = "auto"`` the unit is told by magnitude (see :func:`epoch_ms`); a time string
without an offset is read in the configured timezone (UTC by default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Literal

import msgspec

from livedata.core import lineprotocol
from livedata.core.frames import Batch, Value
from livedata.core.protocol import ProtocolError, tables_to_batches

PayloadKind = Literal["auto", "json", "number", "text", "line-protocol"]
TimeUnit = Literal["auto", "s", "ms", "us", "ns"]

KINDS: Final[tuple[str, ...]] = ("auto", "json", "number", "text", "line-protocol")
TIME_UNITS: Final[tuple[str, ...]] = ("auto", "s", "ms", "us", "ns")
DEFAULT_TIME_KEYS: Final[tuple[str, ...]] = ("time", "timestamp", "ts")
MAX_TEXT: Final = 1024
"""Longest text payload taken as a string ``value`` in ``auto`` format."""
MAX_FIELDS: Final = 1000
"""Most fields one point may have after flattening (a guard against a schema blow-up)."""
MAX_DEPTH: Final = 32
MAX_KEY: Final = 160
MAX_INT: Final = 2**63
MAX_TIME_MS: Final = 10**15
VALUE: Final = "value"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_UNIT_MS: Final[dict[str, float]] = {"s": 1000.0, "ms": 1.0, "us": 0.001, "ns": 0.000001}
_decode = msgspec.json.Decoder().decode

Point = tuple[int, dict[str, Value]]
"""A point: its time (epoch ms) and its fields, flat."""


class PayloadError(ValueError):
    """A payload that gives no points: ``reason`` is a short metric label, the message a sentence."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- time --------------------------------------------------------------------------------------


def epoch_ms(value: float, unit: str = "auto") -> int:
    """Epoch milliseconds from an epoch number in ``unit`` (``auto``: told by magnitude).

    ``auto`` reads ``|value| < 1e11`` as seconds (up to the year 5138), ``< 1e14`` as
    milliseconds (from 1973 on), ``< 1e17`` as microseconds, else nanoseconds. So any time after
    March 1973 is read right in every unit; a millisecond time before that would be taken for
    seconds: name the unit (``time_unit``) for such data.

    Raises:
        PayloadError: not finite, or out of range.
    """
    if not math.isfinite(value):
        raise PayloadError(f"time {value!r} is not a number", "time")
    if unit == "auto":
        a = abs(value)
        unit = "s" if a < 1e11 else "ms" if a < 1e14 else "us" if a < 1e17 else "ns"
    if isinstance(value, int) and unit == "ns":
        ms = value // 1_000_000
    elif isinstance(value, int) and unit == "us":
        ms = value // 1000
    else:
        ms = math.floor(value * _UNIT_MS[unit])
    if abs(ms) > MAX_TIME_MS:
        raise PayloadError(f"time {value!r} is out of range", "time")
    return ms


def parse_time_value(value: Any, unit: str = "auto", tz: tzinfo = UTC) -> int:
    """Epoch ms from an epoch number (or a string of digits) or an RFC 3339 / ISO 8601 string.

    Raises:
        PayloadError: anything else.
    """
    if isinstance(value, bool):
        raise PayloadError(f"time must be an epoch number or an RFC 3339 string, got {value!r}", "time")
    if isinstance(value, int | float):
        return epoch_ms(value, unit)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            number = float(text) if any(c in text for c in ".eE") else int(text)
            return epoch_ms(number, unit)
        try:
            dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" and text else text)
        except ValueError:
            pass
        else:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
            return (dt - _EPOCH) // _MS  # exact: dt.timestamp() * 1000 can round a millisecond down
    shown = repr(value)[:60]
    raise PayloadError(f"time {shown} is neither an epoch number nor an RFC 3339 time", "time")


# --- JSON path ---------------------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"""\.([^.\[\]]+)|\[(-?[0-9]+)\]|\[\*\]|\[(?:'([^']*)'|"([^"]*)")\]""")


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A small JSONPath: ``$``, ``.key``, ``["key"]``, ``[n]`` (negative from the end), ``[*]``.

    ``$.data.readings[*]`` picks every element of ``readings``; the leading ``$`` may be left out.
    """

    text: str
    steps: tuple[str | int | None, ...]
    """Keys (str), indexes (int) and ``[*]`` (None)."""

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Raises ValueError with a sentence when ``text`` is not a path this class reads."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a JSON path like $.data.temp or $.readings[*]")
        src = text.strip()
        rest = src[1:] if src.startswith("$") else src if src.startswith(("[", ".")) else "." + src
        steps: list[str | int | None] = []
        pos = 0
        while pos < len(rest):
            m = _PATH_TOKEN.match(rest, pos)
            if m is None:
                raise ValueError(f"cannot read the JSON path {src!r} at {rest[pos:pos + 20]!r}: "
                                 "use .key, [n], ['key'] or [*]")
            key, index, quoted1, quoted2 = m.groups()
            if key is not None:
                steps.append(key)
            elif index is not None:
                steps.append(int(index))
            elif quoted1 is not None or quoted2 is not None:
                steps.append(quoted1 if quoted1 is not None else quoted2)
            else:
                steps.append(None)
            pos = m.end()
        return cls(src, tuple(steps))

    def select(self, doc: Any) -> list[tuple[Any, str]]:
        """The values the path picks, each with the name of its last key (for a bare value).

        Raises:
            PayloadError: a step finds no such key or index, or meets a scalar.
        """
        current: list[tuple[Any, str]] = [(doc, VALUE)]
        for step in self.steps:
            nxt: list[tuple[Any, str]] = []
            for value, name in current:
                if step is None:
                    if isinstance(value, list):
                        nxt.extend((v, name) for v in value)
                    elif isinstance(value, dict):
                        nxt.extend((v, str(k)) for k, v in value.items())
                    else:
                        raise PayloadError(f"json_path {self.text}: [*] needs an array or object", "path")
                elif isinstance(step, int):
                    if not isinstance(value, list) or not -len(value) <= step < len(value):
                        raise PayloadError(f"json_path {self.text}: no element [{step}]", "path")
                    nxt.append((value[step], name))
                else:
                    if not isinstance(value, dict) or step not in value:
                        raise PayloadError(f"json_path {self.text}: no key {step!r}", "path")
                    nxt.append((value[step], step))
            current = nxt
        return current


# --- the decoder -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    """How to read payloads: the format, the JSON path, where the time is and in what unit."""

    kind: PayloadKind = "auto"
    path: JsonPath | None = None
    time_keys: tuple[str, ...] = DEFAULT_TIME_KEYS
    """Keys that hold the point's time, matched without regard to case; empty: arrival time."""
    time_unit: TimeUnit = "auto"
    tz: tzinfo = UTC
    """Zone of time strings that have no offset."""
    max_fields: int = MAX_FIELDS
    _keys: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    _initials: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", frozenset(k.lower() for k in self.time_keys))
        object.__setattr__(self, "_initials", frozenset(c for k in self.time_keys for c in (k[:1].lower(),
                                                                                              k[:1].upper())))


class Decoded:
    """What one payload gave: points for the channel itself, or line-protocol batches.

    ``batches`` maps a channel (``base/measurement``) to its batch.
    """

    __slots__ = ("batches", "points")

    def __init__(self, points: list[Point] | None = None, batches: dict[str, Batch] | None = None) -> None:
        self.points: list[Point] = points if points is not None else []
        self.batches: dict[str, Batch] = batches if batches is not None else {}

    def __len__(self) -> int:
        return len(self.points) + sum(len(b) for b in self.batches.values())

    def __repr__(self) -> str:
        return f"Decoded(points={self.points!r}, batches={self.batches!r})"


def decode_payload(payload: bytes, fmt: PayloadFormat, now_ms: int, base: str = "") -> Decoded:
    """Turn one message payload into points (``now_ms``: the arrival time).

    ``base`` is the message's channel: line protocol goes to ``base/measurement``, as a push.

    An empty payload gives nothing (MQTT uses it to clear a retained message).

    Raises:
        PayloadError: the payload does not fit the format; nothing of it is kept.
    """
    kind = fmt.kind
    if payload[:1] == b"{" and kind != "line-protocol" and kind != "number" and kind != "text":
        # The common case, first: a JSON object without leading blanks.
        doc = _json(payload)
        if fmt.path is None and type(doc) is dict:
            return Decoded([_object_point(doc, None, fmt, now_ms)])
        return Decoded(json_points(doc, fmt, now_ms))
    if not payload.strip():
        return Decoded()
    if kind == "json":
        return Decoded(points=json_points(_json(payload), fmt, now_ms))
    text = _text(payload)
    stripped = text.strip()
    if not stripped:
        return Decoded()
    if kind == "number":
        return Decoded(points=[(now_ms, {VALUE: _number(stripped)})])
    if kind == "text":
        return Decoded(points=[(now_ms, {VALUE: stripped})])
    if kind == "line-protocol":
        return Decoded(batches=line_protocol(text, now_ms, _lp_unit(fmt.time_unit), base))
    # auto
    first = stripped[0]
    if first in "{[":
        return Decoded(points=json_points(_json(payload), fmt, now_ms))
    if _NUMBER.fullmatch(stripped):
        return Decoded(points=[(now_ms, {VALUE: _number(stripped)})])
    if stripped in ("true", "false"):
        return Decoded(points=[(now_ms, {VALUE: stripped == "true"})])
    if first == '"':
        value = _json(payload)
        if isinstance(value, str):
            return Decoded(points=[(now_ms, {VALUE: value})]) if value else Decoded()
    if stripped == "null":
        return Decoded()
    if " " in stripped and "=" in stripped:
        try:
            return Decoded(batches=line_protocol(text, now_ms, _lp_unit(fmt.time_unit), base))
        except PayloadError:
            if "\n" in stripped:
                raise
    if "\n" in stripped or len(stripped) > MAX_TEXT:
        raise PayloadError("payload is not JSON, a number, line protocol or one line of text "
                           f"(at most {MAX_TEXT} characters)", "format")
    return Decoded(points=[(now_ms, {VALUE: stripped})])


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8 (byte {exc.start})", "encoding") from None


def _json(payload: bytes) -> Any:
    try:
        return _decode(payload)
    except msgspec.DecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}", "json") from None
    except RecursionError:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels", "json") from None


def _number(text: str) -> Value:
    if not _NUMBER.fullmatch(text):
        raise PayloadError(f"payload {text[:40]!r} is not a number", "number")
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise PayloadError(f"number {text[:40]!r} is out of range", "number")
        return value
    number = int(text)
    if abs(number) > MAX_INT:
        raise PayloadError(f"number {text[:40]!r} is out of range", "number")
    return number


def _lp_unit(unit: str) -> str:
    return "ns" if unit == "auto" else unit


def line_protocol(text: str, now_ms: int, precision: str = "ns", base: str = "lp") -> dict[str, Batch]:
    """Line protocol as a push parses it: one batch per measurement, on ``base/measurement``.

    Raises:
        PayloadError: the first bad line (nothing of the payload is kept).
    """
    try:
        tables = lineprotocol.parse_tables(text, precision)
        batches = tables_to_batches(tables, base or "lp", now_ms)
    except lineprotocol.LineProtocolError as exc:
        raise PayloadError(f"line protocol: {exc}", "lineprotocol") from None
    except ProtocolError as exc:
        raise PayloadError(f"line protocol: {exc}", "lineprotocol") from None
    if not batches:
        raise PayloadError("line protocol: no lines", "lineprotocol")
    return batches


def json_points(doc: Any, fmt: PayloadFormat, now_ms: int) -> list[Point]:
    """The points in a decoded JSON document (see the module doc).

    Raises:
        PayloadError: no point in it, a bad time, a field that cannot be stored.
    """
    if fmt.path is not None:
        picked = fmt.path.select(doc)
        if not picked:
            raise PayloadError(f"json_path {fmt.path.text}: picks nothing", "path")
    elif isinstance(doc, list):
        picked = [(item, VALUE) for item in doc]
    else:
        picked = [(doc, VALUE)]
    root = doc if isinstance(doc, dict) and fmt.path is not None else None
    points: list[Point] = []
    for value, name in picked:
        if isinstance(value, dict):
            points.append(_object_point(value, root, fmt, now_ms))
        elif isinstance(value, list):
            raise PayloadError("an array of arrays or scalars: point the json_path at the objects", "json")
        elif value is None:
            continue
        else:
            t = _time_of(root, fmt, now_ms) if root is not None else now_ms
            points.append((t, {_key(name): _scalar(name, value)}))
    if not points:
        raise PayloadError("no point in the payload", "json")
    return points


def _time_of(obj: Mapping[str, Any] | None, fmt: PayloadFormat, now_ms: int) -> int:
    if obj is None or not fmt._keys:
        return now_ms
    for key in fmt.time_keys:
        if key in obj:
            return parse_time_value(obj[key], fmt.time_unit, fmt.tz)
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() in fmt._keys:
            return parse_time_value(value, fmt.time_unit, fmt.tz)
    return now_ms


def _object_point(obj: dict[str, Any], root: dict[str, Any] | None, fmt: PayloadFormat, now_ms: int) -> Point:
    keys = fmt._keys
    time_key: str | None = None
    if keys:
        for key in fmt.time_keys:
            if key in obj:
                time_key = key
                break
        else:
            initials = fmt._initials
            for key in obj:
                if key[:1] in initials and key.lower() in keys:
                    time_key = key
                    break
    if time_key is not None:
        t = parse_time_value(obj[time_key], fmt.time_unit, fmt.tz)
    else:
        t = _time_of(root, fmt, now_ms) if root is not None else now_ms
    if len(obj) > fmt.max_fields + 1:
        raise PayloadError(f"more than {fmt.max_fields} fields in one point; pick a part with json_path", "fields")
    out: dict[str, Value] = {}
    nested = False
    for key, value in obj.items():  # flat objects, the common case, without the general walk
        tv = type(value)
        if tv is float or tv is str or tv is bool or (tv is int and -MAX_INT <= value <= MAX_INT):
            if key == time_key:
                continue
            if not key or len(key) > MAX_KEY:
                _key(key)
            out[key] = value
        elif value is not None:
            nested = True
            break
    if nested:
        out = {}
        for key, value in _flatten(obj, time_key):
            out[key] = value
            if len(out) > fmt.max_fields:
                break
    if len(out) > fmt.max_fields:
        raise PayloadError(f"more than {fmt.max_fields} fields in one point; pick a part with json_path", "fields")
    if not out:
        raise PayloadError("the object has no fields (numbers, strings or booleans)", "fields")
    return t, out


def _flatten(obj: dict[str, Any], skip: str | None) -> Iterator[tuple[str, Value]]:
    stack: list[tuple[str, Any, int]] = []
    for key, value in reversed(list(obj.items())):
        if key != skip:
            stack.append((_key(key), value, 1))
    while stack:
        name, value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise PayloadError(f"nested deeper than {MAX_DEPTH} levels", "json")
            stack.extend((_key(f"{name}.{k}"), v, depth + 1) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise PayloadError(f"nested deeper than {MAX_DEPTH} levels", "json")
            stack.extend((_key(f"{name}.{i}"), v, depth + 1) for i, v in reversed(list(enumerate(value))))
        elif value is not None:
            yield name, _scalar(name, value)


def _key(name: str) -> str:
    if not name or len(name) > MAX_KEY:
        raise PayloadError(f"field name {name[:40]!r} must be 1 to {MAX_KEY} characters", "fields")
    return name


def _scalar(name: str, value: Any) -> Value:
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise PayloadError(f"field {name!r}: {value} is out of range", "fields")
        return value
    raise PayloadError(f"field {name!r}: unsupported value {value!r}", "fields")


__all__ = [
    "DEFAULT_TIME_KEYS",
    "KINDS",
    "MAX_FIELDS",
    "MAX_TEXT",
    "TIME_UNITS",
    "Decoded",
    "JsonPath",
    "PayloadError",
    "PayloadFormat",
    "Point",
    "decode_payload",
    "epoch_ms",
    "json_points",
    "line_protocol",
    "parse_time_value",
]
