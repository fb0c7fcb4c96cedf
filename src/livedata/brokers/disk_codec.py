"""How the disk broker encodes a run of chunks into one SQLite blob (a *segment*).

Two codecs, both tagged by the ``codec`` column of the ``segs`` table:

``HOT`` (0) — what a publish writes: ``msgpack([bounds, times, {key: column}])``, zstd level 1.
    Cheap to make on the ingest path (msgspec and zstd run in C, zstd without the GIL), exact
    for every value type.
``COLUMNAR`` (1) — what compaction rewrites hot segments into: one zstd frame over a msgpack
    header and, per column, a byte-shuffled array (the Blosc / Parquet ``BYTE_STREAM_SPLIT``
    idea; numpy does the work):

    * times: int64, delta-coded (a steady source's deltas are all alike);
    * numbers that are all integers: int64, delta-coded, with a null bitmap;
    * floats that are decimals with at most 6 places (sensor readings, prices, the generators'
      values) and fit 2**53 once scaled: the scaled integers, delta-coded, with a null bitmap;
      decoding divides by ``10**places``, which gives back the very same double (checked on
      encode; when it would not, the next codec is used);
    * other floats: float64 bits, byte-shuffled; ``None``, NaN and infinities are stored as NaN
      (all three are ``null`` in JSON, which is what any reader sees);
    * strings and booleans: msgpack.

``bounds`` is ``[[seq, rows, hwm, count(, keys)], ...]`` per chunk of the run (``hwm`` None for the
first chunk of a channel; ``keys`` when the chunk had fewer fields than the run), so reading a
segment gives back the very chunks, positions and fields included.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import msgspec
import numpy as np
import zstandard

from livedata.core.frames import Chunk, Column, Pos, Value, compact, dense

HOT = 0
COLUMNAR = 1
LEVEL = 3
"""zstd level of compacted segments (measured: benchmarks/README.md, "disk")."""

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode
_zc1 = zstandard.ZstdCompressor(level=1)
_zc = zstandard.ZstdCompressor(level=LEVEL)
_zd = zstandard.ZstdDecompressor()
MAX_PLACES = 6

Bounds = list[list[Any]]


# --- hot -------------------------------------------------------------------------------------------


def encode_hot(chunks: Sequence[Chunk]) -> bytes:
    if len(chunks) == 1:
        c = chunks[0]
        return _zc1.compress(_pack([[[c.pos.a, len(c.times), c.hwm, c.pos.count]], c.times,
                                    {k: dense(v) for k, v in c.columns.items()}]))
    bounds, times, columns = _concat(chunks)
    return _zc1.compress(_pack([bounds, times, columns]))


def _concat(chunks: Sequence[Chunk]) -> tuple[Bounds, list[int], dict[str, list[Value]]]:
    """One run of chunks as one set of columns, and the bounds to split it again."""
    times: list[int] = []
    columns: dict[str, list[Value]] = {}
    for c in chunks:
        n0 = len(times)
        times.extend(c.times)
        for k, col in c.columns.items():
            have = columns.get(k)
            if have is None:
                have = columns[k] = [None] * n0
            have.extend(dense(col))
        for have in columns.values():
            if len(have) < len(times):
                have.extend([None] * (len(times) - len(have)))
    bounds: Bounds = []
    for c in chunks:
        b: list[Any] = [c.pos.a, len(c.times), c.hwm, c.pos.count]
        if len(c.columns) != len(columns):
            b.append(list(c.columns))  # the chunk's own fields (it had fewer than the run)
        bounds.append(b)
    return bounds, times, columns


def _decode_hot(blob: bytes) -> tuple[Bounds, list[int], dict[str, list[Value]]]:
    bounds, times, columns = _unpack(_zd.decompress(blob))
    return bounds, times, columns


# --- columnar --------------------------------------------------------------------------------------


def _shuffle(a: np.ndarray[Any, Any]) -> bytes:
    return a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()


def _unshuffle(raw: bytes, dtype: Any, n: int) -> np.ndarray[Any, Any]:
    size = np.dtype(dtype).itemsize
    out: np.ndarray[Any, Any] = np.frombuffer(raw, np.uint8).reshape(size, n).T.copy().view(dtype).reshape(n)
    return out


def _delta(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty_like(a)
    if len(a):
        out[0] = a[0]
        np.subtract(a[1:], a[:-1], out=out[1:])
    return out


def _undelta(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = np.cumsum(a, dtype=a.dtype)
    return out


def _number_column(col: list[Value]) -> tuple[list[Any], list[bytes]]:
    """``(meta, parts)`` of a column of a ``number`` field (ints, floats and None only)."""
    n = len(col)
    nulls = col.count(None)
    if nulls == n:
        return ["z"], []
    present = [v for v in col if v is not None] if nulls else col
    if all(type(v) is int for v in present) and all(-(2**62) < v < 2**62 for v in present):  # type: ignore[operator]
        ints = np.array([0 if v is None else v for v in col] if nulls else col, dtype=np.int64)
        mask = np.array([v is None for v in col], dtype=bool) if nulls else None
        parts = [_shuffle(_delta(ints))]
        if mask is not None:
            parts.append(np.packbits(mask).tobytes())
        return ["i", mask is not None], parts
    arr = np.array(col, dtype=np.float64)  # None -> NaN
    finite = np.isfinite(arr)
    vals = arr[finite]
    for places in range(MAX_PLACES + 1):
        scale = 10.0**places
        scaled = np.round(vals * scale)
        if len(vals) and np.max(np.abs(scaled)) >= 2**53:
            break
        if np.array_equal(scaled / scale, vals):
            ints = np.zeros(n, dtype=np.int64)
            ints[finite] = scaled.astype(np.int64)
            has_mask = not bool(finite.all())
            parts = [_shuffle(_delta(ints))]
            if has_mask:
                parts.append(np.packbits(~finite).tobytes())
            return ["d", places, has_mask], parts
    arr[~finite] = np.nan
    return ["f"], [_shuffle(arr)]


def encode_columnar(chunks: Sequence[Chunk], numbers: Container[str]) -> bytes:
    """Chunks (a run, in log order) as one columnar blob; ``numbers``: the keys of number fields."""
    bounds, times, columns = _concat(chunks)
    n = len(times)
    parts: list[bytes] = [_shuffle(_delta(np.array(times, dtype=np.int64)))]
    metas: list[Any] = []
    for key, col in columns.items():
        if key in numbers:
            meta, ps = _number_column(col)
        else:
            meta, ps = ["o"], [_pack(col)]
        metas.append([key, meta, [len(p) for p in ps]])
        parts.extend(ps)
    header = _pack([bounds, n, len(parts[0]), metas])
    body = b"".join([len(header).to_bytes(4, "little"), header, *parts])
    return _zc.compress(body)


def _decode_columnar(blob: bytes) -> tuple[Bounds, list[int], dict[str, list[Value]]]:
    raw = _zd.decompress(blob)
    hlen = int.from_bytes(raw[:4], "little")
    bounds, n, tlen, metas = _unpack(raw[4:4 + hlen])
    at = 4 + hlen
    times = _undelta(_unshuffle(raw[at:at + tlen], np.int64, n)).tolist()
    at += tlen
    columns: dict[str, list[Value]] = {}
    for key, meta, lens in metas:
        ps = []
        for ln in lens:
            ps.append(raw[at:at + ln])
            at += ln
        kind = meta[0]
        if kind == "z":
            columns[key] = [None] * n
        elif kind == "o":
            columns[key] = _unpack(ps[0])
        elif kind == "i":
            ints = _undelta(_unshuffle(ps[0], np.int64, n))
            if meta[1]:
                mask = np.unpackbits(np.frombuffer(ps[1], np.uint8), count=n).astype(bool)
                obj = ints.astype(object)
                obj[mask] = None
                columns[key] = obj.tolist()
            else:
                columns[key] = ints.tolist()
        elif kind == "d":
            places, has_mask = meta[1], meta[2]
            ints = _undelta(_unshuffle(ps[0], np.int64, n))
            vals = ints / (10.0**places) if places else ints.astype(np.float64)
            columns[key] = _with_nulls(vals, ps[1] if has_mask else None, n)
        else:
            vals = _unshuffle(ps[0], np.float64, n)
            nan = np.isnan(vals)
            columns[key] = _with_nulls(vals, np.packbits(nan).tobytes() if nan.any() else None, n)
    return bounds, times, columns


def _with_nulls(vals: np.ndarray[Any, Any], mask_bytes: bytes | None, n: int) -> list[Value]:
    if mask_bytes is None:
        out: list[Value] = vals.tolist()
        return out
    mask = np.unpackbits(np.frombuffer(mask_bytes, np.uint8), count=n).astype(bool)
    obj = vals.astype(object)
    obj[mask] = None
    res: list[Value] = obj.tolist()
    return res


# --- reading ---------------------------------------------------------------------------------------


def decode(codec: int, blob: bytes) -> list[Chunk]:
    """The chunks of a segment, in log order."""
    bounds, times, columns = _decode_hot(blob) if codec == HOT else _decode_columnar(blob)
    if len(bounds) == 1 and len(bounds[0]) == 4:
        seq, _rows, hwm, count = bounds[0]
        cols: dict[str, Column] = {k: compact(v) for k, v in columns.items()}  # sparse as it was stored
        return [Chunk(Pos(seq, 0, count), times, cols, hwm)]
    out = []
    lo = 0
    for b in bounds:
        seq, rows, hwm, count = b[:4]
        hi = lo + rows
        keys = b[4] if len(b) > 4 else columns
        out.append(Chunk(Pos(seq, 0, count), times[lo:hi], {k: compact(columns[k][lo:hi]) for k in keys}, hwm))
        lo = hi
    return out
