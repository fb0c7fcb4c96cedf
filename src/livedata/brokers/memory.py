"""The embedded default broker: everything in this process, bounded by age, count and bytes.

Each chunk's size in memory is estimated when it is stored (:func:`livedata.core.sizes.chunk_bytes`)
and counted per channel (``--retention-bytes``) and in the server's memory budget (history, see
:mod:`livedata.core.budget`); schemas are counted there too. When the budget needs room, the
oldest points of the channels that hold the most are dropped first, down to a common level
(:meth:`MemoryBroker.make_room`), so one big channel cannot push out everyone else's history.

Rollup tiers are kept here too (``core/rollup.py``'s ``TierStore``: 80 bytes per field and
bucket), each bounded by its tier's retention and by a quarter of ``retention_points``
field-buckets, so all tiers together hold at most as many aggregates as raw history holds values.
"""

from __future__ import annotations

import bisect
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
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
    Rollup,
    Subscribers,
    Unsubscribe,
    admit_fields,
    held_limit_text,
    retained_from,
)
from livedata.core import sizes
from livedata.core.budget import Budget, BudgetError
from livedata.core.frames import Batch, Chunk, FieldDef, Pos, Schema, rest_of
from livedata.core.rollup import DEFAULT_TIERS, Buckets, Tier, TierStore, check_tiers, chunk_rollup
from livedata.core.sources import is_generated
from livedata.core.window import Held, held_bytes, release


@dataclass(slots=True)
class _Channel:
    name: str
    epoch: str
    schema: Schema = field(default_factory=Schema)
    chunks: deque[Chunk] = field(default_factory=deque)
    points: int = 0
    bytes: int = 0
    """Estimated bytes of the retained chunks."""
    schema_bytes: int = 0
    """Bytes reserved in the budget for the channel and its fields."""
    seq: int = 0
    count: int = 0
    max_time: int | None = None
    disordered: set[int] = field(default_factory=set)
    """``pos.a`` of retained chunks that start before the newest time before them."""
    rate: list[float] = field(default_factory=lambda: [-1.0, 0.0, 0.0])
    """Points published per 10-second window: [window, this one, the one before]."""
    tiers: list[TierStore] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    """Keys of the number fields, in schema order: the ones with rollups."""
    held: list[Held] = field(default_factory=list)
    """Points in the reorder window, in arrival order."""
    reserved: Schema = field(default_factory=Schema)
    """Fields of held points that the schema does not have yet."""
    held_seq: int = 0

    @property
    def head(self) -> Pos | None:
        return self.chunks[-1].pos if self.chunks else (Pos(self.seq, 0, self.count) if self.seq else None)


RATE_WINDOW_S = 10.0


