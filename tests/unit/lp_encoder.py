"""A line-protocol encoder for tests (round trips through the parser), as Telegraf's serializer writes.

Not part of livedata: the server only parses line protocol. Raises ValueError for a point that the
grammar cannot carry, so property tests can skip those.
"""

from __future__ import annotations

import math

from livedata.core.lineprotocol import PRECISIONS, Line, Value
from livedata.core.names import name_problem

_INT64 = 2**63


def _check(what: str, name: str, before_escape: str) -> None:
    if not name:
        raise ValueError(f"{what} must not be empty")
    if name_problem(name) is not None or any(c in name for c in "\t\n\v\f\r"):
        raise ValueError(f"{what} {name!r} holds a character names cannot hold")
    if name.endswith("\\"):
        raise ValueError(f"{what} {name!r} ends with a backslash, which line protocol cannot represent")
    if any(f"\\{c}" in name for c in before_escape):
        raise ValueError(f"{what} {name!r} has a backslash before an escaped character")


def _escape(text: str, chars: str) -> str:
    for c in chars:
        text = text.replace(c, "\\" + c)
    return text


def encode_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return f"{value}i"
        if 0 <= value < 2**64:
            return f"{value}u"
        raise ValueError("integer beyond 64 bits")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite float")
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_line(line: Line, precision: str = "ms") -> str:
    """``line`` as one line of line protocol (its strings may hold newlines)."""
    if line.measurement.startswith("#"):
        raise ValueError("a measurement starting with '#' reads as a comment")
    _check("measurement", line.measurement, ", ")
    parts = [_escape(line.measurement, ", ")]
    for key, val in line.tags:
        _check("tag key", key, "")
        _check("tag value", val, "")
        parts += [",", _escape(key, ",= "), "=", _escape(val, ",= ")]
    if not line.fields:
        raise ValueError("a line needs at least one field")
    sep = " "
    for key, value in line.fields:
        _check("field key", key, ",= ")
        parts += [sep, _escape(key, ",= "), "=", encode_value(value)]
        sep = ","
    if line.time_ms is not None:
        ns = line.time_ms * 1_000_000
        stamp = ns // PRECISIONS[precision]
        if not -_INT64 <= ns < _INT64 or stamp * PRECISIONS[precision] < -_INT64:
            raise ValueError("time out of range")
        parts += [" ", str(stamp)]
    return "".join(parts)
