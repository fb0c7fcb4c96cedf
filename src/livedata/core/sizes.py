"""What things cost in memory: estimates of CPython object sizes, for the budget. Pure.

Measured with ``sys.getsizeof`` on CPython 3.11 (64-bit): a float is 24 bytes, an int beyond the
small ones 28 to 32, a list 56 plus 8 per slot, an ASCII string 49 plus its length. Estimates err
on the large side (an int is taken as 32; values shared between rows, such as ``True``, a repeated
time, or a string the parser interned, are counted each time), so the budget's figures are an upper
bound of what the objects themselves hold. The allocator's own overhead is not in them:
docs/guarantees.md ("Resources") gives the measured ratio of RSS to these figures.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Final

from livedata.core.frames import Column, FieldDef, Sparse, Value

FLOAT: Final = 24
INT: Final = 32
LIST: Final = 56
SLOT: Final = 8
STR: Final = 49
CHUNK: Final = 72 + 64 + 64 + 232
"""A chunk, its position, its ``columns`` dict; a key then costs :data:`DICT_ENTRY` more."""
DICT_ENTRY: Final = 40
FIELD: Final = 72 + 64 + 2 * STR + 120
"""A field definition with its key and name (without their characters) and its schema entry."""
CHANNEL: Final = 2048
"""A memory-broker channel with no points: its object, schema dict, deques, epoch and metrics."""
HELD_POINT: Final = 64 + 2 * 56 + 232 + INT
"""A point held by a reorder window: its heap entries, its row dict and its time."""
CONNECTION: Final = 24 << 10
"""An open connection: aiohttp's protocol and parser, buffers, our Conn and sink (idle WebSocket
readers measured at 14 KiB each, README); the first request or message comes on top."""

SUBSCRIPTION: Final = 1536
"""A subscription: its object, request, id prefix, the hub's and the socket's entries for it."""


def subscription_bytes(req: object) -> int:
    """A subscription, with its ``fields`` filter (names are kept as sent)."""
    wanted = getattr(req, "fields", None) or ()
    return SUBSCRIPTION + sum(STR + SLOT + len(f) for f in wanted)


CACHES: Final = 16 << 20
"""The bounded caches, full: 10,000 idempotency keys (about 5 MB), field definitions (4,096 of at
most 128 characters), line-protocol heads (8,192 of at most 256) and the Redis broker's schema memos
(4,096 rows of at most 256 bytes each, twice). Counted once, when the server starts."""

_getsizeof = sys.getsizeof


def value_bytes(values: Iterable[Value], kind: str, count: int) -> int:
    """``count`` values of a field of type ``kind`` (strings are measured, numbers estimated)."""
    if kind == "string":
        return sum(_getsizeof(v) for v in values if v is not None)
    if kind == "number":
        return count * INT
    return 0  # booleans and None are shared singletons


def column_bytes(col: Column, kind: str) -> int:
    if isinstance(col, Sparse):
        k = len(col.values)
        return 2 * LIST + 48 + k * (2 * SLOT + INT) + value_bytes(col.values, kind, k)
    return LIST + SLOT * len(col) + value_bytes(col, kind, len(col))


def chunk_bytes(times: list[int], columns: Mapping[str, Column], fields: Mapping[str, FieldDef]) -> int:
    """A stored chunk: its times, its columns (values included) and the objects around them."""
    total = CHUNK + LIST + len(times) * (SLOT + INT)
    for key, col in columns.items():
        f = fields.get(key)
        total += DICT_ENTRY + column_bytes(col, f.type if f is not None else "number")
    return total


def field_bytes(f: FieldDef) -> int:
    """A field of a channel's schema."""
    return FIELD + len(f.key) + len(f.name) + sum(len(k) + len(v) + 2 * STR for k, v in f.labels)


def row_bytes(values: Mapping[str, Value]) -> int:
    """A point held by a reorder window."""
    return HELD_POINT + sum(DICT_ENTRY + (_getsizeof(v) if isinstance(v, str) else INT) for v in values.values())
