"""Influx line protocol: one pure parser (no I/O), the grammar Telegraf accepts.

::

    measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]

The grammar is Telegraf's (its ``influx`` parser, the one its inputs use); where InfluxData's
parsers disagree with each other we follow Telegraf, and where livedata differs from Telegraf it
says so below. ``tests/corpus/`` checks it against InfluxData's own parser test cases.

* Whitespace between sections is one or more of space, tab, vertical tab and form feed; it may
  also lead and trail a line. Lines end with ``\\n`` or ``\\r\\n``.
* Blank lines and comments (``#`` as the first non-blank character) are skipped; a body of only
  those is valid and holds no points.
* Measurement: a backslash escapes ``,`` and space; ``\\`` plus any other character is kept as
  is (``\\\\`` stays two backslashes). It cannot start with ``#``.
* Tag keys, tag values and field keys: a backslash escapes ``,``, ``=`` and space and is kept
  before anything else. Tag values may not hold a bare ``=``; in tags ``\\\\`` is a backslash
  followed by whatever the second backslash starts (so ``a\\\\ b`` is ``a\\ b``).
  (Telegraf also turns ``\\"`` into ``"`` in keys, but only in keys that hold an escaped space,
  comma or ``=``; livedata keeps ``\\"`` as written, as InfluxDB 1.x and 2.x do.)
* Field values: floats (``1``, ``-1.5``, ``1.``, ``.5``, ``1e-3``), integers ``12i`` and
  unsigned integers ``12u`` (no leading zeros, 64 bits), booleans (``t T true True TRUE f F
  false False FALSE``) and double-quoted strings. In a string ``\\"`` is a quote and ``\\\\`` a
  backslash; a backslash before anything else is an error; newlines are allowed (a string may
  span lines). Out-of-range numbers are errors.
* A repeated tag key or field key in one line keeps its first place and takes the last value.
* Timestamp: optional, up to 19 digits with an optional ``-``, in the request's precision. It
  must fit a 64-bit count of nanoseconds (years 1677 to 2262) once converted: an error where
  Telegraf would silently wrap around. It becomes epoch milliseconds (floor division).
* Names (measurement, tag keys and values, field keys) must not hold control characters
  (see :mod:`livedata.core.names`), where Telegraf takes any byte but tab, newline, vertical
  tab, form feed and carriage return; lengths are capped by :mod:`livedata.core.limits`.
  The body must be UTF-8 (:func:`decode`): an invalid byte is an error naming its line and
  column, and a leading byte-order mark is dropped.

Errors are :class:`LineProtocolError` with a 1-based line and column (characters of that line
as sent). Parsing is all or nothing.

Implementation, three paths that read the same grammar (one module, about 1,000 lines, so that the
grammar has one home; the tests hold the three to each other). A body without backslashes, double
quotes, tabs or carriage returns whose lines are ``head field=value timestamp`` (what most
producers send) is read a slice of lines at a time with whole-list operations
(:meth:`TableParser._plain`): little Python work per line, about twice the line path's speed. It
only accepts; anything it does not recognise sends the rest of the body to the line path. There a
line without a backslash or a double quote takes a ``str.split`` fast path; everything else, and
every line that path does not accept, goes through the scanner, which works on the whole body (so
a string can cross a newline) and is the only place errors are raised. All call the same value
grammar (:func:`_value`) and the same head scanner (measurement and tags, cached per distinct
head). ``tests/unit/test_lineprotocol.py`` checks the three against each other and against a
reference built from the scanner alone.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate, chain, compress, islice, repeat
from operator import add, contains, floordiv, mul, ne
from typing import Annotated, Final, TypeAlias

import msgspec

from livedata.core.limits import MAX_CHANNEL_CHARS, MAX_FIELD_CHARS, MAX_LABELS
from livedata.core.names import name_problem, show

__all__ = [
    "PRECISIONS",
    "Column",
    "Line",
    "LineProtocolError",
    "Table",
    "TableParser",
    "Value",
    "decode",
    "parse",
    "parse_tables",
]

Value: TypeAlias = float | int | str | bool
"""A field value: ``float``, ``int`` (from ``i`` and ``u`` integers), ``str`` or ``bool``."""

PRECISIONS: Final[dict[str, int]] = {
    "ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
"""Timestamp precisions, in nanoseconds per unit (``m`` and ``h`` for InfluxDB 1.x's write API)."""

PARSE_SLICE_LINES: Final = 2048
"""Lines :meth:`TableParser.slices` parses between two pauses (about 5 ms of work: two pushes
parsed at once, and the requests served between their slices, stay well inside one 50 ms step)."""

SERIES_COST: Final = 8
"""What a line that starts a new series (a tag set not seen in the body) counts for in a slice, in
plain lines: its head is parsed and its series and columns made. 8,000 lines of distinct tag sets
held the loop 90 ms in one slice of 4,096 lines; counted so, a slice is again about 5 ms."""

_UNIT_NAMES: Final[dict[int, str]] = {
    1: "nanoseconds",
    1_000: "microseconds",
    1_000_000: "milliseconds",
    1_000_000_000: "seconds",
    60_000_000_000: "minutes",
    3_600_000_000_000: "hours",
}
_NS_PER_MS: Final = 1_000_000
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_INF: Final = float("inf")
_FLOAT_CHARS: Final = "0123456789.-+eE"
"""Within these characters ``float()`` accepts exactly line protocol's floats plus a leading '+'."""

_NOT_PLAIN: Final = ("\\", '"', "\r", "\t", "\v", "\f")
"""A body holding one of these is read line by line (see :meth:`TableParser._plain`)."""
_NOT_FLOAT: Final = str.maketrans("", "", _FLOAT_CHARS + ",")
_NOT_STAMP: Final = str.maketrans("", "", "0123456789-,")
_FLOATS: Final = msgspec.json.Decoder(list[float])


def _plain_candidate(text: str) -> bool:
    """Whether the plain path is worth trying on ``text``: no character it leaves to the line
    path, and a first line of one field. (Lines of several fields cost it as much per field as
    the line path, which then wins on the rest: measured, 5 to 25 % slower for Telegraf's
    ``cpu``, so such bodies go straight to the line path.)"""
    if any(map(contains, repeat(text), _NOT_PLAIN)):
        return False
    end = text.find("\n")
    parts = text[:end if end >= 0 else len(text)].split(" ")
    return len(parts) == 3 and "," not in parts[1]


@functools.cache
def _stamps_decoder(precision_ns: int) -> msgspec.json.Decoder[list[int]]:
    """Reads a JSON array of timestamps in ``precision_ns``, each in range once converted."""
    stamp = Annotated[int, msgspec.Meta(ge=-((-_INT64_MIN) // precision_ns), le=_INT64_MAX // precision_ns)]
    return msgspec.json.Decoder(list[stamp])


_PLAIN_NEW_HEADS: Final = 8
"""The plain path leaves a slice with more than 1/8 of its lines starting a series (or more than
this many new measurements) to the line path, which counts such lines as SERIES_COST."""

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
_WS: Final = " \t\v\f"

# The scanner's tokens (Telegraf's grammar). Possessive quantifiers make "backslash + escaped
# character" an indivisible unit that is never re-read as a backslash followed by a separator.
_WS_RE: Final = re.compile(r"[ \t\v\f]*+")
_MEASUREMENT_RE: Final = re.compile(r"(?:[^\t\n\v\f\r ,\\#]|\\[^\t\n\v\f\r])(?:[^\t\n\v\f\r ,\\]|\\[^\t\n\v\f\r])*+")
_TAG_RE: Final = re.compile(r"(?:[^\t\n\v\f\r ,=\\]|\\[^\t\n\v\f\r\\]|\\(?=\\))*+")
_FIELD_KEY_RE: Final = re.compile(r"(?:[^\t\n\v\f\r ,=\\]|\\[^\t\n\v\f\r])*+")
_STRING_RE: Final = re.compile(r'"((?:[^"\\]|\\["\\])*+)"')
_STRING_BODY_RE: Final = re.compile(r'(?:[^"\\]|\\["\\])*+')
_VALUE_TOKEN_RE: Final = re.compile(r"[^\t\n\v\f\r ,]*+")
_STAMP_TOKEN_RE: Final = re.compile(r"[^\t\n\v\f\r ]*+")
_STAMP_RE: Final = re.compile(r"-?[0-9]{1,19}")

_unescape_measurement: Final = re.compile(r"\\([, ])").sub
_unescape_key: Final = re.compile(r"\\([, =])").sub
_unescape_string: Final = re.compile(r'\\(["\\])').sub


class LineProtocolError(ValueError):
    """A body that is not valid line protocol.

    ``line`` and ``column`` are 1-based (the column counts characters of the line as sent,
    leading whitespace included); ``reason`` is the message without the ``line N:`` prefix.
    ``str(err)`` reads e.g. ``line 3, column 15: invalid field value 'abc' for field 'temp' (...)``.
    """

    line: int
    column: int
    reason: str

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[type[LineProtocolError], tuple[str, int, int]]:
        return (type(self), (self.reason, self.line, self.column))


class _Bad(Exception):
    """Internal: the scanner's error, at an absolute index of the body."""

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.index = index


class _BadValue(Exception):
    """Internal: a field value token is invalid; ``args[0]`` says why."""


def _error_at(text: str, index: int, reason: str) -> LineProtocolError:
    """A LineProtocolError for ``text[index]``, its line and column counted from the body."""
    line = text.count("\n", 0, index) + 1
    return LineProtocolError(reason, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _precision_ns(precision: str) -> int:
    try:
        return PRECISIONS[precision]
    except (KeyError, TypeError):
        raise ValueError(f"unknown precision {precision!r} (expected one of ns, us, ms, s, m, h)") from None


def decode(data: bytes) -> str:
    """A request body as text: UTF-8, a leading byte-order mark dropped.

    Raises :class:`LineProtocolError` at the first byte that is not UTF-8, with its line and
    column (in characters, as a decoder that replaced the bad bytes would count them).
    """
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = data.rfind(b"\n", 0, start) + 1
        column = len(data[line_start:start].decode(errors="replace")) + 1
        raise LineProtocolError(
            f"invalid UTF-8: byte 0x{data[start]:02x} cannot start or continue a character "
            "(line protocol must be UTF-8 text)",
            data.count(b"\n", 0, start) + 1,
            column,
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


@dataclass(frozen=True, slots=True)
class Line:
    """One point: measurement, tags sorted by key, fields in the order given, time in epoch ms.

    ``time_ms`` is ``None`` when the line had no timestamp (the caller uses its own clock).
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, Value], ...]
    time_ms: int | None


# ---------------------------------------------------------------------------------------------
# The grammar


def _value(token: str) -> Value:
    """A field value token that is not a string to its value; raises ``_BadValue(reason)``.

    The one definition of the value grammar (both the fast path and the scanner call it). No
    regular expressions: the character-set checks leave ``float()``/``int()`` only inputs they
    read exactly as line protocol does.
    """
    if not token.strip(_FLOAT_CHARS):
        # Within these characters float() accepts exactly line protocol's floats plus a leading '+'.
        if token[:1] != "+":
            try:
                f = float(token)
            except ValueError:
                raise _BadValue("invalid") from None
            if f == _INF or f == -_INF:
                raise _BadValue("out of range for a 64-bit float")
            return f
        raise _BadValue("invalid")
    last = token[-1]
    if last == "i" or last == "u":
        digits = token[:-1]
        if digits.strip("0123456789-" if last == "i" else "0123456789"):
            raise _BadValue("invalid")
        magnitude = digits[1:] if digits[:1] == "-" else digits
        if not magnitude or (magnitude[0] == "0" and len(magnitude) > 1) or "-" in magnitude:
            raise _BadValue("invalid")  # no sign alone, no leading zeros, no inner '-'
        n = int(digits)
        if last == "i":
            if n < _INT64_MIN or n > _INT64_MAX:
                raise _BadValue("out of range for a 64-bit signed integer")
        elif n > _UINT64_MAX:
            raise _BadValue("out of range for a 64-bit unsigned integer")
        return n
    b = _BOOLS.get(token)
    if b is None:
        raise _BadValue("invalid")
    return b


def _check_name(name: str, raw: str, what: str, start: int, limit: int = MAX_FIELD_CHARS) -> None:
    """Raise _Bad unless ``name`` (read from ``raw`` at ``start``) is an allowed name."""
    if len(name) > limit:
        raise _Bad(f"{what} {show(name, 40)} is {len(name)} characters long; the limit is {limit}", start)
    problem = name_problem(raw)
    if problem is not None:
        raise _Bad(f"{what} {show(name, 40)} holds {problem[1]}", start + problem[0])


_Head: TypeAlias = tuple[str, tuple[tuple[str, str], ...]]


def _scan_head(text: str, i: int) -> tuple[str, tuple[tuple[str, str], ...], int]:
    """Scan ``measurement[,k=v...]`` from ``text[i]``; returns it and the index after it."""
    n = len(text)
    m = _MEASUREMENT_RE.match(text, i)
    if m is None:
        c = text[i]
        if c == ",":
            raise _Bad("missing measurement name before ','", i)
        raise _Bad(f"a measurement name cannot start with {c!r}", i)
    raw = m.group()
    measurement = _unescape_measurement(r"\1", raw) if "\\" in raw else raw
    _check_name(measurement, raw, "measurement name", i, MAX_CHANNEL_CHARS)
    j = m.end()
    if j >= n or text[j] != ",":
        return measurement, (), j
    tags: dict[str, str] = {}
    while j < n and text[j] == ",":
        key_start = j + 1
        m = _TAG_RE.match(text, key_start)
        assert m is not None  # the pattern matches the empty string
        raw = m.group()
        j = m.end()
        if not raw:
            raise _Bad("empty tag key", key_start)
        key = _unescape_key(r"\1", raw) if "\\" in raw else raw
        _check_name(key, raw, "tag key", key_start)
        if j >= n or text[j] != "=":
            raise _Bad(f"missing '=' after tag key {show(key, 40)}", j)
        val_start = j + 1
        m = _TAG_RE.match(text, val_start)
        assert m is not None
        raw = m.group()
        j = m.end()
        if not raw:
            raise _Bad(f"empty value for tag {show(key, 40)}", val_start)
        if j < n and text[j] == "=":
            raise _Bad(f"unescaped '=' in the value of tag {show(key, 40)} (write it as \\=)", j)
        value = _unescape_key(r"\1", raw) if "\\" in raw else raw
        _check_name(value, raw, f"value of tag {show(key, 40)}", val_start)
        tags[key] = value  # a repeated key takes the last value, as in Telegraf
        if len(tags) > MAX_LABELS:
            raise _Bad(f"more than {MAX_LABELS} tags in one line", key_start)
    return measurement, tuple(sorted(tags.items())), j


def _eol(text: str, j: int) -> int:
    """If ``text[j]`` ends the line, the index of its ``\\n`` (or len(text)); else -1."""
    n = len(text)
    if j >= n:
        return n
    c = text[j]
    if c == "\n":
        return j
    if c == "\r" and (j + 1 == n or text[j + 1] == "\n"):
        return j + 1
    return -1


_Point: TypeAlias = tuple[str, tuple[tuple[str, str], ...], dict[str, Value], int | None]


def _scan(text: str, i: int, precision_ns: int) -> tuple[_Point | None, int]:
    """Scan the line that starts at ``text[i]``: its point (None for a blank or comment line)
    and the index of the ``\\n`` that ends it (``len(text)`` for the last line). Strings may
    span lines. Raises ``_Bad`` at the first error."""
    n = len(text)
    if i < n and text[i] in _WS:
        i = _WS_RE.match(text, i).end()  # type: ignore[union-attr]
    end = _eol(text, i)
    if end >= 0:
        return None, end
    if text[i] == "#":
        end = text.find("\n", i)
        return None, n if end < 0 else end
    # Most heads were seen before: try the text up to the first space as a whole, cached head.
    space = text.find(" ", i, i + _HEAD_CACHE_MAX_LEN + 1)
    head = _HEAD_CACHE.get(text[i:space]) if space > i else None
    if head is None and space > i:
        head = _cached_head(text[i:space])
    if head is not None:
        measurement, tags = head
        j = space
    else:
        measurement, tags, j = _scan_head(text, i)
    if j >= n or text[j] not in _WS:
        if _eol(text, j) >= 0:
            raise _Bad("missing fields (expected a space and then field_key=value)", j)
        raise _Bad(f"unexpected {text[j]!r} after the measurement and tags (expected a space and then fields)", j)
    j += 1
    if j < n and text[j] in _WS:
        j = _WS_RE.match(text, j).end()  # type: ignore[union-attr]
    if _eol(text, j) >= 0:
        raise _Bad("missing fields (expected field_key=value after the space)", j)

    fields: dict[str, Value] = {}
    while True:
        key_start = j
        m = _FIELD_KEY_RE.match(text, j)
        assert m is not None
        raw = m.group()
        j = m.end()
        if not raw:
            if j < n and text[j] not in ",=" and _eol(text, j) < 0:
                raise _Bad(f"a field key cannot start with {text[j]!r}", j)
            raise _Bad("empty field key", j)
        key = _unescape_key(r"\1", raw) if "\\" in raw else raw
        if key not in _GOOD_KEYS:
            _check_name(key, raw, "field key", key_start)
            if len(_GOOD_KEYS) >= _HEAD_CACHE_MAX:
                _GOOD_KEYS.clear()
            _GOOD_KEYS.add(key)
        if j >= n or text[j] != "=":
            raise _Bad(f"missing '=' and value after field key {show(key, 40)}", j)
        j += 1
        value: Value
        if j < n and text[j] == '"':
            m = _STRING_RE.match(text, j)
            if m is None:
                stop = _STRING_BODY_RE.match(text, j + 1).end()  # type: ignore[union-attr]
                if stop >= n:
                    raise _Bad(f'unterminated string value for field {show(key, 40)} (missing closing ")', j)
                raise _Bad(f"a backslash in the string value of field {show(key, 40)} must be followed by "
                           '" or \\ (write \\\\ for a backslash)', stop)
            raw = m.group(1)
            value = _unescape_string(r"\1", raw) if "\\" in raw else raw
            j = m.end()
            if j < n and text[j] != "," and text[j] not in _WS and _eol(text, j) < 0:
                raise _Bad(f"unexpected {text[j]!r} after the string value of field {show(key, 40)}", j)
        else:
            m = _VALUE_TOKEN_RE.match(text, j)
            assert m is not None
            token = m.group()
            if not token:
                raise _Bad(f"missing value for field {show(key, 40)}", j)
            try:
                value = _value(token)
            except _BadValue as exc:
                if exc.args[0] == "invalid":
                    raise _Bad(f"invalid field value {show(token, 40)} for field {show(key, 40)} "
                               f"({_EXPECTED_VALUE})", j) from None
                raise _Bad(f"field value {show(token, 40)} for field {show(key, 40)} is {exc.args[0]}", j) from None
            j = m.end()
        fields[key] = value  # a repeated key keeps its place and takes the last value, as in Telegraf
        if j < n and text[j] == ",":
            j += 1
            continue
        break

    time_ms: int | None = None
    end = _eol(text, j)
    if end < 0:
        if text[j] not in _WS:
            raise _Bad(f"unexpected {text[j]!r} after the value of field {show(key, 40)}", j)
        j = _WS_RE.match(text, j).end()  # type: ignore[union-attr]
        end = _eol(text, j)
        if end < 0:
            m = _STAMP_TOKEN_RE.match(text, j)
            assert m is not None
            stamp = m.group()
            if _STAMP_RE.fullmatch(stamp) is None:
                raise _Bad(f"invalid timestamp {show(stamp, 40)} (expected an integer number of "
                           f"{_UNIT_NAMES[precision_ns]}, at most 19 digits)", j)
            ns = int(stamp) * precision_ns
            if ns < _INT64_MIN or ns > _INT64_MAX:
                raise _Bad(f"timestamp {show(stamp, 40)} is out of range ({_TIME_RANGE})", j)
            time_ms = ns // _NS_PER_MS
            j = _WS_RE.match(text, m.end()).end()  # type: ignore[union-attr]
            end = _eol(text, j)
            if end < 0:
                stop = text.find("\n", j)
                raise _Bad(f"unexpected text {show(text[j:stop if stop >= 0 else n], 40)} after the timestamp", j)
    return (measurement, tags, fields, time_ms), end


_GOOD_KEYS: Final[set[str]] = set()
"""Field keys the scanner found allowed (bounded like the head cache)."""

# Measurement + tag set of recently seen heads: series repeat from one push to the next, so most
# lines skip tag parsing. Cleared wholesale when full; long heads are not cached, so the cache
# stays small (at most about 8192 * 256 characters).
_HEAD_CACHE: Final[dict[str, _Head]] = {}
_HEAD_CACHE_MAX: Final = 8192
_HEAD_CACHE_MAX_LEN: Final = 256


def _cached_head(head: str) -> _Head | None:
    """Measurement and sorted tags of a whole head string, or None if it is not one."""
    parsed = _HEAD_CACHE.get(head)
    if parsed is None:
        try:
            measurement, tags, end = _scan_head(head, 0)
        except _Bad:
            return None
        if end != len(head):
            return None
        parsed = (measurement, tags)
        if len(head) <= _HEAD_CACHE_MAX_LEN:
            if len(_HEAD_CACHE) >= _HEAD_CACHE_MAX:
                _HEAD_CACHE.clear()
            _HEAD_CACHE[head] = parsed
    return parsed


# ---------------------------------------------------------------------------------------------
# Tables: the ingest path

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
    """Per-body state of one head: its table, tags and columns by field key."""

    __slots__ = ("columns", "table", "tags")

    def __init__(self, table: Table, tags: tuple[tuple[str, str], ...]) -> None:
        self.table = table
        self.tags = tags
        self.columns: dict[str, Column] = {}


class TableParser:
    """Parses line protocol into one :class:`Table` per measurement (or, with ``keep_points``,
    into :class:`Line` points only).

    Table mode adds one rule to the grammar: a field of one series whose values change kind
    within the body (``v=1`` then ``v="x"``) is an error naming that line, since a channel's
    field keeps one type. ``tables`` come in order of first appearance. After an error the
    parser is spent.
    """

    def __init__(self, precision: str = "ns", *, keep_points: bool = False, plain: bool = True) -> None:
        self.precision_ns = _precision_ns(precision)
        self.plain = plain and not keep_points
        """Whether plain bodies take the whole-slice path (tests compare it with the line path)."""
        self.tables: list[Table] = []
        self.points: list[Line] | None = [] if keep_points else None
        self.lines = 0
        """Points (lines that are not blank or comments) parsed so far."""
        self.made = 0
        """Columns made so far (one per series and field key): what a body costs beyond its lines."""
        self._tables: dict[str, Table] = {}
        self._heads: dict[object, _Series] = {}

    def parse(self, text: str) -> list[Table]:
        """Parse a whole body (all or nothing); returns :attr:`tables`."""
        for _ in self.slices(text, 1 << 62):
            pass
        return self.tables

    def slices(self, text: str, size: int = PARSE_SLICE_LINES) -> Iterator[int]:
        """Parse ``text``, pausing after every ``size`` lines to yield the points parsed so far.

        A caller on an event loop yields to it at each pause. Raises :class:`LineProtocolError`.
        """
        lines = text.split("\n")
        start = 0
        if self.plain and _plain_candidate(text):
            total = len(lines) - (not lines[-1])  # not the empty "line" after the body's final newline
            while start < total:
                stop = min(total, start + size)
                if not self._plain(lines, start, stop):
                    break  # the line path reads the rest (and says what is wrong, if anything)
                start = stop
                if start < total:
                    yield self.lines
            if start >= total:
                return
        precision_ns = self.precision_ns
        # The timestamp bounds in the request's unit: ns = stamp * precision_ns must fit an int64.
        lo = -((-_INT64_MIN) // precision_ns)
        hi = _INT64_MAX // precision_ns
        tables = self._tables
        heads = self._heads
        ordered = self.tables
        points = self.points
        kinds = _KIND
        value_of = _value
        float_chars = _FLOAT_CHARS
        inf = _INF
        ns_per_ms = _NS_PER_MS
        bad_value = _BadValue
        head_cache = _HEAD_CACHE
        count = self.lines
        skip_to = 0  # lines before this one were read as part of an earlier line's string
        mark_k = mark_offset = 0  # a line whose offset in ``text`` is known
        spent = 0  # work since the last pause, in plain lines (a new series costs more: SERIES_COST)
        for k, line in enumerate(islice(lines, start, None), start):
            if spent >= size:
                spent = 0
                self.lines = count
                yield count
            spent += 1
            if k < skip_to:
                continue
            fields: dict[str, Value] | None = None
            series: _Series | None = None
            t: int | None = None
            fast = False
            if line and "\\" not in line and '"' not in line:
                # The fast path: a plain line, split on single spaces. It leaves ``fields``
                # None for anything unusual; the scanner then reads the line (or says why not).
                if line[-1] == "\r":
                    line = line[:-1]
                parts = line.split(" ")
                n = len(parts)
                if n == 3:
                    head, fieldset, stamp = parts
                    if 0 < len(stamp) <= 19 and not stamp.strip("0123456789-"):
                        try:
                            raw_t = int(stamp)
                        except ValueError:
                            raw_t = hi + 1
                        if lo <= raw_t <= hi:
                            t = raw_t * precision_ns // ns_per_ms
                            series = heads.get(head)
                elif n == 2:
                    head, fieldset = parts
                    series = heads.get(head)
                else:
                    head = fieldset = ""
                if series is None and head and (n == 2 or t is not None):
                    parsed = head_cache.get(head) or _cached_head(head)
                    if parsed is not None:
                        measurement = parsed[0]
                        table = tables.get(measurement)
                        if table is None:
                            table = tables[measurement] = Table(measurement, k + 1, [], {})
                            ordered.append(table)
                        series = heads[head] = _Series(table, parsed[1])
                        spent += SERIES_COST
                if series is not None and fieldset:
                    fields = {}
                    for chunk in fieldset.split(","):
                        key, _, val = chunk.partition("=")
                        if not key or not val:
                            fields = None
                            break
                        if not val.strip(float_chars) and val[0] != "+":  # _value's float case, inlined
                            try:
                                f = float(val)
                            except ValueError:
                                fields = None
                                break
                            if f == inf or f == -inf:
                                fields = None  # the scanner says why
                                break
                            fields[key] = f
                            continue
                        try:
                            fields[key] = value_of(val)
                        except bad_value:
                            fields = None
                            break
                    fast = True
            if fields is None or series is None:
                # The scanner, on the body from this line's start.
                if mark_k != k:
                    mark_offset += sum(map(len, lines[mark_k:k])) + (k - mark_k)
                    mark_k = k
                try:
                    point, end = _scan(text, mark_offset, precision_ns)
                except _Bad as exc:
                    raise _error_at(text, exc.index, exc.reason) from None
                if end > mark_offset + len(lines[k]):  # a string crossed newlines
                    skip_to = k + 1 + text.count("\n", mark_offset, end)
                    mark_k, mark_offset = skip_to, end + 1
                if point is None:
                    continue
                measurement, tags, fields, t = point
                head_key = (measurement, tags)
                series = heads.get(head_key)
                if series is None:
                    table = tables.get(measurement)
                    if table is None:
                        table = tables[measurement] = Table(measurement, k + 1, [], {})
                        ordered.append(table)
                    series = heads[head_key] = _Series(table, tags)
                    spent += SERIES_COST
            count += 1
            if points is not None:
                if fast:
                    self._check_keys(fields, text, lines, k)
                points.append(Line(series.table.measurement, series.tags, tuple(fields.items()), t))
                continue

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
                    # The first value of this field in this series: the fast path did not
                    # look at the key's characters, so check them now (once per body).
                    if fast:
                        self._check_keys({key: value}, text, lines, k)
                    kind = kinds[type(value)]
                    col = table.columns.get((series.tags, key))
                    if col is None:
                        col = table.columns[(series.tags, key)] = Column(series.tags, key, kind, [], [])
                        self.made += 1
                    cols[key] = col
                if kinds[type(value)] != col.kind:
                    raise LineProtocolError(
                        f"field {show(key, 40)} is a {kinds[type(value)]} here but a {col.kind} earlier "
                        "in the body (a field keeps one type)",
                        k + 1,
                        _key_column(lines[k], key),
                    )
                col.rows.append(row)
                col.values.append(value)
        self.lines = count

    def _plain(self, lines: list[str], a: int, b: int) -> bool:
        """Read and commit ``lines[a:b]`` of a body without backslashes, double quotes, tabs and
        carriage returns, if every line is ``head fields timestamp`` with single spaces and all of
        it is valid; else commit nothing and return False (the line path then reads these lines,
        and reports). The lines are joined and split again on spaces with each ``\\n`` a token
        of its own: a line of that shape is four tokens, the fourth ``\\n``.

        Whole-list operations do the per-line work (splits, joins, msgspec's number parsing, the
        maps), so the Python work left is per series and per column, not per line. The result is
        exactly the line path's: tests compare the two on generated bodies.
        """
        m = b - a
        toks = "\n".join(islice(lines, a, b)).replace("\n", " \n ").split(" ")
        if len(toks) != 4 * m - 1 or toks[3::4].count("\n") != m - 1:
            return False  # blank lines, comments, no timestamp, runs of spaces: the line path
        heads = toks[0::4]
        fieldsets = toks[1::4]
        stamps = toks[2::4]
        if "" in heads:
            return False

        # Timestamps: what _STAMP_RE accepts, in range once converted. As JSON (digits and '-'
        # only) msgspec reads them and checks the range; leading zeros are not JSON, int() reads them.
        joined = ",".join(stamps)
        if joined.translate(_NOT_STAMP):
            return False
        p = self.precision_ns
        try:
            raw = _stamps_decoder(p).decode("[" + joined + "]")
        except msgspec.DecodeError:  # leading zeros, out of range, or not a number at all
            if max(map(len, stamps)) > 19:
                return False
            try:
                raw = list(map(int, stamps))
            except ValueError:
                return False
            if min(raw) < -((-_INT64_MIN) // p) or max(raw) > _INT64_MAX // p:
                return False
        if len(raw) != m:
            return False  # a ',' in a timestamp
        times: list[int] = (
            list(map(floordiv, raw, repeat(_NS_PER_MS // p))) if p < _NS_PER_MS
            else list(map(mul, raw, repeat(p // _NS_PER_MS))) if p > _NS_PER_MS
            else raw
        )

        # Fields: every ``key=value`` pair holds exactly one '=' (no strings: no quotes).
        fields_text = ",".join(fieldsets)
        n = fields_text.count(",") + 1
        pairs = fieldsets if n == m else fields_text.split(",")
        if fields_text.count("=") != n or not all(map(contains, pairs, repeat("="))):
            return False
        kv = fields_text.replace(",", "=").split("=")
        keys = kv[0::2]
        vals = kv[1::2]
        if "" in keys or "" in vals:
            return False
        values: list[Value]
        joined = ",".join(vals)
        floats = not joined.translate(_NOT_FLOAT) and "=+" not in fields_text
        if floats:
            # Within _FLOAT_CHARS and without a leading '+', float() reads exactly what _value does.
            # msgspec reads JSON's numbers as float() does (checked in tests), several times faster;
            # the rest (1., .5, 01, out of range) is read by float() itself.
            try:
                values = _FLOATS.decode("[" + joined + "]")  # type: ignore[assignment]
                if "=-0" in fields_text and 0.0 in values:
                    raise ValueError  # JSON's -0 is msgspec's 0.0; float("-0") is -0.0
            except (msgspec.DecodeError, ValueError):
                try:
                    values = list(map(float, vals))
                except ValueError:
                    return False
            if _INF in values or -_INF in values:
                return False
        else:
            # Integers, booleans: each distinct token read once (producers repeat 0i, true, ...).
            distinct = list(dict.fromkeys(vals))
            try:
                memo = dict(zip(distinct, map(_value, distinct), strict=True))
            except _BadValue:
                return False
            values = list(map(memo.__getitem__, vals))
        line_of: list[int] | range = range(m)  # the line of each pair
        if n != m:
            per_line = list(map(add, map(str.count, fieldsets, repeat(",")), repeat(1)))
            line_of = list(chain.from_iterable(map(repeat, range(m), per_line)))
            if len(set(zip(line_of, keys, strict=True))) != n:
                return False  # a key repeated in one line: the line path keeps the last value
        key_index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        for key in key_index:
            if key not in _GOOD_KEYS:
                if len(key) > MAX_FIELD_CHARS or name_problem(key) is not None:
                    return False
                if len(_GOOD_KEYS) >= _HEAD_CACHE_MAX:
                    _GOOD_KEYS.clear()
                _GOOD_KEYS.add(key)

        # Heads: series (known, or made here), tables, and one id per column owner.
        known = self._heads
        here: dict[str, _Series] = {}
        made: dict[str, _Series] = {}
        new_tables: dict[str, Table] = {}
        for head in dict.fromkeys(heads):
            series = known.get(head)
            if series is None:
                if (len(made) + 1) * _PLAIN_NEW_HEADS > max(m, 64):
                    return False  # series-heavy: the line path paces it
                parsed = _HEAD_CACHE.get(head) or _cached_head(head)
                if parsed is None:
                    return False
                measurement = parsed[0]
                table = self._tables.get(measurement) or new_tables.get(measurement)
                if table is None:
                    if len(new_tables) >= _PLAIN_NEW_HEADS:
                        return False
                    table = new_tables[measurement] = Table(measurement, a + heads.index(head) + 1, [], {})
                series = made[head] = _Series(table, parsed[1])
            here[head] = series
        owners: dict[tuple[int, tuple[tuple[str, str], ...]], int] = {}  # (table, tags): another
        owner_of = {head: owners.setdefault((id(s.table), s.tags), len(owners))  # spelling of a head
                    for head, s in here.items()}                                # shares its columns
        line_owner = list(map(owner_of.__getitem__, heads))
        sers = list(map(here.__getitem__, heads))

        # Columns: pairs grouped by (owner, key); each group one kind, as its column's.
        nk = len(key_index)
        pair_owner = line_owner if n == m else list(map(line_owner.__getitem__, line_of))
        gids = pair_owner if nk == 1 else list(map(add, map(mul, pair_owner, repeat(nk)),
                                                       map(key_index.__getitem__, keys)))
        counts = Counter(gids)
        order = sorted(range(n), key=gids.__getitem__) if len(counts) > 1 else range(n)
        key_list = list(key_index)
        groups: list[tuple[int, Table, tuple[tuple[str, str], ...], str, str, list[int] | range]] = []
        pos = 0
        for gid in sorted(counts):
            idx = order[pos:pos + counts[gid]]
            pos += counts[gid]
            first = idx[0]
            series = sers[line_of[first]]
            key = key_list[gid % nk]
            if floats:
                kind = "number"
            else:
                types = set(map(type, map(values.__getitem__, idx)))
                kind = _KIND[types.pop()]
                if any(_KIND[t] != kind for t in types):
                    return False  # a kind change: the line path names the line
            col = series.table.columns.get((series.tags, key))
            if col is not None and col.kind != kind:
                return False
            groups.append((first, series.table, series.tags, key, kind, idx))
        groups.sort(key=lambda g: g[0])  # columns are made in order of their first value

        # Rows, by the line path's rule: a line starts a new row unless it has its table's last
        # time and none of its columns has a value in that row yet. Lines of one table with one
        # time make a run; when no series appears twice in a run (a gather: cpu0, cpu1, ... at
        # one time), each run is one row and nothing is done line by line. Otherwise, and when a
        # slice's first line might join the last row of the slice before, the rule is applied
        # line by line (_commit_lines).
        if len({id(s.table) for s in here.values()}) == 1:
            table_lines: list[tuple[Table, list[int] | range]] = [(sers[0].table, range(m))]
        else:
            by_table: dict[int, list[int]] = {}
            for i, s in enumerate(sers):
                by_table.setdefault(id(s.table), []).append(i)
            table_lines = [(sers[ls[0]].table, ls) for ls in by_table.values()]
        rows_list = [0] * m if len(table_lines) > 1 else []
        row_of_line: list[int] | range = rows_list
        appended: list[tuple[Table, list[int], int]] = []
        for table, ls in table_lines:
            tt = times if len(ls) == m else list(map(times.__getitem__, ls))
            base = len(table.times)
            if base and table.times[-1] == tt[0]:
                appended = []
                break
            starts = list(map(ne, tt, chain((None,), tt)))  # a line whose time differs from the one before
            rows: list[int] | range
            if starts.count(False):
                run = list(accumulate(starts))
                owners_here = line_owner if len(ls) == m else list(map(line_owner.__getitem__, ls))
                if len(set(zip(run, owners_here, strict=True))) != len(tt):
                    appended = []
                    break  # a series twice at one time: maybe two rows, maybe one
                rows = list(map(add, run, repeat(base - 1)))
                tt = list(compress(tt, starts))
            else:
                rows = range(base, base + len(tt))
            appended.append((table, tt, len(ls)))
            if rows_list:
                for i, r in zip(ls, rows, strict=True):
                    rows_list[i] = r
            else:
                row_of_line = rows

        # Commit: nothing below can fail.
        for table in new_tables.values():
            self._tables[table.measurement] = table
            self.tables.append(table)
        known.update(made)
        self.lines += m
        if not appended:
            self._commit_lines(sers, times, keys, values, line_of, groups)
            return True
        for table, tt, count in appended:
            table.times.extend(tt)
            table.lines += count
        row_of_pair = row_of_line if n == m else list(map(row_of_line.__getitem__, line_of))
        for _, table, tags, key, kind, idx in groups:
            col = table.columns.get((tags, key))
            if col is None:
                col = table.columns[(tags, key)] = Column(tags, key, kind, [], [])
                self.made += 1
            col.rows.extend(map(row_of_pair.__getitem__, idx))
            col.values.extend(map(values.__getitem__, idx))
        return True

    def _commit_lines(self, sers: list[_Series], times: list[int], keys: list[str], values: list[Value],
                      line_of: list[int] | range, groups: list[tuple[int, Table, tuple[tuple[str, str], ...],
                                                                  str, str, list[int] | range]]) -> None:
        """The plain path's commit when lines share rows: the line path's rule, line by line."""
        kind_of = {(id(g[1]), g[2], g[3]): g[4] for g in groups}
        made = 0
        pair = 0
        n = len(keys)
        for i, (series, t) in enumerate(zip(sers, times, strict=True)):
            end = pair + 1
            while end < n and line_of[end] == i:
                end += 1
            table = series.table
            columns = table.columns
            tags = series.tags
            tt = table.times
            row = len(tt) - 1
            if row < 0 or tt[row] != t:
                tt.append(t)
                row += 1
            else:
                for key in keys[pair:end]:
                    col = columns.get((tags, key))
                    if col is not None and col.rows[-1] == row:
                        tt.append(t)
                        row += 1
                        break
            table.lines += 1
            for key, value in zip(keys[pair:end], values[pair:end], strict=True):
                col = columns.get((tags, key))
                if col is None:
                    col = columns[(tags, key)] = Column(tags, key, kind_of[(id(table), tags, key)], [], [])
                    made += 1
                col.rows.append(row)
                col.values.append(value)
            pair = end
        self.made += made

    @staticmethod
    def _check_keys(fields: dict[str, Value], text: str, lines: list[str], k: int) -> None:
        """Raise the scanner's error for line ``k`` if a fast-path field key is not allowed."""
        for key in fields:
            if len(key) > MAX_FIELD_CHARS or name_problem(key) is not None:
                offset = sum(map(len, lines[:k])) + k
                try:
                    _scan(text, offset, 1)
                except _Bad as exc:
                    raise _error_at(text, exc.index, exc.reason) from None
                raise LineProtocolError(f"field key {show(key, 40)} is not allowed", k + 1, 1)  # pragma: no cover


def _key_column(line: str, key: str) -> int:
    """Best-effort column of field ``key`` in ``line`` (1 when it cannot be found as written)."""
    for sep in (" ", ",", "\t"):
        at = line.find(f"{sep}{key}=")
        if at >= 0:
            return at + 2
    return 1


def parse_tables(body: str, precision: str = "ns") -> list[Table]:
    """Parse a whole body into tables, one per measurement: all or nothing."""
    return TableParser(precision).parse(body)


def parse(body: str, precision: str = "ns") -> list[Line]:
    """Parse a whole body into points, in body order: all or nothing.

    Raises :class:`LineProtocolError` for the first invalid line (nothing is returned then)
    and ``ValueError`` for an unknown ``precision`` (``ns``, ``us``, ``ms`` or ``s``).
    """
    parser = TableParser(precision, keep_points=True)
    parser.parse(body)
    assert parser.points is not None
    return parser.points
