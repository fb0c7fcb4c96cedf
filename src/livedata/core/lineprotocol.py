"""Influx line protocol: a pure parser and encoder (no I/O).

The grammar is the one InfluxDB 2 and Grafana Live's ``/api/live/push`` accept::

    measurement[,tag_key=tag_val...] field_key=field_val[,field_key=field_val...] [timestamp]

* Escapes: in the measurement a backslash escapes ``,`` and space; in tag keys, tag values
  and field keys it escapes ``,``, ``=`` and space; inside a double-quoted string field value
  it escapes ``"`` and ``\\``. A backslash before any other character is a literal backslash.
  Consequently a name ending in a backslash cannot be written (it would escape the separator
  that follows), and :func:`encode_line` refuses such names.
* Field values: floats (``1``, ``1.5``, ``-1.5e3``, ``1.``), int64 integers (``3i``), uint64
  integers (``3u``), double-quoted strings and booleans (``t T true True TRUE f F false False
  FALSE``). Non-finite floats are rejected.
* Tag values must not be empty; tag keys and field keys must be unique within a line.
* The timestamp is optional, an integer in the request's precision that must fit an int64
  once converted to nanoseconds (as in InfluxDB: years 1677 to 2262); it is converted to
  epoch milliseconds (floor division).
* Sections are separated by one or more spaces; leading and trailing spaces are ignored.
  Tabs are ordinary characters, not separators.
* Blank lines and lines starting with ``#`` (after optional spaces) are skipped; ``\\r\\n``
  line endings are accepted.

Lines without a backslash or a double quote (the vast majority) take a ``str.split`` fast path;
anything else, and every line the fast path does not accept, goes through a precise scanner,
which is also the only place errors are raised (so every error carries a line and a column).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias

__all__ = [
    "PRECISIONS",
    "Column",
    "Line",
    "LineProtocolError",
    "Table",
    "TableParser",
    "Value",
    "encode_line",
    "parse",
    "parse_line",
    "parse_tables",
]

Value: TypeAlias = float | int | str | bool
"""A field value: ``float``, ``int`` (from ``i`` and ``u`` integers), ``str`` or ``bool``."""

PRECISIONS: Final[dict[str, int]] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
"""Timestamp precisions accepted by :func:`parse` and :func:`encode_line`, in nanoseconds per unit."""

_UNIT_NAMES: Final[dict[int, str]] = {
    1: "nanoseconds",
    1_000: "microseconds",
    1_000_000: "milliseconds",
    1_000_000_000: "seconds",
}
_NS_PER_MS: Final = 1_000_000
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_FLOAT_MAX: Final = sys.float_info.max
_FLOAT_MIN: Final = -sys.float_info.max

_BOOLS: Final[dict[str, bool]] = {
    "t": True,
    "T": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "f": False,
    "F": False,
    "false": False,
    "False": False,
    "FALSE": False,
}

_TIME_RANGE: Final = "times must fit a 64-bit count of nanoseconds: years 1677 to 2262"
_EXPECTED_VALUE: Final = 'expected a number, 12i, 12u, "string" or true/false'

# The scanner's tokens. Possessive quantifiers (Python 3.11+) make "backslash + escapable
# character" an indivisible unit: the engine never backtracks into reading it as a literal
# backslash followed by a separator (which matters for an unterminated string like "a\").
_MEASUREMENT_RE: Final = re.compile(r"(?:\\[, ]|\\|[^, \\])*+")
_KEY_RE: Final = re.compile(r"(?:\\[, =]|\\|[^, =\\])*+")
_STRING_RE: Final = re.compile(r'"((?:\\["\\]|\\|[^"\\])*+)"')
_TOKEN_RE: Final = re.compile(r"[^ ,]*+")
_FLOAT_RE: Final = re.compile(r"-?(?:[0-9]+\.?[0-9]*+|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SIGNED_RE: Final = re.compile(r"-?[0-9]+")
_UNSIGNED_RE: Final = re.compile(r"[0-9]+")

_UNESCAPE_MEASUREMENT_RE: Final = re.compile(r"\\([, ])")
_UNESCAPE_KEY_RE: Final = re.compile(r"\\([, =])")
_UNESCAPE_STRING_RE: Final = re.compile(r'\\(["\\])')


class LineProtocolError(ValueError):
    """A line of the body is not valid line protocol.

    ``line`` and ``column`` are 1-based (the column counts characters of the line as sent,
    including any leading spaces); ``reason`` is the message without the ``line N:`` prefix.
    ``str(err)`` reads e.g. ``line 3: invalid field value 'abc' for field 'temp' (...)``.
    """

    line: int
    column: int
    reason: str

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"line {line}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[type[LineProtocolError], tuple[str, int, int]]:
        return (type(self), (self.reason, self.line, self.column))


@dataclass(frozen=True, slots=True)
class Line:
    """One point: measurement, tags sorted by key, fields in the order given, time in epoch ms.

    ``time_ms`` is ``None`` when the line had no timestamp (the caller uses its own clock).
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, Value], ...]
    time_ms: int | None


