"""How the Redis broker encodes what it stores: entry IDs, schema rows, chunk payloads. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from livedata.core.frames import Batch, Chunk, Column, FieldDef, Pos, Sparse

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


_MEMO_MAX = 4096
"""Entries per memo below (cleared when full): schemas are small and repeat on every push. Only
short definitions are remembered (:data:`_MEMO_CHARS`), so a memo stays under a few MiB whatever
field names and tags clients send."""
_MEMO_CHARS = 256
_DEF_JSON: dict[FieldDef, str] = {}
_SCHEMA_ROW: dict[bytes, tuple[int, FieldDef]] = {}


def def_json(f: FieldDef) -> str:
    out = _DEF_JSON.get(f)
    if out is None:
        out = json_encode([f.key, f.name, f.type, [list(p) for p in f.labels]]).decode()
        if len(out) <= _MEMO_CHARS:
            if len(_DEF_JSON) >= _MEMO_MAX:
                _DEF_JSON.clear()
            _DEF_JSON[f] = out
    return out


def def_of(raw: Any) -> FieldDef:
    key, name, typ, labels = raw
    return FieldDef(key, name, typ, tuple((str(k), str(v)) for k, v in labels))


def schema_row(value: bytes) -> tuple[int, FieldDef]:
    row = _SCHEMA_ROW.get(value)
    if row is None:
        order, _, rest = value.partition(b"|")
        _, _, definition = rest.partition(b"|")
        row = (int(order), def_of(json_decode(definition)))
        if len(value) <= _MEMO_CHARS:
            if len(_SCHEMA_ROW) >= _MEMO_MAX:
                _SCHEMA_ROW.clear()
            _SCHEMA_ROW[value] = row
    return row


def schema_of(raw: dict[bytes, bytes]) -> list[FieldDef]:
    """The schema from its hash (every push reads it: rows are parsed once per process)."""
    rows = sorted(map(schema_row, raw.values()), key=lambda r: r[0])
    return [f for _, f in rows]


PAYLOAD_EXPANSION = 4
"""Bytes a decoded chunk takes in memory per byte of its msgpack payload (about: a float is 9
bytes packed, 32 as a Python float in a list)."""


def encode_payload(times: list[int], columns: dict[str, Column]) -> bytes:
    """``[times, columns]`` in msgpack; a sparse column as ``{"n", "r", "v"}`` (a dense one is a list)."""
    return payload_encode((times, _columns_out(columns)))


def _columns_out(columns: dict[str, Column]) -> dict[str, Any]:
    return {k: c if not isinstance(c, Sparse) else {"n": c.n, "r": c.rows, "v": c.values} for k, c in columns.items()}


def _columns_in(columns: dict[str, Any]) -> dict[str, Column]:
    for k, c in columns.items():
        if isinstance(c, dict):
            columns[k] = Sparse(c["n"], c["r"], c["v"])
    return columns


def encode_held(batch: Batch, size: int) -> bytes:
    """A held batch (reorder window entry): ``[times, columns, [field JSON, ...], size]``."""
    return payload_encode((batch.times, _columns_out(batch.columns), [def_json(f) for f in batch.fields.values()],
                           size))


def decode_held(raw: bytes) -> tuple[Batch, int]:
    times, columns, defs, size = payload_decode(raw)
    fields = {d.key: d for d in (def_of(json_decode(x)) for x in defs)}
    return Batch(times, _columns_in(columns), fields), int(size)


def decode_entry(eid: bytes, f: dict[bytes, bytes]) -> Chunk:
    a, b = entry_id(eid)
    payload = f[b"d"]
    times, columns = payload_decode(payload)
    _columns_in(columns)
    hwm = f.get(b"hwm") or b""
    chunk = Chunk(Pos(a, b, int(f[b"n"])), times, columns, int(hwm) if hwm else None)
    chunk.nbytes = len(payload) * PAYLOAD_EXPANSION
    return chunk


def is_late(c: Chunk) -> bool:
    return c.hwm is not None and bool(c.times) and c.times[0] < c.hwm
