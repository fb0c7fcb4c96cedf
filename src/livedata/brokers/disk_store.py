"""The disk broker's SQLite file: schema, the writer's transactions, reads, retention, compaction.

About 700 lines, one module: every SQL statement on the file is here, next to the schema it
depends on, so a change of table is checked against all of its readers and writers in one place.

Synchronous on purpose: the writer methods run on the broker's writer thread (one connection),
the read methods on its reader threads (one connection each, WAL lets them read while it writes).
Nothing here touches the event loop. ``disk.py`` says how the loop side uses it.

Tables (one file, ``DIR/livedata.db``, WAL mode, 16 KiB pages):

``meta(k, v)``             the broker's token (epochs stay the same across restarts) and format
``channels(id, name, epoch, seq, count, max_time)``  a channel's head, updated in every commit
``fields(ch, idx, def)``   the schema, ``idx`` in order (``def`` = ``[key, name, type, labels]``)
``segs(ch, seq_lo, seq_hi, c0, count_hi, t0, t1, cells, codec, data)``  a run of chunks
                           ``seq_lo..seq_hi`` (``disk_codec.py``); ``c0`` points before it, ``t0``/``t1``
                           its min/max time, ``cells`` its values
``rollups(ch, tier, bucket, data)``  a bucket's aggregates per field (by ``idx``), times relative
                           to the bucket
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from livedata.brokers.disk_codec import COLUMNAR, HOT, decode, encode_columnar, encode_hot
from livedata.core.frames import Chunk, FieldDef
from livedata.core.rollup import AGG_LEN, COUNT, FIRST_T, LAST_T, MAX_T, MIN_T, Agg, Buckets, Partials, Tier, merge
from livedata.core.sizes import chunk_bytes

log = logging.getLogger("livedata.disk")

FORMAT = "1"
TARGET_CELLS = 65_536
"""Values per compacted segment."""
HOT_AGE_S = 30.0
"""A hot (just written) segment is compacted once it is this old, or once a segment's worth waits."""
HOT_BACKLOG_CELLS = 2_000_000
"""Past this many hot values in all, compaction runs even while writes keep coming."""
CACHE_BUCKETS = 50_000
"""Rollup rows the writer keeps in memory (the newest of each tier are the ones written to)."""

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode
_TIMES = (MIN_T, MAX_T, FIRST_T, LAST_T)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channels (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, epoch TEXT NOT NULL,
    seq INTEGER NOT NULL, count INTEGER NOT NULL, max_time INTEGER);
