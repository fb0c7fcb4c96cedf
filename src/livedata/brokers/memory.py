"""The embedded default broker: everything in this process, bounded by age and count."""

from __future__ import annotations

import bisect
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from livedata.brokers.base import (
    KEY_TTL_S,
    ChannelInfo,
    ChannelLimitError,
    ChunkCallback,
    HeldLimitError,
    History,
    Key,
    KeyConflict,
    Subscribers,
    Unsubscribe,
    held_limit_text,
)
from livedata.core.frames import Batch, Chunk, FieldDef, Pos, Schema, rest_of
from livedata.core.window import Held, held_bytes, release


@dataclass(slots=True)
class _Channel:
    name: str
    epoch: str
    schema: Schema = field(default_factory=Schema)
    chunks: deque[Chunk] = field(default_factory=deque)
    points: int = 0
    seq: int = 0
    count: int = 0
    max_time: int | None = None
    disordered: set[int] = field(default_factory=set)
    """``pos.a`` of retained chunks that start before the newest time before them."""
    recent: deque[tuple[float, int]] = field(default_factory=deque)
    held: list[Held] = field(default_factory=list)
    """Points in the reorder window, in arrival order."""
    reserved: Schema = field(default_factory=Schema)
    """Fields of held points that the schema does not have yet."""
    held_seq: int = 0

    @property
    def head(self) -> Pos | None:
        return self.chunks[-1].pos if self.chunks else (Pos(self.seq, 0, self.count) if self.seq else None)


