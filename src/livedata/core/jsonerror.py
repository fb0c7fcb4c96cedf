"""A JSON decoding error as a sentence with a line and column, from msgspec's byte offset.

msgspec says ``JSON is malformed: invalid character (byte 4)``; a person wants ``line 1,
column 5: invalid character``. Pure: no I/O.
"""

from __future__ import annotations

import re

_BYTE = re.compile(r"^(?:JSON is malformed: )?(.*?) \(byte (\d+)\)$")
# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or a low one on its own (not after
# an escaped backslash): msgspec reports the first as "Input data was truncated".
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![0-9a-fA-F]{4})(?<!\\)(?:\\\\)*(\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def where(data: bytes, offset: int) -> tuple[int, int]:
    """(line, column), both from 1, of byte ``offset`` of ``data``; the column counts characters."""
    offset = max(0, min(offset, len(data)))
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[start:offset].decode(errors="replace")) + 1
    return line, column


def describe(error: Exception | str, data: bytes | str) -> tuple[str, int | None]:
    """``(sentence, line)`` for msgspec's DecodeError ``error`` on ``data``.

    ``malformed JSON at line 2, column 7: invalid character``; a document cut short is
    ``malformed JSON: it ends too early (an unclosed { [ or ")``; an empty one says so.
    """
    raw = data.encode() if isinstance(data, str) else data
    text = str(error)
    if not raw.strip():
        return "the JSON body is empty", None
    lone = _LONE_SURROGATE.search(raw)
    if lone is not None:
        group = 1 if lone.group(1) else 2
        line, column = where(raw, lone.start(group))
        return (f"malformed JSON at line {line}, column {column}: {lone.group(group).decode()} is a lone "
                "surrogate, which is not a character: send the text as UTF-8, or a \\uD8xx escape followed by "
                "its \\uDCxx pair"), line
    m = _BYTE.match(text)
    if m:
        line, column = where(raw, int(m.group(2)))
        return f"malformed JSON at line {line}, column {column}: {m.group(1)}", line
    if "truncated" in text:
        line = raw.rstrip().count(b"\n") + 1
        return f"malformed JSON: it ends too early at line {line} (an unclosed {{, [ or \")", line
    return f"malformed JSON: {text.removeprefix('JSON is malformed: ')}", None


__all__ = ["describe", "where"]