CREATE TABLE IF NOT EXISTS fields (ch INTEGER, idx INTEGER, def TEXT, PRIMARY KEY (ch, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segs (ch INTEGER NOT NULL, seq_lo INTEGER NOT NULL, seq_hi INTEGER NOT NULL,
    c0 INTEGER NOT NULL, count_hi INTEGER NOT NULL, t0 INTEGER NOT NULL, t1 INTEGER NOT NULL,
    cells INTEGER NOT NULL, codec INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS segs_seq ON segs (ch, seq_lo);
CREATE INDEX IF NOT EXISTS segs_t1 ON segs (ch, t1);
CREATE TABLE IF NOT EXISTS rollups (ch INTEGER, tier INTEGER, bucket INTEGER, data BLOB,
    PRIMARY KEY (ch, tier, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (ch INTEGER, k TEXT, digest TEXT NOT NULL, exp REAL NOT NULL,
    PRIMARY KEY (ch, k)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held (ch INTEGER, id INTEGER, due REAL NOT NULL, data BLOB NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY (ch, id)) WITHOUT ROWID;
"""
KEYS_EVERY_S = 60.0
"""Expired idempotency keys are deleted this often."""


def def_of(raw: str) -> FieldDef:
    key, name, type_, labels = json.loads(raw)
    return FieldDef(key, name, type_, tuple((k, v) for k, v in labels))


def def_json(f: FieldDef) -> str:
    return json.dumps([f.key, f.name, f.type, [list(p) for p in f.labels]])


@dataclass(slots=True)
class Publish:
    """One chunk to store, with what the loop decided about it."""

    ch: int
    name: str
    epoch: str
    create: bool
    chunk: Chunk
    new_fields: list[FieldDef]
    numeric: list[str]
    parts: list[Partials]
    cells: int
    gen: int
    future: Any = None
    key: tuple[str, str, float] | None = None
    """An idempotency key recorded in the same transaction: (key, request digest, expiry, wall s)."""
    take: list[int] = field(default_factory=list)
    """Held entries this chunk releases whole (deleted in the same transaction)."""
    keep: list[tuple[int, bytes, int]] = field(default_factory=list)
    """Held entries it releases in part: (id, what is left, encoded; its size)."""


@dataclass(slots=True)
class Hold:
    """Points held in a reorder window: stored with the key (if any) in one transaction."""

    ch: int
    name: str
    epoch: str
    create: bool
    id: int
    due: float
    data: bytes
    size: int
    gen: int
    future: Any = None
    key: tuple[str, str, float] | None = None


@dataclass(slots=True)
class Delete:
    ch: int
    gen: int
    future: Any = None


Op = Publish | Hold | Delete


@dataclass(slots=True)
class _Seg:
    seq_lo: int
    seq_hi: int
    cells: int
    t1: int
    codec: int
    at: float
    """Wall time it was written (0: before this process started)."""


@dataclass(slots=True)
class _Chan:
    fields: list[FieldDef] = field(default_factory=list)
    idx: dict[str, int] = field(default_factory=dict)
    segs: deque[_Seg] = field(default_factory=deque)
    cells: int = 0
    seq: int = 0


@dataclass(slots=True)
class Loaded:
    """What the loop side starts from: the channels as last committed."""

    token: str
    channels: list[tuple[int, str, str, int, int, int | None, list[FieldDef], int]]
    """``(id, name, epoch, seq, count, max_time, fields, cells)``."""
    keys: list[tuple[int, str, str, float]] = field(default_factory=list)
    """Idempotency keys not expired: ``(channel id, key, digest, expiry)``."""
    held: list[tuple[int, int, float, bytes, int]] = field(default_factory=list)
    """Held points: ``(channel id, entry id, due, data, size)``."""


class Store:
    """One SQLite file. The ``w_*`` methods are the writer thread's; ``read_*`` any reader thread's."""

    def __init__(self, path: str, sync: str, tiers: Sequence[Tier], retention_ms: int, retention_points: int,
                 wall: Any = time.time, hot_age_s: float = HOT_AGE_S) -> None:
        self.path = path
        self.hot_age_s = hot_age_s
        self.sync = sync
        self.tiers = tuple(tiers)
        self.retention_ms = retention_ms
        self.retention_points = retention_points
        self.wall = wall
        self._w: sqlite3.Connection | None = None
        self._chans: dict[int, _Chan] = {}
        self._cache: dict[tuple[int, int, int], list[Agg | None]] = {}
        self._dirty: set[tuple[int, int, int]] = set()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.trimmed: dict[int, int] = {}
        """Values trimmed per channel since the loop last asked (retention)."""
        self._last_trim = 0.0
        self._last_rollup_trim = 0.0
        self._last_keys = 0.0
        self._hot_cells = 0

    # --- opening ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'always' else 'NORMAL'}")
        db.execute("PRAGMA temp_store=MEMORY")
        return db

    def open(self, token: str) -> Loaded:
        """Create or open the file (on the writer thread); return the committed channels."""
        fresh = not os.path.exists(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        if fresh:
            db.execute("PRAGMA page_size=16384")
        db.close()
        w = self._w = self._connect()
        w.executescript(SCHEMA)
        row = w.execute("SELECT v FROM meta WHERE k='token'").fetchone()
        if row is None:
            w.execute("INSERT INTO meta VALUES ('token', ?), ('format', ?)", (token, FORMAT))
        else:
            token = row[0]
            fmt = w.execute("SELECT v FROM meta WHERE k='format'").fetchone()
            if fmt is None or fmt[0] != FORMAT:
                raise RuntimeError(f"{self.path} has data format {fmt and fmt[0]!r}; this livedata reads {FORMAT!r}")
        out = []
        for cid, name, epoch, seq, count, max_time in w.execute(
                "SELECT id, name, epoch, seq, count, max_time FROM channels ORDER BY id").fetchall():
            ch = self._chans[cid] = _Chan(seq=seq)
            for (raw,) in w.execute("SELECT def FROM fields WHERE ch=? ORDER BY idx", (cid,)):
                f = def_of(raw)
                ch.idx[f.key] = len(ch.fields)
                ch.fields.append(f)
            for lo, hi, cells, t1, codec in w.execute(
                    "SELECT seq_lo, seq_hi, cells, t1, codec FROM segs WHERE ch=? ORDER BY seq_lo", (cid,)):
                ch.segs.append(_Seg(lo, hi, cells, t1, codec, 0.0))
                ch.cells += cells
                if codec == HOT:
                    self._hot_cells += cells
            out.append((cid, name, epoch, seq, count, max_time, list(ch.fields), ch.cells))
        keys = w.execute("SELECT ch, k, digest, exp FROM keys WHERE exp>=?", (self.wall(),)).fetchall()
        held = w.execute("SELECT ch, id, due, data, size FROM held ORDER BY ch, id").fetchall()
        return Loaded(token, out, keys, held)

    # --- writing (the writer thread) -------------------------------------------------------------

    def w_group(self, ops: Sequence[Op]) -> dict[int, int]:
        """Store ``ops`` in one transaction (all or nothing: on an error it is rolled back), and trim
        the channels they wrote to; returns the values trimmed per channel."""
        w = self._w
        assert w is not None
        heads: dict[int, tuple[int, int, int]] = {}
        now = self.wall()
        w.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                if isinstance(op, Delete):
                    for table in ("segs", "rollups", "fields", "keys", "held"):
                        w.execute(f"DELETE FROM {table} WHERE ch=?", (op.ch,))
                    w.execute("DELETE FROM channels WHERE id=?", (op.ch,))
                    heads.pop(op.ch, None)
                    continue
                ch = self._chans.get(op.ch)
                if op.create or ch is None:
                    w.execute("INSERT OR IGNORE INTO channels VALUES (?, ?, ?, 0, 0, NULL)", (op.ch, op.name, op.epoch))
                    ch = self._chans.setdefault(op.ch, _Chan())
                if op.key is not None:
                    w.execute("INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)", (op.ch, *op.key))
                if isinstance(op, Hold):
                    w.execute("INSERT INTO held VALUES (?, ?, ?, ?, ?)", (op.ch, op.id, op.due, op.data, op.size))
                    continue
                for hid in op.take:
                    w.execute("DELETE FROM held WHERE ch=? AND id=?", (op.ch, hid))
                for hid, data, size in op.keep:
                    w.execute("UPDATE held SET data=?, size=? WHERE ch=? AND id=?", (data, size, op.ch, hid))
                for f in op.new_fields:
                    if f.key in ch.idx:
                        continue
                    w.execute("INSERT INTO fields VALUES (?, ?, ?)", (op.ch, len(ch.fields), def_json(f)))
                    ch.idx[f.key] = len(ch.fields)
                    ch.fields.append(f)
                c = op.chunk
                times = c.times
                t0, t1 = (times[0], times[-1]) if c.hwm is None or times[0] >= c.hwm else (min(times), max(times))
                w.execute("INSERT INTO segs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (op.ch, c.pos.a, c.pos.a, c.count_before, c.pos.count, t0, t1, op.cells, HOT,
                           encode_hot([c])))
                ch.segs.append(_Seg(c.pos.a, c.pos.a, op.cells, t1, HOT, now))
                ch.cells += op.cells
                ch.seq = c.pos.a
                self._hot_cells += op.cells
                prev = heads.get(op.ch)
                mx = t1 if prev is None else max(prev[2], t1)
                heads[op.ch] = (c.pos.a, c.pos.count, mx)
                self._roll(op, ch)
            for cid, (seq, count, mx) in heads.items():
                w.execute("UPDATE channels SET seq=?, count=?, max_time=max(coalesce(max_time, ?), ?) WHERE id=?",
                          (seq, count, mx, mx, cid))
            trimmed: dict[int, int] = {}
            cutoff = int(now * 1000) - self.retention_ms
            for cid in heads:
                self._trim_one(cid, cutoff, trimmed)
            self._flush_rollups()
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            self._reload_after_rollback(ops)
            raise
        for op in ops:
            if isinstance(op, Delete):
                self._chans.pop(op.ch, None)
                for key in [k for k in self._cache if k[0] == op.ch]:
                    del self._cache[key]
        return trimmed

    def _reload_after_rollback(self, ops: Sequence[Op]) -> None:
        """Forget what the failed transaction did in memory: read those channels back."""
        w = self._w
        assert w is not None
        self._cache.clear()
        self._dirty.clear()
        for cid in {op.ch for op in ops}:
            self._chans.pop(cid, None)
            if w.execute("SELECT 1 FROM channels WHERE id=?", (cid,)).fetchone() is None:
                continue
            ch = self._chans[cid] = _Chan()
            for (raw,) in w.execute("SELECT def FROM fields WHERE ch=? ORDER BY idx", (cid,)):
                f = def_of(raw)
                ch.idx[f.key] = len(ch.fields)
                ch.fields.append(f)
            for lo, hi, cells, t1, codec in w.execute(
                    "SELECT seq_lo, seq_hi, cells, t1, codec FROM segs WHERE ch=? ORDER BY seq_lo", (cid,)):
                ch.segs.append(_Seg(lo, hi, cells, t1, codec, 0.0))
                ch.cells += cells

    def w_held(self, cid: int) -> list[tuple[int, float, bytes, int]]:
        """A channel's committed held entries ``(id, due, data, size)`` (after a failed write)."""
        w = self._w
        assert w is not None
        rows: list[tuple[int, float, bytes, int]] = w.execute(
            "SELECT id, due, data, size FROM held WHERE ch=? ORDER BY id", (cid,)).fetchall()
        return rows

    def w_channel(self, cid: int) -> tuple[int, int, int | None, list[FieldDef]] | None:
        """A channel's committed head and schema (after a failed write), or None."""
        w = self._w
        assert w is not None
        row = w.execute("SELECT seq, count, max_time FROM channels WHERE id=?", (cid,)).fetchone()
        if row is None:
            return None
        ch = self._chans.get(cid)
        return row[0], row[1], row[2], list(ch.fields) if ch else []

    def _roll(self, op: Publish, ch: _Chan) -> None:
        cutoff_now = int(self.wall() * 1000)
        for tier, parts in zip(self.tiers, op.parts, strict=False):
            cutoff = cutoff_now - tier.retention_ms
            for start, aggs in parts:
                if start + tier.width_ms <= cutoff:
                    continue
                key = (op.ch, tier.width_ms, start)
                row = self._cache.get(key)
                if row is None:
                    row = self._load_rollup(key)
                    self._cache[key] = row
                for k, a in aggs.items():
                    i = ch.idx.get(k)
                    if i is None:
                        continue
                    if i >= len(row):
                        row.extend([None] * (i + 1 - len(row)))
                    have = row[i]
                    if have is None:
                        row[i] = list(a)
                    else:
                        merge(have, a)
                self._dirty.add(key)

    def _load_rollup(self, key: tuple[int, int, int]) -> list[Agg | None]:
        w = self._w
        assert w is not None
        got = w.execute("SELECT data FROM rollups WHERE ch=? AND tier=? AND bucket=?", key).fetchone()
        return [] if got is None else decode_rollup(key[2], got[0])

    def _flush_rollups(self) -> None:
        if not self._dirty:
            return
        w = self._w
        assert w is not None
        w.executemany("INSERT OR REPLACE INTO rollups VALUES (?, ?, ?, ?)",
                      [(*k, encode_rollup(k[2], self._cache[k])) for k in self._dirty])
        self._dirty.clear()
        if len(self._cache) > CACHE_BUCKETS:  # keep the newest buckets of each (channel, tier)
            keep = sorted(self._cache, key=lambda k: k[2])[-CACHE_BUCKETS // 2:]
            self._cache = {k: self._cache[k] for k in keep}

    def w_fsync(self) -> None:
        """Flush the WAL to the disk (``--fsync interval``)."""
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def w_maintain(self, busy: bool) -> bool:
        """One bounded step of retention and compaction; True when there is more to do now."""
        now = self.wall()
        if now - self._last_trim >= 1.0:
            self._last_trim = now
            self._trim(now)
        if now - self._last_keys >= KEYS_EVERY_S:
            self._last_keys = now
            w = self._w
            assert w is not None
            w.execute("DELETE FROM keys WHERE exp<?", (now,))
        if now - self._last_rollup_trim >= 30.0:
            self._last_rollup_trim = now
            self._trim_rollups(now)
        if busy and self._hot_cells < HOT_BACKLOG_CELLS:
            return False
        return self._compact_one(now)

    def _trim(self, now: float) -> None:
        """Retention of every channel (idle ones age too), in a transaction of its own."""
        w = self._w
        assert w is not None
        cutoff = int(now * 1000) - self.retention_ms
        w.execute("BEGIN IMMEDIATE")
        try:
            for cid in self._chans:
                self._trim_one(cid, cutoff, self.trimmed)
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise

    def _trim_one(self, cid: int, cutoff: int, trimmed: dict[int, int]) -> None:
        """Drop a channel's oldest segments past ``cutoff`` or the count (the newest one stays)."""
        w = self._w
        assert w is not None
        ch = self._chans[cid]
        segs = ch.segs
        last = None
        while len(segs) > 1 and (segs[0].t1 < cutoff or ch.cells - segs[0].cells >= self.retention_points):
            s = segs.popleft()
            ch.cells -= s.cells
            if s.codec == HOT:
                self._hot_cells -= s.cells
            trimmed[cid] = trimmed.get(cid, 0) + s.cells
            last = s.seq_lo
        if last is not None:
            w.execute("DELETE FROM segs WHERE ch=? AND seq_lo<=?", (cid, last))

    def _trim_rollups(self, now: float) -> None:
        w = self._w
        assert w is not None
        now_ms = int(now * 1000)
        w.execute("BEGIN IMMEDIATE")
        try:
            for cid in self._chans:
                for t in self.tiers:
                    w.execute("DELETE FROM rollups WHERE ch=? AND tier=? AND bucket<=?",
                              (cid, t.width_ms, now_ms - t.retention_ms - t.width_ms))
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise
        self._cache = {k: v for k, v in self._cache.items() if k[0] in self._chans}

    def _compact_one(self, now: float) -> bool:
        """Rewrite one run of hot segments (and a small compacted one before them) as one columnar
        segment. Returns True when another run is ready."""
        w = self._w
        assert w is not None
        ready = 0
        for cid, ch in self._chans.items():
            run = self._run_of(ch, now)
            if run is None:
                continue
            if ready:
                return True
            ready += 1
            lo, hi = run[0].seq_lo, run[-1].seq_hi
            rows = w.execute("SELECT codec, data, c0 FROM segs WHERE ch=? AND seq_lo>=? AND seq_lo<=? ORDER BY seq_lo",
                             (cid, lo, hi)).fetchall()
            chunks = [c for codec, data, _ in rows for c in decode(codec, data)]
            if not chunks:
                continue
            numbers = {f.key for f in ch.fields if f.type == "number"}
            blob = encode_columnar(chunks, numbers)
            t0 = min(min(c.times) for c in chunks if c.times)
            t1 = max(max(c.times) for c in chunks if c.times)
            cells = sum(s.cells for s in run)
            w.execute("BEGIN IMMEDIATE")
            try:
                w.execute("DELETE FROM segs WHERE ch=? AND seq_lo>=? AND seq_lo<=?", (cid, lo, hi))
                w.execute("INSERT INTO segs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (cid, lo, chunks[-1].pos.a, rows[0][2], chunks[-1].pos.count, t0, t1, cells, COLUMNAR,
                           blob))
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            k = 0
            while k < len(ch.segs) and ch.segs[k].seq_lo < lo:
                k += 1
            for s in run:
                if s.codec == HOT:
                    self._hot_cells -= s.cells
            for _ in run:
                del ch.segs[k]
            ch.segs.insert(k, _Seg(lo, chunks[-1].pos.a, cells, t1, COLUMNAR, now))
        return False

    def _run_of(self, ch: _Chan, now: float) -> list[_Seg] | None:
        """The next run of segments to compact in ``ch``, if one is due."""
        segs = ch.segs
        i = next((j for j, s in enumerate(segs) if s.codec == HOT), None)
        if i is None:
            return None
        if i > 0 and segs[i - 1].cells < TARGET_CELLS // 2:
            i -= 1
        run: list[_Seg] = []
        cells = 0
        for j in range(i, len(segs)):
            s = segs[j]
            if run and cells + s.cells > TARGET_CELLS:
                break
            run.append(s)
            cells += s.cells
        hot = [s for s in run if s.codec == HOT]
        full = cells >= TARGET_CELLS // 2 or len(run) < len(segs) - i
        if not hot or (not full and now - hot[0].at < self.hot_age_s):
            return None
        if len(run) == 1 and run[0].codec == COLUMNAR:
            return None
        return run

    def w_close(self) -> None:
        if self._w is not None:
            try:
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._w.close()
            self._w = None

    # --- reading (reader threads) ----------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            db.execute("PRAGMA query_only=1")
            with self._readers_lock:
                self._readers.append(db)
        return db

    def read_range(self, cid: int, start: int | None, end: int | None, head_seq: int, after_seq: int = 0,
                   max_bytes: int = 0, fields: Mapping[str, FieldDef] | None = None) -> tuple[list[Chunk], bool]:
        """Chunks ``after_seq < seq <= head_seq`` with a point in ``[start, end]`` (whole; the caller
        windows them), and whether a page of ``max_bytes`` (estimated in memory, at least one
        chunk; 0: no limit) stopped before ``head_seq``."""
        db = self._reader()
        out: list[Chunk] = []
        size = 0
        q = db.execute("SELECT codec, data FROM segs WHERE ch=? AND t1>=? AND t0<=? AND seq_hi>? AND seq_lo<=? "
                       "ORDER BY seq_lo",
                       (cid, -(2**62) if start is None else start, 2**62 if end is None else end, after_seq, head_seq))
        for codec, data in q:
            for c in decode(codec, data):
                if not after_seq < c.pos.a <= head_seq:
                    continue
                if not _overlaps(c.times, start, end):  # so that every chunk of a page has a point in range
                    continue
                if max_bytes and out and size >= max_bytes:
                    return out, True
                c.nbytes = chunk_bytes(c.times, c.columns, fields or {})
                size += c.nbytes
                out.append(c)
        return out, False

    def read_after(self, cid: int, after_seq: int, head_seq: int, max_bytes: int = 0,
                   fields: Mapping[str, FieldDef] | None = None) -> tuple[list[Chunk], int | None, int | None, bool]:
        """Chunks ``after_seq < seq <= head_seq`` (a page of about ``max_bytes``, see
        :meth:`read_range`); the oldest retained segment's (seq_lo, c0); whether the page stopped early."""
        db = self._reader()
        oldest = db.execute("SELECT seq_lo, c0 FROM segs WHERE ch=? ORDER BY seq_lo LIMIT 1", (cid,)).fetchone()
        out: list[Chunk] = []
        size = 0
        more = False
        for codec, data in db.execute(
                "SELECT codec, data FROM segs WHERE ch=? AND seq_hi>? AND seq_lo<=? ORDER BY seq_lo",
                (cid, after_seq, head_seq)):
            for c in decode(codec, data):
                if not after_seq < c.pos.a <= head_seq:
                    continue
                if max_bytes and out and size >= max_bytes:
                    more = True
                    break
                c.nbytes = chunk_bytes(c.times, c.columns, fields or {})
                size += c.nbytes
                out.append(c)
            if more:
                break
        return out, (oldest[0] if oldest else None), (oldest[1] if oldest else None), more

    def read_rollups(self, cid: int, tier: int, lo: int, hi: int, keys: Sequence[str]) -> Buckets:
        db = self._reader()
        out = Buckets(tier)
        for bucket, data in db.execute(
                "SELECT bucket, data FROM rollups WHERE ch=? AND tier=? AND bucket>=? AND bucket<=? ORDER BY bucket",
                (cid, tier, lo, hi)):
            row = decode_rollup(bucket, data)
            out.add(bucket, {k: a for i, k in enumerate(keys) if i < len(row) and (a := row[i]) is not None})
        return out

    def read_sizes(self) -> dict[str, int]:
        """Bytes in the file by what they hold (``segs`` payload per codec, ``rollups`` per tier)."""
        db = self._reader()
        out: dict[str, int] = {}
        for codec, n, cells in db.execute("SELECT codec, sum(length(data)), sum(cells) FROM segs GROUP BY codec"):
            out[f"raw_{'hot' if codec == HOT else 'columnar'}_bytes"] = int(n or 0)
            out[f"raw_{'hot' if codec == HOT else 'columnar'}_values"] = int(cells or 0)
        for tier, n, rows in db.execute("SELECT tier, sum(length(data)), count(*) FROM rollups GROUP BY tier"):
            out[f"tier_{tier}_bytes"] = int(n or 0)
            out[f"tier_{tier}_buckets"] = int(rows)
        page, used = (db.execute("PRAGMA page_size").fetchone()[0],
                      db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0])
        out["file_used_bytes"] = int(page * used)
        return out

    def close_readers(self) -> None:
        with self._readers_lock:
            for db in self._readers:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._readers.clear()


def encode_rollup(bucket: int, row: list[Agg | None]) -> bytes:
    out: list[Any] = []
    for a in row:
        if a is None or not a[COUNT]:
            out.append(None)
            continue
        v: list[Any] = list(a)
        v[COUNT] = int(a[COUNT])
        for i in _TIMES:
            v[i] = int(a[i]) - bucket
        out.append(v)
    return _pack(out)


def decode_rollup(bucket: int, data: bytes) -> list[Agg | None]:
    row: list[Agg | None] = []
    for v in _unpack(data):
        if v is None:
            row.append(None)
            continue
        a = [float(x) for x in v]
        for i in _TIMES:
            a[i] += bucket
        assert len(a) == AGG_LEN
        row.append(a)
    return row


def _overlaps(times: list[int], start: int | None, end: int | None) -> bool:
    """``times`` (sorted) has a point in ``[start, end]`` (None: unbounded)."""
    if not times:
        return False
    i = 0 if start is None else bisect.bisect_left(times, start)
    return i < len(times) and (end is None or times[i] <= end)
