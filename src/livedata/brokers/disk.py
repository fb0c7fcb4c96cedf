"""The disk broker (``--data-dir DIR``): channels, history, rollups and positions in one SQLite file.

About 700 lines: the loop side of the broker (what it keeps per channel, the writer's queue and
its commits, the readers); the SQLite side is ``disk_store.py``. The two halves are the split.

Why this shape (docs/architecture.md says more): the loop keeps what the memory broker keeps
*about* a channel (schema, epoch, head, newest time, rate, subscribers), so a publish is checked,
numbered and rolled up on the loop as before, with no I/O. The points themselves go to SQLite on
**one writer thread**, which takes every publish queued since its last commit and stores them in
one transaction (group commit). A publish returns, and its chunk is delivered to subscribers, only
once that transaction is committed, in log order; so every position a client ever sees is on disk,
and after a restart or a ``kill -9`` it resumes exactly (same epoch, no ``lost`` notice).

Durability of a ``204`` (``--fsync``, like Redis' ``appendfsync``):

``always``    the commit is fsynced before the ``204`` (``synchronous=FULL``): survives power loss.
``interval``  (default) the commit is in the OS (the WAL file) before the ``204``: survives a
              ``kill -9`` of livedata, always; the WAL is fsynced every second, so a power loss or
              an OS crash loses at most about the last second.
``never``     as ``interval`` without the fsync every second (the OS writes back when it likes;
              SQLite still fsyncs at checkpoints, so the file stays consistent).

Exactly once: an idempotency key is checked on the loop (which numbers every write, so nothing
races it) and recorded in the same transaction as the chunk it came with; a retry while that
transaction is still open waits for it. Points held by reorder windows (:meth:`DiskBroker.hold`)
are written to the file before the ``204`` (table ``held``, with the same ``--fsync``), so they
survive a restart and a ``kill -9``; :meth:`DiskBroker.release` deletes the entries it releases in
the transaction that appends their points, so each is published exactly once. Held points take at
most ``max_held_bytes`` (counted in this process's memory, where the loop keeps them too).

Reads (history, positions, rollups) run on a small thread pool, each with its own connection;
the writer also trims retention and compacts hot segments into columnar ones when it is idle.
Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from livedata.brokers.base import (
    KEY_TTL_S,
    BrokerError,
    BrokerStartError,
    ChannelInfo,
    ChannelLimitError,
    ChunkCallback,
    HeldLimitError,
    History,
    Key,
    KeyConflict,
    Rollup,
    Subscribers,
    Unsubscribe,
    admit_fields,
    held_limit_text,
    retained_from,
)
from livedata.brokers.disk_store import Delete, Hold, Op, Publish, Store
from livedata.brokers.redis_codec import decode_held, encode_held
from livedata.core.frames import Batch, Chunk, FieldDef, Pos, Schema, rest_of, window
from livedata.core.rollup import DEFAULT_TIERS, Buckets, Tier, check_tiers, chunk_rollup
from livedata.core.sources import is_generated
from livedata.core.window import Held, held_bytes, release

log = logging.getLogger("livedata.disk")

FSYNC_MODES = ("always", "interval", "never")
FSYNC_EVERY_S = 1.0
MAX_GROUP = 2000
"""Publishes in one transaction at most."""
_STOP = object()


@dataclass(slots=True)
class _Channel:
    id: int
    name: str
    epoch: str
    schema: Schema = field(default_factory=Schema)
    seq: int = 0
    count: int = 0
    pending_max: int | None = None
    """Newest time among every chunk numbered (committed or not): the next chunk's ``hwm``."""
    max_time: int | None = None
    head: Pos | None = None
    """The last committed (and delivered) chunk's position."""
    cells: int = 0
    numeric: list[str] = field(default_factory=list)
    recent: deque[tuple[float, int]] = field(default_factory=deque)
    created: bool = False
    """True once its row is on disk (or queued to be written)."""
    unsaved: list[FieldDef] = field(default_factory=list)
    """Fields in ``schema`` not sent to the writer yet (a batch with no points adds fields only here)."""
    held: list[Held] = field(default_factory=list)
    """Points in the reorder window, in arrival order (as on disk, table ``held``)."""
    reserved: Schema = field(default_factory=Schema)
    """Fields of held points that the schema does not have yet."""
    held_seq: int = 0