_object_new: Final = object.__new__
_set_measurement: Final = Line.__dict__["measurement"].__set__
_set_tags: Final = Line.__dict__["tags"].__set__
_set_fields: Final = Line.__dict__["fields"].__set__
_set_time_ms: Final = Line.__dict__["time_ms"].__set__


def _make_line(
    measurement: str,
    tags: tuple[tuple[str, str], ...],
    fields: tuple[tuple[str, Value], ...],
    time_ms: int | None,
) -> Line:
    """``Line(...)`` without the frozen dataclass ``__init__`` (about twice as fast)."""
    line: Line = _object_new(Line)
    _set_measurement(line, measurement)
    _set_tags(line, tags)
    _set_fields(line, fields)
    _set_time_ms(line, time_ms)
    return line


def _precision_ns(precision: str) -> int:
    try:
        return PRECISIONS[precision]
    except (KeyError, TypeError):
        raise ValueError(f"unknown precision {precision!r} (expected one of ns, us, ms, s)") from None


def _show(text: str, limit: int = 40) -> str:
    """``repr`` of a user token for an error message, shortened if long."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def _fail(reason: str, lineno: int, index: int) -> NoReturn:
    raise LineProtocolError(reason, lineno, index + 1)


# ---------------------------------------------------------------------------------------------
# Field values


def _value_fast(val: str) -> Value | None:
    """A non-string field value token to its value, or ``None`` if it is not valid.

    No regular expressions: the character-set checks leave ``float()``/``int()`` only inputs
    they parse exactly as line protocol does. ``_parse_fast`` carries an inlined copy of this
    function; ``_value_strict`` is an independent reference implementation (tests compare all).
    """
    if not val:
        return None
    if not val.strip("0123456789.-+eE"):
        # Within these characters float() accepts exactly the line protocol float grammar
        # plus a leading '+', which line protocol does not allow.
        if val[0] == "+":
            return None
        try:
            f = float(val)
        except ValueError:
            return None
        if f > _FLOAT_MAX or f < _FLOAT_MIN:
            return None
        return f
    last = val[-1]
    if last == "i":
        digits = val[:-1]
        if digits.strip("0123456789-"):
            return None
        try:
            i = int(digits)
        except ValueError:
            return None
        if i < -9223372036854775808 or i > 9223372036854775807:
            return None
        return i
    if last == "u":
        digits = val[:-1]
        if not digits or digits.strip("0123456789"):
            return None
        i = int(digits)
        if i > 18446744073709551615:
            return None
        return i
    return _BOOLS.get(val)


class _BadValue(Exception):
    """Internal: a field value token is invalid; ``args[0]`` says why."""


def _value_strict(token: str) -> Value:
    """Reference implementation of ``_value_fast``; raises ``_BadValue`` with a reason."""
    b = _BOOLS.get(token)
    if b is not None:
        return b
    last = token[-1:]
    if last == "i":
        digits = token[:-1]
        if _SIGNED_RE.fullmatch(digits) is None:
            raise _BadValue("invalid")
        n = int(digits)
        if n < _INT64_MIN or n > _INT64_MAX:
            raise _BadValue("out of range for a 64-bit signed integer")
        return n
    if last == "u":
        digits = token[:-1]
        if _UNSIGNED_RE.fullmatch(digits) is None:
            raise _BadValue("invalid")
        n = int(digits)
        if n > _UINT64_MAX:
            raise _BadValue("out of range for a 64-bit unsigned integer")
        return n
    if _FLOAT_RE.fullmatch(token) is None:
        raise _BadValue("invalid")
    f = float(token)
    if f > _FLOAT_MAX or f < _FLOAT_MIN:
        raise _BadValue("out of range for a 64-bit float")
    return f


# ---------------------------------------------------------------------------------------------
# Parsing

_Head: TypeAlias = tuple[str, tuple[tuple[str, str], ...]]

# Measurement + tag set of recently seen heads without backslashes: series repeat from one
# push to the next, so most lines skip tag parsing. Cleared wholesale when full; long heads
# are not cached, so the cache stays small (at most about 8192 * 256 characters).
_HEAD_CACHE: Final[dict[str, _Head]] = {}
_HEAD_CACHE_MAX: Final = 8192
_HEAD_CACHE_MAX_LEN: Final = 256


def _parse_head_fast(head: str) -> _Head | None:
    """Measurement and sorted tags of a ``measurement,k=v,...`` without backslashes, or ``None``."""
    measurement, comma, rest = head.partition(",")
    if not measurement or measurement[0] == "#":
        return None
    if not comma:
        return measurement, ()
    tag_list: list[tuple[str, str]] = []
    for chunk in rest.split(","):
        key, _, val = chunk.partition("=")
        if not key or not val or "=" in val:
            return None
        tag_list.append((key, val))
    if len(tag_list) > 1:
        tag_list.sort()
        prev = ""
        for key, _ in tag_list:
            if key == prev:
                return None
            prev = key
    return measurement, tuple(tag_list)


def _cached_head(head: str) -> _Head | None:
    parsed = _HEAD_CACHE.get(head)
    if parsed is None:
        parsed = _parse_head_fast(head)
        if parsed is None or len(head) > _HEAD_CACHE_MAX_LEN:
            return parsed
        if len(_HEAD_CACHE) >= _HEAD_CACHE_MAX:
            _HEAD_CACHE.clear()
        _HEAD_CACHE[head] = parsed
    return parsed


def _parse_fast(line: str, precision_ns: int) -> Line | None:
    """The split-based path for a line with no backslash and no double quote.

    Returns ``None`` whenever the line is not a plain, valid line: the caller then runs the
    scanner, which gives the same result for valid lines and the precise error otherwise.
    """
    parts = line.split(" ")
    n = len(parts)
    if n == 2:
        head, fieldset = parts
        stamp = None
    elif n == 3:
        head, fieldset, stamp = parts
        if not stamp:
            return None
    else:
        return None
    if not fieldset:
        return None

    head_parsed = _HEAD_CACHE.get(head)
    if head_parsed is None:
        head_parsed = _cached_head(head)
        if head_parsed is None:
            return None

    chunks = fieldset.split(",")
    fields: dict[str, Value] = {}
    for chunk in chunks:
        key, _, val = chunk.partition("=")
        if not key or not val:
            return None
        # --- inlined _value_fast(val) ---
        if not val.strip("0123456789.-+eE"):
            if val[0] == "+":
                return None
            try:
                f = float(val)
            except ValueError:
                return None
            if f > _FLOAT_MAX or f < _FLOAT_MIN:
                return None
            fields[key] = f
            continue
        last = val[-1]
        if last == "i":
            digits = val[:-1]
            if digits.strip("0123456789-"):
                return None
            try:
                i = int(digits)
            except ValueError:
                return None
            if i < -9223372036854775808 or i > 9223372036854775807:
                return None
            fields[key] = i
        elif last == "u":
            digits = val[:-1]
            if not digits or digits.strip("0123456789"):
                return None
            i = int(digits)
            if i > 18446744073709551615:
                return None
            fields[key] = i
        else:
            b = _BOOLS.get(val)
            if b is None:
                return None
            fields[key] = b
        # --- end of inlined _value_fast ---
    if len(fields) != len(chunks):
        return None  # duplicate field key

    time_ms: int | None = None
    if stamp is not None:
        if stamp.strip("0123456789-"):
            return None
        try:
            raw = int(stamp)
        except ValueError:
            return None
        ns = raw * precision_ns
        if ns < -9223372036854775808 or ns > 9223372036854775807:
            return None
        time_ms = ns // 1_000_000
    # _make_line, inlined.
    point: Line = _object_new(Line)
    _set_measurement(point, head_parsed[0])
    _set_tags(point, head_parsed[1])
    _set_fields(point, tuple(fields.items()))
    _set_time_ms(point, time_ms)
    return point


def _scan_head(line: str, i: int, lineno: int) -> tuple[str, tuple[tuple[str, str], ...], int]:
    """Scan ``measurement[,k=v...]`` from ``line[i]``; returns it and the index after it."""
    n = len(line)
    m = _MEASUREMENT_RE.match(line, i)
    assert m is not None  # the pattern matches the empty string
    raw = m.group()
    if not raw:
        _fail(f"missing measurement name before {line[i]!r}", lineno, i)
    measurement = _UNESCAPE_MEASUREMENT_RE.sub(r"\1", raw) if "\\" in raw else raw
    j = m.end()
    tags: dict[str, str] = {}
    while j < n and line[j] == ",":
        key_start = j + 1
        m = _KEY_RE.match(line, key_start)
        assert m is not None
        raw = m.group()
        j = m.end()
        if not raw:
            _fail("empty tag key", lineno, key_start)
        key = _UNESCAPE_KEY_RE.sub(r"\1", raw) if "\\" in raw else raw
        if j >= n or line[j] != "=":
            _fail(f"missing '=' after tag key {_show(key)}", lineno, j)
        val_start = j + 1
        m = _KEY_RE.match(line, val_start)
        assert m is not None
        raw = m.group()
        j = m.end()
        if not raw:
            _fail(f"empty value for tag {_show(key)}", lineno, val_start)
        if j < n and line[j] == "=":
            _fail(f"unescaped '=' in the value of tag {_show(key)} (write it as \\=)", lineno, j)
        if key in tags:
            _fail(f"duplicate tag key {_show(key)}", lineno, key_start)
        tags[key] = _UNESCAPE_KEY_RE.sub(r"\1", raw) if "\\" in raw else raw
    return measurement, tuple(sorted(tags.items())), j


def _parse_scan(line: str, lineno: int, precision_ns: int) -> Line | None:
    """The careful scanner: escapes, quoted strings, odd spacing; raises on any error."""
    n = len(line)
    i = 0
    while i < n and line[i] == " ":
        i += 1
    if i == n or line[i] == "#":
        return None

    # Measurement and tag set. Without backslashes the head ends at the first space.
    head = None
    if "\\" not in line:
        j = line.find(" ", i)
        if j > 0:
            head = _cached_head(line[i:j])
    if head is not None:
        measurement, tags = head
    else:
        measurement, tags, j = _scan_head(line, i, lineno)

    # Separator: one or more spaces.
    if j >= n or j < 0:
        _fail("missing fields (expected a space and then field_key=value)", lineno, n)
    while j < n and line[j] == " ":
        j += 1
    if j >= n:
        _fail("missing fields (expected field_key=value after the space)", lineno, j)

    # Field set.
    fields: dict[str, Value] = {}
    while True:
        key_start = j
        m = _KEY_RE.match(line, key_start)
        assert m is not None
        raw = m.group()
        j = m.end()
        if not raw:
            _fail("empty field key", lineno, key_start)
        key = _UNESCAPE_KEY_RE.sub(r"\1", raw) if "\\" in raw else raw
        if j >= n or line[j] != "=":
            _fail(f"missing '=' and value after field key {_show(key)}", lineno, j)
        if key in fields:
            _fail(f"duplicate field key {_show(key)}", lineno, key_start)
        val_start = j + 1
        value: Value | None
        if val_start < n and line[val_start] == '"':
            m = _STRING_RE.match(line, val_start)
            if m is None:
                _fail(f'unterminated string value for field {_show(key)} (missing closing ")', lineno, val_start)
            raw = m.group(1)
            value = _UNESCAPE_STRING_RE.sub(r"\1", raw) if "\\" in raw else raw
            j = m.end()
            if j < n and line[j] != "," and line[j] != " ":
                _fail(f"unexpected {line[j]!r} after the string value of field {_show(key)}", lineno, j)
        else:
            m = _TOKEN_RE.match(line, val_start)
            assert m is not None
            token = m.group()
            j = m.end()
            if not token:
                _fail(f"missing value for field {_show(key)}", lineno, val_start)
            value = _value_fast(token)
            if value is None:
                try:
                    value = _value_strict(token)
                except _BadValue as exc:
                    reason = exc.args[0]
                    if reason == "invalid":
                        _fail(
                            f"invalid field value {_show(token)} for field {_show(key)} ({_EXPECTED_VALUE})",
                            lineno,
                            val_start,
                        )
                    _fail(f"field value {_show(token)} for field {_show(key)} is {reason}", lineno, val_start)
        fields[key] = value
        if j < n and line[j] == ",":
            j += 1
            continue
        break

    # Optional timestamp.
    while j < n and line[j] == " ":
        j += 1
    time_ms: int | None = None
    if j < n:
        stamp_start = j
        end = line.find(" ", j)
        if end < 0:
            end = n
        stamp = line[stamp_start:end]
        if _SIGNED_RE.fullmatch(stamp) is None:
            unit = _UNIT_NAMES[precision_ns]
            _fail(f"invalid timestamp {_show(stamp)} (expected an integer number of {unit})", lineno, stamp_start)
        ns = int(stamp) * precision_ns
        if ns < _INT64_MIN or ns > _INT64_MAX:
            _fail(f"timestamp {_show(stamp)} is out of range ({_TIME_RANGE})", lineno, stamp_start)
        time_ms = ns // _NS_PER_MS
        j = end
        while j < n and line[j] == " ":
            j += 1
        if j < n:
            _fail(f"unexpected text {_show(line[j:])} after the timestamp", lineno, j)

    return _make_line(measurement, tags, tuple(fields.items()), time_ms)


def _parse_one(line: str, lineno: int, precision_ns: int) -> Line | None:
    """One line without its ``\\n`` (a trailing ``\\r`` and trailing spaces are dropped)."""
    if line and line[-1] in "\r ":
        if line[-1] == "\r":
            line = line[:-1]
        line = line.rstrip(" ")
    if not line:
        return None
    if "\\" not in line and '"' not in line:
        point = _parse_fast(line, precision_ns)
        if point is not None:
            return point
    return _parse_scan(line, lineno, precision_ns)


def parse_line(text: str, precision: str = "ns", lineno: int = 1) -> Line | None:
    """Parse one line of line protocol.

    Returns ``None`` for a blank line or a ``#`` comment. A single trailing ``\\n``, ``\\r\\n``
    or ``\\r`` is ignored; any other newline in ``text`` is an error. ``lineno`` is only used
    in error messages. Raises :class:`LineProtocolError` for an invalid line and ``ValueError``
    for an unknown ``precision``.
    """
    precision_ns = _precision_ns(precision)
    if text.endswith("\n"):
        text = text[:-1]
    newline = text.find("\n")
    if newline >= 0:
        raise LineProtocolError("newline inside a line (send one point per line)", lineno, newline + 1)
    return _parse_one(text, lineno, precision_ns)


def parse(body: str, precision: str = "ns") -> list[Line]:
    """Parse a whole request body: one point per ``\\n``-separated line, all or nothing.

    Blank lines and ``#`` comments are skipped but still counted for line numbers.
    Raises :class:`LineProtocolError` for the first invalid line (nothing is returned then)
    and ``ValueError`` for an unknown ``precision`` (``ns``, ``us``, ``ms`` or ``s``).
    """
    precision_ns = _precision_ns(precision)
    out: list[Line] = []
    append = out.append
    fast = _parse_fast
    for lineno, line in enumerate(body.split("\n"), 1):
        # _parse_one, inlined for the common case.
        if not line or line[-1] in "\r " or "\\" in line or '"' in line:
            point = _parse_one(line, lineno, precision_ns)
        else:
            point = fast(line, precision_ns)
            if point is None:
                point = _parse_scan(line, lineno, precision_ns)
        if point is not None:
            append(point)
    return out


# ---------------------------------------------------------------------------------------------
# Column-wise parsing (the ingest path)

_KIND: Final[dict[type, str]] = {float: "number", int: "number", bool: "boolean", str: "string"}


@dataclass(slots=True)
class Column:
    """The values of one field of one series (measurement + tag set) in a :class:`Table`.

    ``rows`` are the table rows that have a value, ascending; ``values`` the values, aligned.
    ``kind`` is ``number`` (floats and integers), ``boolean`` or ``string``.
    """

    tags: tuple[tuple[str, str], ...]
    key: str
    kind: str
    rows: list[int]
    values: list[Value]

    def dense(self, height: int) -> list[Value | None]:
        """The column over all ``height`` rows of its table, ``None`` where it has no value."""
        if len(self.rows) == height:
            return self.values  # type: ignore[return-value]
        out: list[Value | None] = [None] * height
        for row, value in zip(self.rows, self.values, strict=True):
            out[row] = value
        return out


@dataclass(slots=True)
class Table:
    """The points of one measurement, column-wise, in body order.

    A line becomes a new row, except that a line whose time equals the table's last row's time
    and whose fields are all still empty in that row fills that row: the lines of one gather
    (``cpu,cpu=cpu0 ... T``, ``cpu,cpu=cpu1 ... T``) share one row, as in a wide frame.
    ``times`` holds ``None`` for lines without a timestamp. ``first_line`` is the body line
    that introduced the measurement; ``lines`` counts its points (lines).
    """

    measurement: str
    first_line: int
    times: list[int | None]
    columns: dict[tuple[tuple[tuple[str, str], ...], str], Column]
    lines: int = 0
    untimed: bool = False


class _Series:
    """Per-body state of one head string: its table, tags and columns by field key."""

    __slots__ = ("columns", "table", "tags")

    def __init__(self, table: Table, tags: tuple[tuple[str, str], ...]) -> None:
        self.table = table
        self.tags = tags
        self.columns: dict[str, Column] = {}


class TableParser:
    """Parses line protocol straight into one :class:`Table` per measurement: the ingest path.

    Accepts and rejects exactly what :func:`parse` does, with the same errors, plus one more:
    a field of one series whose values change kind within the body (``v=1`` then ``v="x"``)
    raises :class:`LineProtocolError` naming that line. It is :func:`parse` without a ``Line``
    per point. Feed a body's lines in slices (a caller on an event loop can yield between
    them); ``tables`` come in order of first appearance. After an error the parser is spent.
    """

    def __init__(self, precision: str = "ns") -> None:
        self.precision_ns = _precision_ns(precision)
        self.tables: list[Table] = []
        self._tables: dict[str, Table] = {}
        self._heads: dict[str, _Series] = {}

    @property
    def lines(self) -> int:
        """Points (non-blank, non-comment lines) parsed so far."""
        return sum(t.lines for t in self.tables)

    def feed(self, lines: Sequence[str], first_lineno: int = 1) -> None:
        """Parse ``lines`` (without their ``\\n``); the first is body line ``first_lineno``."""
        precision_ns = self.precision_ns
        # The timestamp bounds in the request's unit: ns = stamp * precision_ns must fit an int64.
        lo = -((-_INT64_MIN) // precision_ns)
        hi = _INT64_MAX // precision_ns
        tables = self._tables
        heads = self._heads
        ordered = self.tables
        kinds = _KIND
        head_cache = _HEAD_CACHE
        for lineno, line in enumerate(lines, first_lineno):
            fields: dict[str, Value] | None = None
            series: _Series | None = None
            t: int | None = None
            if line and line[-1] not in "\r " and "\\" not in line and '"' not in line:
                # The fast path, as _parse_fast: leaves ``fields`` None for anything unusual.
                parts = line.split(" ")
                n = len(parts)
                if n == 3:
                    head, fieldset, stamp = parts
                    if stamp and not stamp.strip("0123456789-"):
                        try:
                            raw = int(stamp)
                        except ValueError:
                            raw = hi + 1
                        if lo <= raw <= hi:
                            t = raw * precision_ns // 1_000_000
                            series = heads.get(head)
                elif n == 2:
                    head, fieldset = parts
                    series = heads.get(head)
                else:
                    head = fieldset = ""
                if series is None and head and (n == 2 or t is not None):
                    parsed = head_cache.get(head) or _cached_head(head)
                    if parsed is not None:
                        table = tables.get(parsed[0])
                        if table is None:
                            table = tables[parsed[0]] = Table(parsed[0], lineno, [], {})
                            ordered.append(table)
                        series = heads[head] = _Series(table, parsed[1])
                if series is not None and fieldset:
                    fields = {}
                    chunks = fieldset.split(",")
                    for chunk in chunks:
                        key, _, val = chunk.partition("=")
                        if not key or not val:
                            fields = None
                            break
                        if not val.strip("0123456789.-+eE"):
                            if val[0] == "+":
                                fields = None
                                break
                            try:
                                f = float(val)
                            except ValueError:
                                fields = None
                                break
                            if f > _FLOAT_MAX or f < _FLOAT_MIN:
                                fields = None
                                break
                            fields[key] = f
                            continue
                        value = _value_fast(val)
                        if value is None:
                            fields = None
                            break
                        fields[key] = value
                    if fields is not None and len(fields) != len(chunks):
                        fields = None  # a duplicate field key: the scanner names it
            if fields is None or series is None:
                point = _parse_one(line, lineno, precision_ns)
                if point is None:
                    continue
                t = point.time_ms
                fields = dict(point.fields)
                head = f"\n{point.measurement}\n{point.tags!r}"  # a key no raw head can equal
                series = heads.get(head)
                if series is None:
                    table = tables.get(point.measurement)
                    if table is None:
                        table = tables[point.measurement] = Table(point.measurement, lineno, [], {})
                        ordered.append(table)
                    series = heads[head] = _Series(table, point.tags)

            # Commit the line: a new row, or the last row when it has this time and room.
            table = series.table
            times = table.times
            row = len(times) - 1
            if row < 0 or times[row] != t:
                times.append(t)
                row += 1
            else:
                cols = series.columns
                for key in fields:
                    # Another spelling of this head (tags in another order) shares the columns.
                    col = cols.get(key) or table.columns.get((series.tags, key))
                    if col is not None and col.rows[-1] == row:
                        times.append(t)
                        row += 1
                        break
            if t is None:
                table.untimed = True
            table.lines += 1
            cols = series.columns
            for key, value in fields.items():
                col = cols.get(key)
                if col is None:
                    kind = kinds[type(value)]
                    col = table.columns.get((series.tags, key))
                    if col is None:
                        col = table.columns[(series.tags, key)] = Column(series.tags, key, kind, [], [])
                    cols[key] = col
                if kinds[type(value)] != col.kind:
                    raise LineProtocolError(
                        f"field {_show(key)} is a {kinds[type(value)]} here but a {col.kind} earlier in the body",
                        lineno,
                        1,
                    )
                col.rows.append(row)
                col.values.append(value)


def parse_tables(body: str, precision: str = "ns") -> list[Table]:
    """Parse a whole body with a :class:`TableParser`: one Table per measurement, all or nothing."""
    parser = TableParser(precision)
    parser.feed(body.split("\n"))
    return parser.tables


# ---------------------------------------------------------------------------------------------
# Encoding


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if name[-1] == "\\":
        raise ValueError(f"{what} {_show(name)} ends with a backslash, which line protocol cannot represent")
    if "\n" in name:
        raise ValueError(f"{what} {_show(name)} contains a newline, which line protocol cannot represent")


def _escape_key(text: str) -> str:
    if "," in text or "=" in text or " " in text:
        return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
    return text


def _encode_value(key: str, value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return f"{value}i"
        if 0 <= value <= _UINT64_MAX:
            return f"{value}u"
        raise ValueError(f"integer value of field {_show(key)} does not fit in 64 bits")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"float value of field {_show(key)} is {value!r}, which line protocol cannot represent")
        return repr(value)
    if isinstance(value, str):
        if "\n" in value:
            raise ValueError(f"string value of field {_show(key)} contains a newline, which cannot be sent")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"value of field {_show(key)} has unsupported type {type(value).__name__}")


def encode_line(line: Line, precision: str = "ms") -> str:
    """Encode ``line`` as one line of line protocol, without a trailing newline.

    The inverse of :func:`parse_line`: ``parse_line(encode_line(p, prec), prec) == p`` for
    every valid point with sorted, unique tag keys (``time_ms`` is floored to whole seconds
    for ``precision="s"``). Integers are written with ``i`` (or ``u`` above the int64 range),
    floats with ``repr``. Raises ``ValueError`` for a point that line protocol cannot carry:
    no fields, empty or duplicate keys, empty tag values, names ending in a backslash, a
    measurement starting with ``#``, newlines, non-finite floats or integers beyond 64 bits.
    """
    precision_ns = _precision_ns(precision)
    _check_name("measurement", line.measurement)
    if line.measurement[0] == "#":
        raise ValueError(f"measurement {_show(line.measurement)} starts with '#', which would make a comment")
    parts = [line.measurement.replace(",", "\\,").replace(" ", "\\ ")]
    seen: set[str] = set()
    for key, val in line.tags:
        _check_name("tag key", key)
        _check_name(f"value of tag {_show(key)}", val)
        if key in seen:
            raise ValueError(f"duplicate tag key {_show(key)}")
        seen.add(key)
        parts.append(",")
        parts.append(_escape_key(key))
        parts.append("=")
        parts.append(_escape_key(val))
    if not line.fields:
        raise ValueError("a line needs at least one field")
    seen.clear()
    sep = " "
    for key, value in line.fields:
        _check_name("field key", key)
        if key in seen:
            raise ValueError(f"duplicate field key {_show(key)}")
        seen.add(key)
        parts.append(sep)
        parts.append(_escape_key(key))
        parts.append("=")
        parts.append(_encode_value(key, value))
        sep = ","
    if line.time_ms is not None:
        ns = line.time_ms * _NS_PER_MS
        stamp = ns // precision_ns
        # Flooring to a coarser precision can step below the range at its very bottom.
        if ns > _INT64_MAX or stamp * precision_ns < _INT64_MIN:
            raise ValueError(f"time_ms {line.time_ms} is out of range ({_TIME_RANGE})")
        parts.append(" ")
        parts.append(str(stamp))
    return "".join(parts)
