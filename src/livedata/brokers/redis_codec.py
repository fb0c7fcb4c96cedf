"""How the Redis broker encodes what it stores: entry IDs, schema rows, chunk payloads. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from livedata.core.frames import Chunk, FieldDef, Pos

payload_encode = msgspec.msgpack.Encoder().encode
payload_decode = msgspec.msgpack.Decoder().decode
json_encode = msgspec.json.Encoder().encode
json_decode = msgspec.json.decode

Entry = tuple[bytes, dict[bytes, bytes]]
IdT = tuple[int, int]


def entry_id(raw: bytes | str) -> IdT:
    text = raw.decode() if isinstance(raw, bytes) else raw
    a, _, b = text.partition("-")
    return int(a), int(b or 0)


_MEMO_MAX = 65_536
"""Entries per memo below (cleared when full): schemas are small and repeat on every push."""
_DEF_JSON: dict[FieldDef, str] = {}
_SCHEMA_ROW: dict[bytes, tuple[int, FieldDef]] = {}


def def_json(f: FieldDef) -> str:
    out = _DEF_JSON.get(f)
    if out is None:
        if len(_DEF_JSON) >= _MEMO_MAX:
            _DEF_JSON.clear()
        out = _DEF_JSON[f] = json_encode([f.key, f.name, f.type, [list(p) for p in f.labels]]).decode()
    return out


def def_of(raw: Any) -> FieldDef:
    key, name, typ, labels = raw
    return FieldDef(key, name, typ, tuple((str(k), str(v)) for k, v in labels))


def schema_row(value: bytes) -> tuple[int, FieldDef]:
    row = _SCHEMA_ROW.get(value)
    if row is None:
        order, _, rest = value.partition(b"|")
        _, _, definition = rest.partition(b"|")
        if len(_SCHEMA_ROW) >= _MEMO_MAX:
            _SCHEMA_ROW.clear()
        row = _SCHEMA_ROW[value] = (int(order), def_of(json_decode(definition)))
    return row


def schema_of(raw: dict[bytes, bytes]) -> list[FieldDef]:
    """The schema from its hash (every push reads it: rows are parsed once per process)."""
    rows = sorted(map(schema_row, raw.values()), key=lambda r: r[0])
    return [f for _, f in rows]


def decode_entry(eid: bytes, f: dict[bytes, bytes]) -> Chunk:
    a, b = entry_id(eid)
    times, columns = payload_decode(f[b"d"])
    hwm = f.get(b"hwm") or b""
    return Chunk(Pos(a, b, int(f[b"n"])), times, columns, int(hwm) if hwm else None)


def is_late(c: Chunk) -> bool:
    return c.hwm is not None and bool(c.times) and c.times[0] < c.hwm