@dataclass(slots=True)
class _Key:
    digest: str
    expires: float
    pending: asyncio.Future[Any] | None = None
    """The write it came with, until committed."""


class DiskBroker:
    """A broker in one SQLite file under ``data_dir``; see the module docstring."""

    def __init__(
        self,
        data_dir: str,
        retention_s: float = 3600.0,
        retention_points: int = 200_000,
        max_channels: int = 10_000,
        wall: Callable[[], float] = time.time,
        tiers: Sequence[Tier] = DEFAULT_TIERS,
        fsync: str = "interval",
        compact_after_s: float = 30.0,
        *,
        max_fields: int = 0,
        retention_bytes: int = 0,
        max_held_bytes: int = 64 << 20,
        key_ttl_s: float = KEY_TTL_S,
    ) -> None:
        """``retention_bytes`` bounds history held in memory (``--retention-bytes``); this broker
        holds its history on disk, bounded by ``retention_s`` and ``retention_points``, so it is
        accepted and does not apply."""
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, got {fsync!r}")
        check_tiers(tiers)
        self.data_dir = data_dir
        self.tiers = tuple(tiers)
        self.retention_ms = int(retention_s * 1000)
        self.retention_points = retention_points
        self.max_channels = max_channels
        self.max_fields = max_fields
        """Fields per channel (0: no limit)."""
        self.retention_bytes = retention_bytes
        self.wall = wall
        self.max_held_bytes = max_held_bytes
        self.key_ttl_s = key_ttl_s
        self.held_bytes = 0
        self._keys: dict[tuple[str, str], _Key] = {}
        """(channel, key) -> the request's digest and when the key expires (wall s)."""
        self._holding: set[str] = set()
        self.fsync = fsync
        self.on_status: Callable[[bool, str], None] | None = None
        self.token = secrets.token_hex(3)
        self.store = Store(os.path.join(data_dir, "livedata.db"), fsync, self.tiers, self.retention_ms,
                           retention_points, wall, compact_after_s)
        self._channels: dict[str, _Channel] = {}
        self._by_id: dict[int, _Channel] = {}
        self._next_id = 1
        self._subs = Subscribers()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gen = 0
        self._lock_fd: int | None = None
        self._error: str | None = None

    # --- lifetime ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            self._lock()
        except OSError as exc:
            raise BrokerStartError(f"cannot use the data directory {self.data_dir}: {exc.strerror or exc}") from None
        opened: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._writer, args=(opened,), name="livedata-disk-writer", daemon=True)
        self._thread.start()
        try:
            loaded = await asyncio.wrap_future(opened)
        except Exception as exc:
            self._thread = None
            self._unlock()
            raise BrokerStartError(f"cannot open the data directory {self.data_dir}: {exc}") from None
        self.token = loaded.token
        for cid, name, epoch, seq, count, max_time, fields, cells in loaded.channels:
            ch = _Channel(cid, name, epoch, seq=seq, count=count, pending_max=max_time, max_time=max_time,
                          head=Pos(seq, 0, count) if seq else None, cells=cells, created=True)
            ch.schema.add(fields)
            ch.numeric = [f.key for f in fields if f.type == "number"]
            self._channels[name] = ch
            self._by_id[cid] = ch
            self._next_id = max(self._next_id, cid + 1)
        for cid, k, digest, exp in loaded.keys:
            kch = self._by_id.get(cid)
            if kch is not None:
                self._keys[(kch.name, k)] = _Key(digest, exp)
        for cid, hid, due, data, size in loaded.held:
            hch = self._by_id.get(cid)
            if hch is not None:
                self._load_held(hch, [(hid, due, data, size)])
        self._readers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="livedata-disk-read")
        log.info("data directory %s: %d channels (fsync %s)", self.data_dir, len(self._channels), self.fsync)

    def _lock(self) -> None:
        path = os.path.join(self.data_dir, "lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BrokerStartError(f"the data directory {self.data_dir} is in use by another livedata (pid {other}):"
                                   " stop it or give another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)
        readers, self._readers = self._readers, None
        if readers is not None:
            await asyncio.to_thread(readers.shutdown, True)
        self.store.close_readers()
        self._subs.clear()
        self._channels.clear()
        self._by_id.clear()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the writer thread -------------------------------------------------------------------------

    def _writer(self, opened: concurrent.futures.Future[Any]) -> None:
        try:
            opened.set_result(self.store.open(self.token))
        except BaseException as exc:
            opened.set_exception(exc)
            return
        q = self._queue
        last_sync = time.monotonic()
        unsynced = False
        more = False
        bad_gen = -1
        stop = False
        while not stop:
            try:
                first = q.get(timeout=0 if more else (0.2 if unsynced else 1.0))
            except queue.Empty:
                first = None
            batch: list[Op] = []
            item = first
            while item is not None:
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
                if len(batch) >= MAX_GROUP:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    item = None
            stale = [op for op in batch if op.gen <= bad_gen]
            ops = [op for op in batch if op.gen > bad_gen]
            if stale:
                self._report(stale, "an earlier write to the data directory failed", None)
            if ops:
                try:
                    trimmed = self.store.w_group(ops)
                except Exception as exc:
                    log.error("writing to %s failed: %s", self.data_dir, exc)
                    bad_gen = max(op.gen for op in ops)
                    heads = {op.ch: (self.store.w_channel(op.ch), self.store.w_held(op.ch)) for op in ops}
                    self._report(ops, f"the data directory cannot be written ({exc})", heads)
                else:
                    unsynced = True
                    self._report(ops, None, None, trimmed)
            now = time.monotonic()
            if unsynced and (stop or (self.fsync == "interval" and now - last_sync >= FSYNC_EVERY_S)):
                try:
                    self.store.w_fsync()
                except OSError as exc:
                    log.error("fsync of %s failed: %s", self.data_dir, exc)
                last_sync, unsynced = now, False
            if not stop:
                try:
                    more = self.store.w_maintain(busy=bool(ops) or not q.empty())
                except Exception:
                    log.exception("retention or compaction in %s failed; retrying later", self.data_dir)
                    more = False
                trimmed = self.store.trimmed
                if trimmed:
                    self.store.trimmed = {}
                    self._call(self._trimmed, trimmed)
        self.store.w_close()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _report(self, ops: list[Op], error: str | None, heads: dict[int, Any] | None,
                trimmed: dict[int, int] | None = None) -> None:
        self._call(self._done, ops, error, heads, trimmed)

    # --- on the loop: a group is committed (or failed) -------------------------------------------------

    def _done(self, ops: list[Op], error: str | None, heads: dict[int, Any] | None,
              trimmed: dict[int, int] | None = None) -> None:
        if error is not None:
            self._gen = max(self._gen, max(op.gen for op in ops) + 1)
            if heads is not None:
                self._reset(heads)
            for op in ops:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(BrokerError(f"{error}: nothing was stored"))
            return
        now = self.wall()
        for op in ops:
            if isinstance(op, Publish):
                ch = self._by_id.get(op.ch)
                c = op.chunk
                if ch is not None:
                    ch.head = c.pos
                    if ch.max_time is None or c.times[-1] > ch.max_time:
                        ch.max_time = c.times[-1]
                    ch.cells += op.cells
                    ch.recent.append((now, len(c.times)))
                    while ch.recent and ch.recent[0][0] < now - 10:
                        ch.recent.popleft()
                    self._subs.deliver(ch.name, c, op.new_fields)
                if op.future is not None and not op.future.done():
                    op.future.set_result(c.pos)
            elif op.future is not None and not op.future.done():
                op.future.set_result(None)
        if trimmed:
            self._trimmed(trimmed)

    def _load_held(self, ch: _Channel, rows: list[tuple[int, float, bytes, int]]) -> None:
        """Add held entries read from the file to ``ch`` (its reserved fields and the byte count)."""
        for hid, due, data, size in rows:
            batch, _ = decode_held(data)
            ch.held.append(Held(hid, due, batch, size))
            ch.held_seq = max(ch.held_seq, hid)
            ch.reserved.add(f for k, f in batch.fields.items() if k not in ch.schema.fields)
            self.held_bytes += size
        if ch.held:
            self._holding.add(ch.name)

    def _reset(self, heads: dict[int, Any]) -> None:
        """After a failed write: every channel it touched goes back to what is committed."""
        for cid, (head, held) in heads.items():
            ch = self._by_id.get(cid)
            if ch is None:
                continue
            self.held_bytes -= sum(e.size for e in ch.held)
            ch.held, ch.reserved = [], Schema()
            if head is None:
                self._by_id.pop(cid, None)
                if self._channels.get(ch.name) is ch:
                    del self._channels[ch.name]
                continue
            seq, count, max_time, fields = head
            ch.seq, ch.count, ch.pending_max, ch.max_time = seq, count, max_time, max_time
            ch.head = Pos(seq, 0, count) if seq else None
            ch.schema = Schema()
            ch.schema.add(fields)
            ch.numeric = [f.key for f in fields if f.type == "number"]
            ch.unsaved = []
            self._load_held(ch, held)

    def _trimmed(self, trimmed: dict[int, int]) -> None:
        for cid, cells in trimmed.items():
            ch = self._by_id.get(cid)
            if ch is not None:
                ch.cells = max(0, ch.cells - cells)

    # --- writing -----------------------------------------------------------------------------------

    def epoch_of(self, channel: str) -> str | None:
        ch = self._channels.get(channel)
        return ch.epoch if ch else None

    def _submit(self, op: Op, key: Key | None = None) -> asyncio.Future[Any]:
        """Queue ``op`` for the writer (with ``key`` recorded in its transaction)."""
        if self._thread is None:
            raise BrokerError("the disk broker is not running")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        op.future = fut
        if not isinstance(op, Delete):
            op.key = self._key_arg(op.name, key, fut)
        self._queue.put(op)
        return fut

    # --- idempotency keys --------------------------------------------------------------------------

    async def _seen(self, channel: str, key: Key | None) -> bool:
        """True when ``key`` was recorded for this request (``key.replayed`` is set); a write with
        the key still on its way to the file is waited for first."""
        if key is None:
            return False
        while True:
            have = self._keys.get((channel, key.name))
            if have is None:
                return False
            if have.expires < self.wall():
                del self._keys[(channel, key.name)]
                return False
            if have.digest != key.digest:
                raise KeyConflict(f"Idempotency-Key {key.name[:80]!r} was already used on channel {channel!r} for "
                                  "a different request: use a new key for new data")
            pending = have.pending
            if pending is None or (pending.done() and not pending.cancelled() and pending.exception() is None):
                key.replayed = True
                return True
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
            # failed: the key was dropped with it (look again); committed: a replay

    def _key_arg(self, channel: str, key: Key | None, fut: asyncio.Future[Any]) -> tuple[str, str, float] | None:
        if key is None:
            return None
        expires = self.wall() + (self.key_ttl_s if key.ttl_s is None else key.ttl_s)
        rec = self._keys[(channel, key.name)] = _Key(key.digest, expires, fut)

        def settled(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                if self._keys.get((channel, key.name)) is rec:
                    del self._keys[(channel, key.name)]
            else:
                rec.pending = None

        fut.add_done_callback(settled)
        return key.name, key.digest, expires

    # --- writing -----------------------------------------------------------------------------------

    def _admit(self, channel: str, batch: Batch) -> tuple[_Channel, list[FieldDef]]:
        """Check ``batch`` (schema, held fields, field limit, channel limit), creating the channel
        on the loop if it is new; the fields it adds to the schema. Nothing changes on an error."""
        ch = self._channels.get(channel)
        new, _ = admit_fields(channel, ch.schema if ch else None, ch.reserved if ch else None,
                              batch.fields.values(), self.max_fields)
        if ch is None:
            if not is_generated(channel) and self._counted() >= self.max_channels:
                raise ChannelLimitError.of(self.max_channels)
            cid = self._next_id
            self._next_id += 1
            ch = self._channels[channel] = self._by_id[cid] = _Channel(cid, channel, f"{self.token}{cid:x}")
        return ch, new

    def _append(self, ch: _Channel, batch: Batch, new: list[FieldDef], key: Key | None = None,
                take: list[int] | None = None, keep: list[tuple[int, bytes, int]] | None = None
                ) -> asyncio.Future[Any] | None:
        """Number ``batch`` (sorted) as the channel's next chunk and queue it for the writer; None
        when it has no points (its new fields wait for the next chunk)."""
        ch.schema.add(new)
        if new:
            ch.numeric = [f.key for f in ch.schema.fields.values() if f.type == "number"]
            ch.unsaved.extend(new)
            if ch.reserved.fields:
                for f in new:
                    ch.reserved.fields.pop(f.key, None)
        if not batch.times:
            return None
        ch.seq += 1
        ch.count += len(batch.times)
        chunk = Chunk(Pos(ch.seq, 0, ch.count), batch.times, batch.columns, ch.pending_max)
        if ch.pending_max is None or batch.times[-1] > ch.pending_max:
            ch.pending_max = batch.times[-1]
        parts = chunk_rollup(chunk.times, chunk.columns, ch.numeric, self.tiers) if ch.numeric else []
        op = Publish(ch.id, ch.name, ch.epoch, not ch.created, chunk, ch.unsaved, list(ch.numeric), parts,
                     chunk.cells, self._gen, take=take or [], keep=keep or [])
        ch.created = True
        ch.unsaved = []
        return self._submit(op, key)

    async def publish(self, channel: str, batch: Batch, key: Key | None = None) -> Pos:
        if await self._seen(channel, key):
            ch = self._channels.get(channel)
            return (ch.head if ch else None) or Pos(0, 0, 0)
        ch, new = self._admit(channel, batch)
        fut = self._append(ch, batch.sorted(), new, key)
        if fut is None:
            return ch.head or Pos(0, 0, 0)
        pos: Pos = await fut
        return pos

    async def hold(self, channel: str, batch: Batch, hold_ms: int, key: Key | None = None) -> None:
        if not len(batch):
            await self.publish(channel, batch, key)
            return
        if await self._seen(channel, key):
            return
        size = held_bytes(batch)
        if self.held_bytes + size > self.max_held_bytes:
            raise HeldLimitError(held_limit_text(size, self.held_bytes, self.max_held_bytes), size,
                                 self.held_bytes, self.max_held_bytes)
        ch, new = self._admit(channel, batch)
        ch.reserved.add(new)
        ch.held_seq += 1
        entry = Held(ch.held_seq, self.wall() * 1000 + hold_ms, batch.sorted(), size)
        ch.held.append(entry)
        self.held_bytes += size
        self._holding.add(channel)
        op = Hold(ch.id, channel, ch.epoch, not ch.created, entry.id, entry.due, encode_held(entry.batch, size), size,
                  self._gen)
        ch.created = True
        await self._submit(op, key)

    async def release(self, now_ms: int | None = None, everything: bool = False) -> int | None:
        now = self.wall() * 1000 if now_ms is None else now_ms
        nxt: float | None = None
        futures: list[asyncio.Future[Any]] = []
        for name in list(self._holding):
            ch = self._channels.get(name)
            if ch is None or not ch.held:
                self._holding.discard(name)
                continue
            out = release(ch.held, now, everything)
            if out is not None:
                gone = set(out.gone)
                kept = {e.id: e for e in out.kept}
                before = sum(e.size for e in ch.held)
                ch.held = [kept.get(e.id, e) for e in ch.held if e.id not in gone]
                self.held_bytes -= before - sum(e.size for e in ch.held)
                new = ch.schema.check(out.batch.fields.values())
                fut = self._append(ch, out.batch, new, take=list(out.gone),
                                   keep=[(e.id, encode_held(e.batch, e.size), e.size) for e in out.kept])
                if fut is not None:
                    futures.append(fut)
            if not ch.held:
                self._holding.discard(name)
                ch.reserved = Schema()
                continue
            due = min(e.due for e in ch.held)
            nxt = due if nxt is None or due < nxt else nxt
        if futures:
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:  # what failed is held again (reloaded from the file)
                raise failed if isinstance(failed, BrokerError) else BrokerError(str(failed))
        return None if nxt is None else int(nxt)

    async def delete(self, channel: str) -> bool:
        ch = self._channels.pop(channel, None)
        if ch is None:
            return False
        self._by_id.pop(ch.id, None)
        self.held_bytes -= sum(e.size for e in ch.held)
        self._holding.discard(channel)
        if ch.created:
            await self._submit(Delete(ch.id, self._gen))
        return True

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """One process per data directory (it is locked): every lease is ours."""
        return True

    # --- reading -----------------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._readers is None:
            raise BrokerError("the disk broker is not running")
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def ping(self) -> None:
        if self._readers is None:
            raise BrokerError("the disk broker is not running")

    async def history(self, channel: str, start_ms: int | None, end_ms: int | None, *,
                      after: Pos | None = None, until: Pos | None = None, max_bytes: int = 0) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History("", [], None)
        start_ms = retained_from(start_ms, self.wall(), self.retention_ms)
        fields = list(ch.schema.fields.values())
        head = until or ch.head
        if head is None:
            return History(ch.epoch, [], None, fields)
        chunks, more = await self._read(self.store.read_range, ch.id, start_ms, end_ms, head.a,
                                        after.a if after is not None else 0, max_bytes, ch.schema.fields)
        out: list[Chunk] = []
        in_order = True
        for c in chunks:
            w = window(c, start_ms, end_ms)
            if w is not None:
                out.append(w)
                in_order = in_order and (w.hwm is None or not w.times or w.times[0] >= w.hwm)
        return History(ch.epoch, out, head, fields, sorted=in_order, more=more, copied=True)

    async def read_after(self, channel: str, epoch: str, pos: Pos, limit: int = 0, *,
                         until: Pos | None = None, max_bytes: int = 0) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History("", [], None, lost=-1 if epoch else None)
        fields = list(ch.schema.fields.values())
        head = until or ch.head
        if head is None:
            return History(ch.epoch, [], None, fields, lost=-1 if epoch != ch.epoch else None)
        same = epoch == ch.epoch
        after = max(0, pos.a - 1) if same else 0  # from the position's own chunk: a cut may fall inside it
        chunks, oldest_seq, oldest_c0, more = await self._read(self.store.read_after, ch.id, after, head.a,
                                                               max_bytes, ch.schema.fields)
        if same and chunks and chunks[0].pos.a == pos.a:
            rest = rest_of(chunks[0], pos)
            chunks = chunks[1:] if rest is None else [rest, *chunks[1:]]
            if not chunks and more:  # the page was that chunk alone, all of it sent: the next page
                chunks, oldest_seq, oldest_c0, more = await self._read(self.store.read_after, ch.id, pos.a, head.a,
                                                                       max_bytes, ch.schema.fields)
        lost: int | None = None
        if not same:
            lost = -1
        elif oldest_seq is not None and pos.a < oldest_seq and oldest_c0 is not None and oldest_c0 > pos.count:
            lost = oldest_c0 - pos.count
        if limit and len(chunks) > limit:
            chunks = chunks[:limit]
            more = True
        in_order = all(c.hwm is None or not c.times or c.times[0] >= c.hwm for c in chunks)
        return History(ch.epoch, chunks, head, fields, lost=lost, sorted=in_order and same, more=more, copied=True)

    async def rollups(self, channel: str, width_ms: int, start_ms: int | None, end_ms: int | None) -> Rollup:
        ch = self._channels.get(channel)
        if ch is None:
            return Rollup("", None, [], Buckets(width_ms))
        if all(t.width_ms != width_ms for t in self.tiers):
            raise ValueError(f"no tier of {width_ms} ms (tiers: {[t.width_ms for t in self.tiers]})")
        fields = list(ch.schema.fields.values())
        head = ch.head
        keys = [f.key for f in fields]
        lo = -(2**62) if start_ms is None else start_ms - width_ms + 1
        hi = 2**62 if end_ms is None else end_ms
        b: Buckets = await self._read(self.store.read_rollups, ch.id, width_ms, lo, hi, keys)
        return Rollup(ch.epoch, head, fields, b)

    def subscribe(self, channel: str, callback: ChunkCallback, after: Pos | None) -> Unsubscribe:
        return self._subs.add(channel, callback)

    async def channels(self) -> list[ChannelInfo]:
        now = self.wall()
        out = []
        for ch in self._channels.values():
            if ch.head is None and not ch.schema.fields:
                continue
            rate = sum(n for t, n in ch.recent if t >= now - 10) / 10
            out.append(ChannelInfo(ch.name, list(ch.schema.fields.values()), ch.max_time, rate, ch.cells))
        return out

    def _counted(self) -> int:
        return sum(1 for name in self._channels if not is_generated(name))

    async def channel_count(self) -> int:
        """Channels that count in the channel limit (generated ones do not)."""
        return self._counted()

    async def fields(self, channel: str) -> list[FieldDef] | None:
        ch = self._channels.get(channel)
        return None if ch is None else list(ch.schema.fields.values())

    async def last_time(self, channel: str) -> int | None:
        ch = self._channels.get(channel)
        return None if ch is None else ch.max_time

    async def sizes(self) -> dict[str, int]:
        """Bytes on disk by what they hold (for benchmarks and ``/metrics``)."""
        out: dict[str, int] = await self._read(self.store.read_sizes)
        return out