class MemoryBroker:
    """History per channel bounded by ``retention_s`` (by point time) and ``retention_points``.

    Points are values: a row of ten series at one time counts ten. Idempotency keys are kept for
    ``key_ttl_s`` (at most ``max_keys`` of them: the oldest go first); held points (reorder
    windows) take at most ``max_held_bytes`` (:func:`~livedata.core.window.held_bytes`).
    """

    def __init__(
        self,
        retention_s: float = 3600.0,
        retention_points: int = 200_000,
        max_channels: int = 10_000,
        wall: Callable[[], float] = time.time,
        max_held_bytes: int = 64 << 20,
        key_ttl_s: float = KEY_TTL_S,
        max_keys: int = 1_000_000,
    ) -> None:
        self.retention_ms = int(retention_s * 1000)
        self.retention_points = retention_points
        self.max_channels = max_channels
        self.wall = wall
        self.max_held_bytes = max_held_bytes
        self.key_ttl_s = key_ttl_s
        self.max_keys = max_keys
        self.token = secrets.token_hex(3)
        self._created = 0
        self._channels: dict[str, _Channel] = {}
        self._subs = Subscribers()
        self._keys: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """``channel:key`` -> (request digest, expiry on the wall clock), oldest first."""
        self._holding: set[str] = set()
        self.held_bytes = 0
        self.on_status: Callable[[bool, str], None] | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._channels.clear()

    def _channel(self, name: str, create: bool) -> _Channel | None:
        ch = self._channels.get(name)
        if ch is None and create:
            if len(self._channels) >= self.max_channels:
                raise ChannelLimitError(
                    f"too many channels: the limit is {self.max_channels} (delete some or raise --max-channels)"
                )
            self._created += 1
            ch = self._channels[name] = _Channel(name, f"{self.token}{self._created:x}")
        return ch

    def epoch_of(self, channel: str) -> str | None:
        ch = self._channels.get(channel)
        return ch.epoch if ch else None

    # --- idempotency keys --------------------------------------------------------------------------

    def _seen(self, channel: str, key: Key | None) -> bool:
        """True when ``key`` was recorded for this request (``key.replayed`` is set)."""
        if key is None:
            return False
        name = f"{channel}:{key.name}"
        have = self._keys.get(name)
        if have is None:
            return False
        digest, expires = have
        if expires < self.wall():
            del self._keys[name]
            return False
        if digest != key.digest:
            raise KeyConflict(f"Idempotency-Key {key.name[:80]!r} was already used on channel {channel!r} for a "
                              "different request: use a new key for new data")
        key.replayed = True
        return True

    def _record(self, channel: str, key: Key | None) -> None:
        if key is None:
            return
        keys = self._keys
        now = self.wall()
        name = f"{channel}:{key.name}"
        keys[name] = (key.digest, now + (self.key_ttl_s if key.ttl_s is None else key.ttl_s))
        keys.move_to_end(name)
        while keys:
            oldest, (_, expires) = next(iter(keys.items()))
            if expires >= now and len(keys) <= self.max_keys:
                break
            del keys[oldest]

    # --- writing ------------------------------------------------------------------------------------

    def _check(self, ch: _Channel | None, batch: Batch) -> list[FieldDef]:
        """The fields ``batch`` adds to the schema; SchemaError on a conflict with it or held fields."""
        if ch is None:
            return Schema().check(batch.fields.values())
        new = ch.schema.check(batch.fields.values())
        if ch.reserved.fields:
            ch.reserved.check(new)
        return new

    async def publish(self, channel: str, batch: Batch, key: Key | None = None) -> Pos:
        if self._seen(channel, key):
            ch = self._channels.get(channel)
            return (ch.head if ch else None) or Pos(0, 0, 0)
        pos = self.publish_now(channel, batch)
        self._record(channel, key)
        return pos

    def publish_now(self, channel: str, batch: Batch) -> Pos:
        """Synchronous publish (the memory broker never waits)."""
        ch = self._channels.get(channel)
        new = self._check(ch, batch)
        ch = self._channel(channel, create=True)
        assert ch is not None
        ch.schema.add(new)
        if ch.reserved.fields:
            for f in new:
                ch.reserved.fields.pop(f.key, None)
        batch = batch.sorted()
        if not batch.times:
            return ch.head or Pos(0, 0, 0)
        ch.seq += 1
        ch.count += len(batch.times)
        chunk = Chunk(Pos(ch.seq, 0, ch.count), batch.times, batch.columns, ch.max_time)
        if ch.max_time is not None and batch.times[0] < ch.max_time:
            ch.disordered.add(ch.seq)
        if ch.max_time is None or batch.times[-1] > ch.max_time:
            ch.max_time = batch.times[-1]
        ch.chunks.append(chunk)
        ch.points += chunk.cells
        now = self.wall()
        ch.recent.append((now, len(chunk)))
        while ch.recent and ch.recent[0][0] < now - 10:
            ch.recent.popleft()
        self._trim(ch, now)
        self._subs.deliver(channel, chunk, new)
        return chunk.pos

    def _trim(self, ch: _Channel, now: float) -> None:
        cutoff = int(now * 1000) - self.retention_ms
        chunks = ch.chunks
        limit = self.retention_points
        while len(chunks) > 1 and (chunks[0].times[-1] < cutoff or ch.points - chunks[0].cells >= limit):
            old = chunks.popleft()
            ch.points -= old.cells
            ch.disordered.discard(old.pos.a)
        if ch.points > limit:  # one chunk alone is over the count: keep its newest rows
            first = chunks[0]
            width = max(1, len(first.columns))
            drop = -(-(ch.points - limit) // width)
            kept = first.slice(drop, len(first))
            chunks[0] = kept
            ch.points -= first.cells - kept.cells
            ch.disordered.discard(first.pos.a)

    async def history(self, channel: str, start_ms: int | None, end_ms: int | None) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History("", [], None)
        chunks = list(ch.chunks)
        out: list[Chunk] = []
        in_order = not ch.disordered
        if start_ms is not None and (ch.max_time is None or start_ms > ch.max_time):
            chunks = []  # nothing that new: the head, schema and epoch only
        lo_chunk = 0
        if in_order and start_ms is not None:
            lo_chunk = max(0, bisect.bisect_left(chunks, start_ms, key=lambda c: c.times[-1]))
        for chunk in chunks[lo_chunk:]:
            times = chunk.times
            if end_ms is not None and in_order and times[0] > end_ms:
                break
            lo = 0 if start_ms is None or times[0] >= start_ms else bisect.bisect_left(times, start_ms)
            hi = len(times) if end_ms is None or times[-1] <= end_ms else bisect.bisect_right(times, end_ms)
            if lo == 0 and hi == len(times):
                out.append(chunk)
            elif lo < hi:
                out.append(chunk.slice(lo, hi))
        return History(ch.epoch, out, ch.head, list(ch.schema.fields.values()), sorted=in_order)

    async def read_after(self, channel: str, epoch: str, pos: Pos, limit: int = 0) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History("", [], None, lost=-1 if epoch else None)
        chunks = list(ch.chunks)
        fields = list(ch.schema.fields.values())
        if epoch != ch.epoch:
            return History(ch.epoch, chunks, ch.head, fields, lost=-1, sorted=not ch.disordered)
        i = bisect.bisect_right(chunks, pos, key=lambda c: c.pos)
        out = chunks[i:]
        if i:  # a position inside a chunk: the rest of that chunk first
            rest = rest_of(chunks[i - 1], pos)
            if rest is not None:
                out.insert(0, rest)
        lost = None
        if out and out[0].count_before > pos.count:
            lost = out[0].count_before - pos.count
        if limit and len(out) > limit:
            out = out[:limit]
        return History(ch.epoch, out, ch.head, fields, lost=lost, sorted=False)

    def subscribe(self, channel: str, callback: ChunkCallback, after: Pos | None) -> Unsubscribe:
        # Kept apart from the channel, so subscribing to a channel with no points yet creates nothing.
        return self._subs.add(channel, callback)

    async def channels(self) -> list[ChannelInfo]:
        now = self.wall()
        out = []
        for ch in self._channels.values():
            rate = sum(n for t, n in ch.recent if t >= now - 10) / 10
            out.append(ChannelInfo(ch.name, list(ch.schema.fields.values()), ch.max_time, rate, ch.points))
        return out

    async def fields(self, channel: str) -> list[FieldDef] | None:
        ch = self._channels.get(channel)
        return None if ch is None else list(ch.schema.fields.values())

    async def last_time(self, channel: str) -> int | None:
        ch = self._channels.get(channel)
        return None if ch is None else ch.max_time

    async def delete(self, channel: str) -> bool:
        ch = self._channels.pop(channel, None)
        if ch is not None and ch.held:
            self.held_bytes -= sum(e.size for e in ch.held)
        self._holding.discard(channel)
        return ch is not None

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """One process: every lease is always ours."""
        return True

    # --- reorder windows ----------------------------------------------------------------------------

    async def hold(self, channel: str, batch: Batch, hold_ms: int, key: Key | None = None) -> None:
        if not len(batch):
            await self.publish(channel, batch, key)
            return
        if self._seen(channel, key):
            return
        ch = self._channels.get(channel)
        new = self._check(ch, batch)
        size = held_bytes(batch)
        if self.held_bytes + size > self.max_held_bytes:
            raise HeldLimitError(held_limit_text(size, self.held_bytes, self.max_held_bytes), size,
                                 self.held_bytes, self.max_held_bytes)
        ch = self._channel(channel, create=True)
        assert ch is not None
        ch.reserved.add(new)
        ch.held_seq += 1
        ch.held.append(Held(ch.held_seq, self.wall() * 1000 + hold_ms, batch.sorted(), size))
        self.held_bytes += size
        self._holding.add(channel)
        self._record(channel, key)

    async def release(self, now_ms: int | None = None, everything: bool = False) -> int | None:
        now = self.wall() * 1000 if now_ms is None else now_ms
        nxt: float | None = None
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
                self.publish_now(name, out.batch)
            if not ch.held:
                self._holding.discard(name)
                ch.reserved = Schema()
                continue
            due = min(e.due for e in ch.held)
            nxt = due if nxt is None or due < nxt else nxt
        return None if nxt is None else int(nxt)

