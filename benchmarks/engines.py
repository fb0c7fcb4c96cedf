"""Which embedded engine for ``--data-dir``: SQLite (standard library, WAL) vs DuckDB, measured.

Not part of ``make bench``: a one-off comparison that chose the disk broker's engine (the result is
in benchmarks/README.md, "Disk: choosing the engine"). Needs ``pip install duckdb`` for the DuckDB
side (it is not a dependency of livedata); without it only SQLite is measured.

Three figures per engine, on this workload:

* **append**: line-protocol-shaped batches (5,000 rows x 10 fields, one value per row, the shape
  ``ingest-lp`` pushes), each committed on its own (what a ``204`` waits for), values/s;
* **range read**: 24 h of a 20 Hz x 10-series random walk (17.28 M values, 6 decimals like the
  generators) read back into Python lists (what a raw backfill needs), s;
* **disk per value** after loading that day (SQLite: after compaction into columnar segments).

SQLite stores a *segment* (a run of chunks) per row, encoded by ``livedata.brokers.disk_codec``;
DuckDB stores one row per value ``(ch, seq, t, field, v)`` and compresses its columns itself.

    .venv/bin/python -m benchmarks.engines [--hours 24] [--dir /tmp/engines]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

import numpy as np

from livedata.brokers.disk_codec import HOT, encode_columnar, encode_hot
from livedata.core.frames import Chunk, Pos

FIELDS = [f"series{i}" for i in range(10)]
T0 = 1_700_000_000_000


def day(hours: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rows = int(hours * 3600 * 20)
    times = T0 + np.arange(rows, dtype=np.int64) * 50
    rng = np.random.default_rng(1)
    walk = np.round(np.cumsum(rng.normal(0, 1, size=(10, rows)), axis=1) + np.arange(10)[:, None] * 10, 6)
    return times, walk


def lp_batches(n: int) -> list[tuple[list[int], dict[str, list[Any]]]]:
    out = []
    for k in range(n):
        times = [T0 + (k * 5000 + i) for i in range(5000)]
        cols: dict[str, list[Any]] = {f: [None] * 5000 for f in FIELDS}
        for i in range(5000):
            cols[FIELDS[i % 10]][i] = (i * 7) % 1000 / 10
        out.append((times, cols))
    return out


def sqlite_open(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA page_size=16384")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS segs (ch INTEGER, seq_lo INTEGER, seq_hi INTEGER, t0 INTEGER, "
               "t1 INTEGER, cells INTEGER, codec INTEGER, data BLOB)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS segs_seq ON segs (ch, seq_lo)")
    db.execute("CREATE INDEX IF NOT EXISTS segs_t1 ON segs (ch, t1)")
    return db


def sqlite_append(d: str, batches: list[tuple[list[int], dict[str, list[Any]]]]) -> float:
    db = sqlite_open(os.path.join(d, "append.db"))
    t = time.perf_counter()
    for seq, (times, cols) in enumerate(batches, 1):
        blob = encode_hot([Chunk(Pos(seq, 0, seq * 5000), times, cols, None)])
        db.execute("BEGIN")
        db.execute("INSERT INTO segs VALUES (0, ?, ?, ?, ?, ?, ?, ?)", (seq, seq, times[0], times[-1], 5000, HOT, blob))
        db.execute("COMMIT")
    dt = time.perf_counter() - t
    db.close()
    return len(batches) * 5000 / dt


def sqlite_day(d: str, times: np.ndarray[Any, Any], walk: np.ndarray[Any, Any]) -> dict[str, float]:
    path = os.path.join(d, "day.db")
    db = sqlite_open(path)
    rows = len(times)
    per_chunk = 1200  # one minute of 20 Hz
    per_seg = 65_536 // 10
    tl = times.tolist()
    cols = [w.tolist() for w in walk]
    t = time.perf_counter()
    db.execute("BEGIN")
    seq = 0
    for lo in range(0, rows, per_seg):
        hi = min(rows, lo + per_seg)
        chunks = []
        for a in range(lo, hi, per_chunk):
            b = min(hi, a + per_chunk)
            seq += 1
            chunks.append(Chunk(Pos(seq, 0, b * 10), tl[a:b], {f: c[a:b] for f, c in zip(FIELDS, cols, strict=True)},
                                None))
        blob = encode_columnar(chunks, set(FIELDS))
        db.execute("INSERT INTO segs VALUES (0, ?, ?, ?, ?, ?, 1, ?)",
                   (chunks[0].pos.a, seq, tl[lo], tl[hi - 1], (hi - lo) * 10, blob))
    db.execute("COMMIT")
    load = time.perf_counter() - t
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    from livedata.brokers.disk_codec import decode

    t = time.perf_counter()
    got = 0
    out_t: list[int] = []
    out_c: dict[str, list[Any]] = {f: [] for f in FIELDS}
    for codec, data in db.execute("SELECT codec, data FROM segs WHERE ch=0 AND t1>=? AND t0<=? ORDER BY seq_lo",
                                  (T0, T0 + 10**12)):
        for c in decode(codec, data):
            out_t.extend(c.times)
            for f in FIELDS:
                out_c[f].extend(c.columns[f])
            got += len(c.times) * 10
    read = time.perf_counter() - t
    assert got == rows * 10 and out_c["series3"][-1] == cols[3][-1]
    db.close()
    return {"load_s": load, "read_s": read, "bytes_per_value": size / (rows * 10), "values": rows * 10}


def duck_append(d: str, batches: list[tuple[list[int], dict[str, list[Any]]]]) -> float:
    import duckdb

    con = duckdb.connect(os.path.join(d, "append.duckdb"))
    con.execute("CREATE TABLE raw (ch INTEGER, seq BIGINT, t BIGINT, field SMALLINT, v DOUBLE)")
    t = time.perf_counter()
    for seq, (times, cols) in enumerate(batches, 1):
        ts, fs, vs = [], [], []
        for fi, f in enumerate(FIELDS):
            for tt, v in zip(times, cols[f], strict=True):
                if v is not None:
                    ts.append(tt)
                    fs.append(fi)
                    vs.append(v)
        batch = {"ch": np.zeros(len(ts), np.int32), "seq": np.full(len(ts), seq, np.int64),
                 "t": np.array(ts, np.int64), "field": np.array(fs, np.int16), "v": np.array(vs, np.float64)}
        con.register("b", batch)
        con.execute("INSERT INTO raw SELECT * FROM b")  # one statement, one commit
        con.unregister("b")
    dt = time.perf_counter() - t
    con.close()
    return len(batches) * 5000 / dt


def duck_day(d: str, times: np.ndarray[Any, Any], walk: np.ndarray[Any, Any]) -> dict[str, float]:
    import duckdb

    path = os.path.join(d, "day.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE raw (ch INTEGER, seq BIGINT, t BIGINT, field SMALLINT, v DOUBLE)")
    rows = len(times)
    per = 1200 * 60
    t = time.perf_counter()
    for lo in range(0, rows, per):
        hi = min(rows, lo + per)
        n = hi - lo
        batch = {"ch": np.zeros(n * 10, np.int32), "seq": np.repeat(np.arange(lo, hi, dtype=np.int64) // 1200, 10),
                 "t": np.repeat(times[lo:hi], 10), "field": np.tile(np.arange(10, dtype=np.int16), n),
                 "v": walk[:, lo:hi].T.reshape(-1)}
        con.register("b", batch)
        con.execute("INSERT INTO raw SELECT * FROM b")
        con.unregister("b")
    con.execute("CHECKPOINT")
    load = time.perf_counter() - t
    size = os.path.getsize(path)
    t = time.perf_counter()
    res = con.execute("SELECT t, field, v FROM raw WHERE ch=0 AND t BETWEEN ? AND ? ORDER BY seq, t, field",
                      [T0, T0 + 10**12]).fetchnumpy()
    v = res["v"].reshape(-1, 10)
    out_t = res["t"][::10].tolist()
    out_c = {f: v[:, i].tolist() for i, f in enumerate(FIELDS)}
    read = time.perf_counter() - t
    assert len(out_t) == rows and out_c["series3"][-1] == walk[3][-1]
    con.close()
    return {"load_s": load, "read_s": read, "bytes_per_value": size / (rows * 10), "values": rows * 10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--batches", type=int, default=100, help="line-protocol batches to append (5,000 values each)")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="livedata-engines-")
    try:
        import duckdb  # noqa: F401

        engines = ["sqlite", "duckdb"]
    except ImportError:
        engines = ["sqlite"]
        print("duckdb is not installed (pip install duckdb): measuring SQLite only")
    times, walk = day(args.hours)
    batches = lp_batches(args.batches)
    print(f"{len(times) * 10:,} values ({args.hours} h of 20 Hz x 10); {args.batches} x 5,000-value LP batches")
    print("| engine | append (LP batches, commit each) | load the day | range read -> Python lists | disk/value |")
    print("|---|---:|---:|---:|---:|")
    for name in engines:
        d = os.path.join(base, name)
        os.makedirs(d, exist_ok=True)
        rate = sqlite_append(d, batches) if name == "sqlite" else duck_append(d, batches)
        r = sqlite_day(d, times, walk) if name == "sqlite" else duck_day(d, times, walk)
        print(f"| {name} | {rate:,.0f} values/s | {r['load_s']:.1f} s | {r['read_s']:.2f} s | "
              f"{r['bytes_per_value']:.2f} B |", flush=True)
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