class MemoryBroker:
    """History per channel bounded by ``retention_s`` (by point time), ``retention_points`` and
    ``retention_bytes`` (0: no byte limit per channel), and in all by ``budget``.

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
        *,
        retention_bytes: int = 0,
        max_fields: int = 0,
        budget: Budget | None = None,
        tiers: Sequence[Tier] = DEFAULT_TIERS,
        max_held_bytes: int = 64 << 20,
        key_ttl_s: float = KEY_TTL_S,
        max_keys: int = 1_000_000,
    ) -> None:
        check_tiers(tiers)
        self.tiers = tuple(tiers)
        self.retention_ms = int(retention_s * 1000)
        self.retention_points = retention_points
        self.retention_bytes = retention_bytes or (1 << 62)
        self.max_channels = max_channels
        self.max_fields = max_fields
        """Fields per channel (0: no limit)."""
        self.wall = wall
        self.max_held_bytes = max_held_bytes if budget is None else min(max_held_bytes, budget.caps["held"])
        """The one bound on held points: ``--max-held-bytes``, and with a memory budget at most
        its ``held`` share (held points are in this process's memory, counted as kind ``held``)."""
        self.key_ttl_s = key_ttl_s
        self.max_keys = max_keys
        self.token = secrets.token_hex(3)
        self._created = 0
        self._channels: dict[str, _Channel] = {}
        self._counted = 0
        """Channels that count in ``max_channels`` (generated ones do not)."""
        self._subs = Subscribers()
        self.budget = budget
        if budget is not None:
            budget.on_history_over = self.make_room
        self.trimmed_for_room = 0
        """Chunks (or parts of them) dropped because the memory budget needed the room."""
        self._keys: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """``channel:key`` -> (request digest, expiry on the wall clock), oldest first."""
        self._holding: set[str] = set()
        self.held_bytes = 0
        self.on_status: Callable[[bool, str], None] | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for name in list(self._channels):
            self._forget(name)

    async def ping(self) -> None:
        return None  # in this process: always there

    def _new_channel(self, name: str) -> _Channel:
        counted = not is_generated(name)
        if counted and self._counted >= self.max_channels:
            raise ChannelLimitError.of(self.max_channels)
        self._created += 1
        ch = _Channel(name, f"{self.token}{self._created:x}")
        ch.tiers = [TierStore(t.width_ms) for t in self.tiers]
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

    def _admit(self, channel: str, ch: _Channel | None, batch: Batch) -> list[FieldDef]:
        """Check ``batch`` against the channel (schema, held fields, field limit, channel limit,
        memory budget), creating the channel when it is new; return the fields it adds to the
        schema. Raises SchemaError, FieldLimitError, ChannelLimitError, BudgetError (nothing changed)."""
        new, fresh = admit_fields(channel, ch.schema if ch else None, ch.reserved if ch else None,
                                  batch.fields.values(), self.max_fields)
        if ch is None:
            ch = self._new_channel(channel)
        grow = (sizes.CHANNEL if channel not in self._channels else 0) + sum(map(sizes.field_bytes, fresh))
        if grow and self.budget is not None and not self.budget.reserve("schema", grow):
            raise BudgetError(
                f"the server's memory budget for channels and fields is full: channel {channel!r} cannot "
                f"{'be created' if channel not in self._channels else 'gain new fields'} now (delete channels, "
                "or raise --max-memory)", "schema")
        if channel not in self._channels:
            self._channels[channel] = ch
            self._counted += not is_generated(channel)
        ch.schema_bytes += grow
        return new

    async def publish(self, channel: str, batch: Batch, key: Key | None = None) -> Pos:
        if self._seen(channel, key):
            ch = self._channels.get(channel)
            return (ch.head if ch else None) or Pos(0, 0, 0)
        pos = self.publish_now(channel, batch)
        self._record(channel, key)
        return pos

    def publish_now(self, channel: str, batch: Batch) -> Pos:
        """Synchronous publish (the memory broker never waits).

        Raises:
            SchemaError, FieldLimitError, ChannelLimitError, BudgetError: nothing was stored.
        """
        ch = self._channels.get(channel)
        new = self._admit(channel, ch, batch)
        ch = self._channels[channel]
        ch.schema.add(new)
        if new:
            ch.numeric = [f.key for f in ch.schema.fields.values() if f.type == "number"]
        if ch.reserved.fields:
            for f in new:
                ch.reserved.fields.pop(f.key, None)
        batch = batch.sorted()
        if not batch.times:
            return ch.head or Pos(0, 0, 0)
        ch.seq += 1
        ch.count += len(batch.times)
        chunk = Chunk(Pos(ch.seq, 0, ch.count), batch.times, batch.columns, ch.max_time)
        chunk.nbytes = sizes.chunk_bytes(batch.times, batch.columns, batch.fields)
        if ch.max_time is not None and batch.times[0] < ch.max_time:
            ch.disordered.add(ch.seq)
        if ch.max_time is None or batch.times[-1] > ch.max_time:
            ch.max_time = batch.times[-1]
        ch.chunks.append(chunk)
        ch.points += chunk.cells
        ch.bytes += chunk.nbytes
        now = self.wall()
        window = now // RATE_WINDOW_S
        rate = ch.rate
        if rate[0] != window:
            rate[:] = [window, 0.0, rate[1] if rate[0] == window - 1 else 0.0]
        rate[1] += len(chunk)
        over = self.budget.add_history(chunk.nbytes) if self.budget is not None else 0
        self._trim(ch, now)
        if over:
            self.make_room(over)
        self._roll(ch, chunk, now)
        self._subs.deliver(channel, chunk, new)
        return chunk.pos

    # --- retention ------------------------------------------------------------------------------

    def _drop_first(self, ch: _Channel) -> int:
        old = ch.chunks.popleft()
        ch.points -= old.cells
        ch.bytes -= old.nbytes
        ch.disordered.discard(old.pos.a)
        return old.nbytes

    def _cut_first(self, ch: _Channel, drop: int) -> int:
        """Drop the first ``drop`` rows of the oldest chunk (keeping at least its last row)."""
        first = ch.chunks[0]
        drop = min(drop, len(first) - 1)
        if drop <= 0:
            return 0
        kept = first.slice(drop, len(first))
        ch.chunks[0] = kept
        ch.points -= first.cells - kept.cells
        freed = first.nbytes - kept.nbytes
        ch.bytes -= freed
        ch.disordered.discard(first.pos.a)
        return freed

    def _trim(self, ch: _Channel, now: float) -> None:
        cutoff = int(now * 1000) - self.retention_ms
        chunks = ch.chunks
        limit, limit_bytes = self.retention_points, self.retention_bytes
        freed = 0
        while len(chunks) > 1 and (chunks[0].times[-1] < cutoff or ch.points - chunks[0].cells >= limit
                                   or ch.bytes - chunks[0].nbytes >= limit_bytes):
            freed += self._drop_first(ch)
        if ch.points > limit:  # one chunk alone is over the count: keep its newest rows
            first = chunks[0]
            width = max(1, first.cells // max(1, len(first)))
            freed += self._cut_first(ch, -(-(ch.points - limit) // width))
        if ch.bytes > limit_bytes and chunks[0].nbytes:
            first = chunks[0]
            freed += self._cut_first(ch, -(-(ch.bytes - limit_bytes) * len(first) // first.nbytes))
        if freed and self.budget is not None:
            self.budget.drop_history(freed)

    def _trim_to(self, ch: _Channel, level: int) -> int:
        """Drop the channel's oldest points until it holds at most ``level`` bytes (or one row)."""
        freed = 0
        while len(ch.chunks) > 1 and ch.bytes > level:
            freed += self._drop_first(ch)
        if ch.bytes > level and ch.chunks and ch.chunks[0].nbytes:
            first = ch.chunks[0]
            freed += self._cut_first(ch, -(-(ch.bytes - level) * len(first) // first.nbytes))
        return freed

    def make_room(self, need: int) -> None:
        """Free about ``need`` bytes of history: the channels holding the most come down to one
        level, their oldest points first (the memory budget calls this)."""
        chans = sorted(self._channels.values(), key=lambda c: c.bytes, reverse=True)
        level, prefix = 0, 0
        for i, ch in enumerate(chans):
            prefix += ch.bytes
            nxt = chans[i + 1].bytes if i + 1 < len(chans) else 0
            if prefix - (i + 1) * nxt >= need:
                level = max(0, (prefix - need) // (i + 1))
                break
        freed = 0
        for ch in chans:
            if ch.bytes <= level:
                break
            got = self._trim_to(ch, level)
            if got:
                self.trimmed_for_room += 1
                freed += got
        if freed and self.budget is not None:
            self.budget.drop_history(freed)

    def _roll(self, ch: _Channel, chunk: Chunk, now: float) -> None:
        """Merge the chunk into every tier, then trim each by its retention and its share of the cap."""
        if not ch.numeric:
            return
        now_ms = int(now * 1000)
        cap = max(1, self.retention_points // (4 * len(ch.numeric)))
        for tier, store, parts in zip(self.tiers, ch.tiers, chunk_rollup(chunk.times, chunk.columns, ch.numeric,
                                                                          self.tiers), strict=True):
            cutoff = now_ms - tier.retention_ms
            store.add(parts, cutoff)
            if len(store) > cap or (len(store) and store.starts[0] + store.width <= cutoff):
                store.trim(cutoff, cap)

    async def rollups(self, channel: str, width_ms: int, start_ms: int | None, end_ms: int | None) -> Rollup:
        ch = self._channels.get(channel)
        if ch is None:
            return Rollup("", None, [], Buckets(width_ms))
        for tier, store in zip(self.tiers, ch.tiers, strict=True):
            if tier.width_ms == width_ms:
                return Rollup(ch.epoch, ch.head, list(ch.schema.fields.values()), store.read(start_ms, end_ms))
        raise ValueError(f"no tier of {width_ms} ms (tiers: {[t.width_ms for t in self.tiers]})")

    # --- reading --------------------------------------------------------------------------------

    async def history(self, channel: str, start_ms: int | None, end_ms: int | None, *,
                      after: Pos | None = None, until: Pos | None = None, max_bytes: int = 0) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History("", [], None)
        start_ms = retained_from(start_ms, self.wall(), self.retention_ms)
        chunks: Sequence[Chunk] = ch.chunks
        head = ch.head if until is None else until
        out: list[Chunk] = []
        in_order = not ch.disordered
        if start_ms is not None and (ch.max_time is None or start_ms > ch.max_time):
            chunks = []  # nothing that new: the head, schema and epoch only
        lo_chunk = 0
        if in_order and start_ms is not None:
            lo_chunk = max(0, bisect.bisect_left(chunks, start_ms, key=lambda c: c.times[-1]))
        if after is not None:
            lo_chunk = max(lo_chunk, bisect.bisect_right(chunks, after, key=lambda c: c.pos))
        size = 0
        more = False
        for i in range(lo_chunk, len(chunks)):
            chunk = chunks[i]
            if head is not None and chunk.pos > head:
                break
            times = chunk.times
            if end_ms is not None and in_order and times[0] > end_ms:
                break
            if max_bytes and size >= max_bytes:
                more = True
                break
            lo = 0 if start_ms is None or times[0] >= start_ms else bisect.bisect_left(times, start_ms)
            hi = len(times) if end_ms is None or times[-1] <= end_ms else bisect.bisect_right(times, end_ms)
            if lo == 0 and hi == len(times):
                out.append(chunk)
                size += chunk.nbytes
            elif lo < hi:
                part = chunk.slice(lo, hi)
                out.append(part)
                size += part.nbytes
        return History(ch.epoch, out, head, list(ch.schema.fields.values()), sorted=in_order, more=more)

    async def read_after(self, channel: str, epoch: str, pos: Pos, limit: int = 0, *,
                         until: Pos | None = None, max_bytes: int = 0) -> History:
        ch = self._channels.get(channel)
        if ch is None:
            return History("", [], None, lost=-1 if epoch else None)
        chunks = ch.chunks
        fields = list(ch.schema.fields.values())
        head = ch.head if until is None else until
        lost = None
        out: list[Chunk] = []
        size = 0
        if epoch != ch.epoch:
            i, lost = 0, -1
        else:
            i = bisect.bisect_right(chunks, pos, key=lambda c: c.pos)
            if i:  # a position inside a chunk: the rest of that chunk first
                rest = rest_of(chunks[i - 1], pos)
                if rest is not None and (head is None or rest.pos <= head):
                    out.append(rest)
                    size += rest.nbytes
            first = out[0] if out else (chunks[i] if i < len(chunks) else None)
            if first is not None and first.count_before > pos.count:
                lost = first.count_before - pos.count
        more = False
        for j in range(i, len(chunks)):
            chunk = chunks[j]
            if head is not None and chunk.pos > head:
                break
            if (limit and len(out) >= limit) or (max_bytes and size >= max_bytes):
                more = True
                break
            out.append(chunk)
            size += chunk.nbytes
        return History(ch.epoch, out, head, fields, lost=lost, sorted=lost == -1 and not ch.disordered, more=more)

    def subscribe(self, channel: str, callback: ChunkCallback, after: Pos | None) -> Unsubscribe:
        # Kept apart from the channel, so subscribing to a channel with no points yet creates nothing.
        return self._subs.add(channel, callback)

    async def channels(self) -> list[ChannelInfo]:
        window, into = divmod(self.wall(), RATE_WINDOW_S)
        left = 1 - into / RATE_WINDOW_S
        out = []
        for ch in self._channels.values():
            w, cur, prev = ch.rate
            rate = (prev * left + cur) / RATE_WINDOW_S if w == window else (
                cur * left / RATE_WINDOW_S if w == window - 1 else 0.0)
            out.append(ChannelInfo(ch.name, list(ch.schema.fields.values()), ch.max_time, rate, ch.points))
        return out

    async def channel_count(self) -> int:
        return self._counted

    async def fields(self, channel: str) -> list[FieldDef] | None:
        ch = self._channels.get(channel)
        return None if ch is None else list(ch.schema.fields.values())

    async def last_time(self, channel: str) -> int | None:
        ch = self._channels.get(channel)
        return None if ch is None else ch.max_time

    def _forget(self, channel: str) -> bool:
        ch = self._channels.pop(channel, None)
        if ch is None:
            return False
        self._counted -= not is_generated(channel)
        if ch.held:
            self._unhold(sum(e.size for e in ch.held))
        self._holding.discard(channel)
        if self.budget is not None:
            self.budget.drop_history(ch.bytes)
            self.budget.release("schema", ch.schema_bytes)
        return True

    async def delete(self, channel: str) -> bool:
        return self._forget(channel)

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """One process: every lease is always ours."""
        return True

    @property
    def history_bytes(self) -> int:
        """Estimated bytes of every channel's retained chunks."""
        return sum(ch.bytes for ch in self._channels.values())

    # --- reorder windows ----------------------------------------------------------------------------

    async def hold(self, channel: str, batch: Batch, hold_ms: int, key: Key | None = None) -> None:
        if not len(batch):
            await self.publish(channel, batch, key)
            return
        if self._seen(channel, key):
            return
        size = held_bytes(batch)
        if self.held_bytes + size > self.max_held_bytes:
            raise HeldLimitError(held_limit_text(size, self.held_bytes, self.max_held_bytes), size,
                                 self.held_bytes, self.max_held_bytes)
        new = self._admit(channel, self._channels.get(channel), batch)
        ch = self._channels[channel]
        ch.reserved.add(new)
        ch.held_seq += 1
        ch.held.append(Held(ch.held_seq, self.wall() * 1000 + hold_ms, batch.sorted(), size))
        self.held_bytes += size
        if self.budget is not None:
            self.budget.take("held", size)
        self._holding.add(channel)
        self._record(channel, key)

    def _unhold(self, n: int) -> None:
        self.held_bytes -= n
        if self.budget is not None:
            self.budget.release("held", n)

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
                self._unhold(before - sum(e.size for e in ch.held))
                self.publish_now(name, out.batch)
            if not ch.held:
                self._holding.discard(name)
                ch.reserved = Schema()
                continue
            due = min(e.due for e in ch.held)
            nxt = due if nxt is None or due < nxt else nxt
        return None if nxt is None else int(nxt)

