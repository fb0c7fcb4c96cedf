"""Aggregated subscriptions (``max_points`` / ``resolution_ms``): buckets instead of raw points.

A subscription with ``bucket_ms = w`` gets, per bucket of ``w`` ms with data, two rows (each
numeric field's min and max in time order, ``core/rollup.py``). A row **replaces** any row the
client has at the same time: a bucket is sent again whenever a point lands in it.

* **Backfill** reads the coarsest broker tier that divides ``w`` and merges runs of its buckets
  (:func:`read_buckets`); below the finest tier it aggregates raw history. A resume (``since``)
  sends every bucket touched by a point after the position, whole.
* **Live**: an :class:`AggFeed` per (channel, interval, fields, ``w``) notes the buckets each
  chunk touches; at most once per batching interval (and as soon as newer data closes a bucket)
  it reads those buckets back from the broker and sends them, encoded once, to every subscriber,
  with the position of the last chunk it had seen. A read may include points after that position;
  every chunk after it causes another send of its buckets, so the client always ends up with the
  aggregate of every point up to its position, and resuming from any position is exact.

This path is apart from the raw feed's rounds (``feed.py``): aggregated readers get one small
message per interval, so they are written to one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence

from livedata.brokers.base import Broker
from livedata.core.frames import Chunk, FieldDef, Pos, Rows, data_body, frame_json, parse_position
from livedata.core.rollup import Buckets, aggregate, bucket_of, m4_rows, regroup, source_tier
from livedata.delivery.encode import select
from livedata.delivery.feed import Subscription
from livedata.delivery.settings import Settings
from livedata.delivery.stats import Stats
from livedata.tasks import wait_event

log = logging.getLogger("livedata.hub")

RUN_GAP = 8
"""Touched buckets closer than this many buckets are read back in one range."""


def agg_keys(fields: dict[str, FieldDef], wanted: tuple[str, ...] | None) -> list[str]:
    """The columns of an aggregated frame: the numeric fields asked for, in schema order."""
    return [k for k in select(fields, fields, wanted) if fields[k].type == "number"]


def effective_interval_ms(interval_ms: int, bucket_ms: int) -> int:
    """How often an aggregated feed may send: the subscription's interval, or (0) its bucket width
    within 50 ms .. 1 s."""
    return max(interval_ms, 50) if interval_ms else min(max(bucket_ms, 50), 1000)


async def read_buckets(broker: Broker, channel: str, width: int, start_ms: int, end_ms: int,
                       keys: Sequence[str]) -> tuple[Buckets, Pos | None, str, list[FieldDef]]:
    """Buckets of ``width`` overlapping ``[start_ms, end_ms]``, each whole: from the coarsest tier
    that divides ``width``, or from raw points below the finest tier. Returns the buckets, the
    head position they include, the epoch and the channel's fields."""
    lo = bucket_of(start_ms, width)
    hi = bucket_of(end_ms, width) + width - 1
    tier = source_tier(width, broker.tiers)
    if tier is not None:
        r = await broker.rollups(channel, tier.width_ms, lo, hi)
        return regroup(r.buckets, width), r.head, r.epoch, r.fields
    hist = await broker.history(channel, lo, hi)
    rows = Rows()
    fmap = {f.key: f for f in hist.fields}
    want = [k for k in keys if k in fmap]
    for c in hist.chunks:
        rows.extend(c.times, {k: c.columns[k] for k in want if k in c.columns})
    if not hist.sorted:
        rows.sort()
    return aggregate(rows.times, rows.columns, want, width), hist.head, hist.epoch, hist.fields


async def densest(broker: Broker, channel: str, start_ms: int, end_ms: int, keys: Sequence[str]) -> int:
    """About how many values the busiest of ``keys`` has in ``[start_ms, end_ms]`` (from a tier
    at most a tenth of the range wide, so the buckets at the ends add little; never fewer)."""
    span = max(1, end_ms - start_ms)
    tiers = [t for t in broker.tiers if t.width_ms * 10 <= span] or list(broker.tiers[:1])
    if not tiers:
        return 0
    r = await broker.rollups(channel, tiers[-1].width_ms, start_ms, end_ms)
    best = 0
    for k in keys:
        col = r.buckets.aggs.get(k) or []
        best = max(best, int(sum(a[0] for a in col if a is not None)))
    return best


def runs(starts: Iterable[int], width: int) -> list[tuple[int, int]]:
    """Sorted bucket starts grouped into ``(first, last)`` runs read back together."""
    out: list[tuple[int, int]] = []
    for s in sorted(starts):
        if out and s - out[-1][1] <= RUN_GAP * width:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


async def read_touched(broker: Broker, channel: str, width: int, touched: Iterable[int],
                       keys: Sequence[str]) -> tuple[Buckets, str, list[FieldDef]]:
    """The buckets ``touched`` (and any between them in a run), whole, in order."""
    out = Buckets(width)
    epoch: str = ""
    fields: list[FieldDef] = []
    for first, last in runs(touched, width):
        b, _, epoch, fields = await read_buckets(broker, channel, width, first, last, keys)
        for i, s in enumerate(b.starts):
            out.add(s, {k: a for k in keys if (a := b.get(k, i)) is not None})
    return out, epoch, fields


def touched_by(chunks: Iterable[Chunk], width: int) -> set[int]:
    out: set[int] = set()
    for c in chunks:
        t = c.times
        if not t:
            continue
        b, last = bucket_of(t[0], width), bucket_of(t[-1], width)
        if b == last:
            out.add(b)
        else:
            out.update(bucket_of(x, width) for x in t)
    return out


def bodies(b: Buckets, keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool, position: str | None,
           per_packet: int) -> list[bytes]:
    """Packets of bucket rows (the position on the last one only)."""
    rows = m4_rows(b, keys)
    schema = [fields[k] for k in keys] if with_schema else None
    n = len(rows)
    if n == 0:
        return [data_body(frame_json(schema, keys, rows), position, bucket_ms=b.width)] if with_schema else []
    out = []
    step = max(2, per_packet - per_packet % 2)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        part = Rows(rows.times[lo:hi], {k: c[lo:hi] for k, c in rows.columns.items()})
        last = hi == n
        out.append(data_body(frame_json(schema if lo == 0 else None, keys, part), position if last else None,
                             bucket_ms=b.width))
    return out


async def _send(sub: Subscription, packets: list[bytes], position: str | None) -> None:
    for i, body in enumerate(packets):
        if i:
            await sub.sink.drain()
        sub.send_data(body, position if i == len(packets) - 1 else None, force=True)


async def backfill(broker: Broker, settings: Settings, sub: Subscription, fields: list[FieldDef],
                   now_ms: int) -> Pos | None:
    """The schema and the buckets of the range (or, resuming, every bucket touched after the
    position); returns the head position they include."""
    req = sub.req
    w = req.bucket_ms
    fmap = {f.key: f for f in fields}
    keys = agg_keys(fmap, req.fields)
    per_packet = max(1000, settings.history_page_bytes // (16 * max(1, len(keys))))
    if req.since is not None:
        since = parse_position(req.since)
        epoch, pos = since.epoch, since.pos
        hist = await broker.read_after(req.channel, epoch, pos)
        fmap = {f.key: f for f in hist.fields or fields}
        keys = agg_keys(fmap, req.fields)
        if hist.lost:
            lost = "an unknown number of" if hist.lost < 0 else str(hist.lost)
            why = "the position is from another broker epoch (server restarted?)" if hist.lost < 0 else (
                "beyond retention")
            sub.control({"type": "notice", "level": "warning",
                         "text": f"{lost} points lost: {why}; resuming from the oldest retained point",
                         "lost": hist.lost})
        if hist.lost and req.from_ms is not None:
            return await _range(broker, sub, keys, fmap, now_ms, per_packet)
        touched = touched_by(hist.chunks, w)
        b, _, _ = await read_touched(broker, req.channel, w, touched, keys)
        head = hist.head if hist.head is not None else (pos if epoch == hist.epoch else None)
        position = head.encode(hist.epoch) if head is not None else None
        await _send(sub, bodies(b, keys, fmap, True, position, per_packet), position)
        sub.keys = tuple(keys)
        return head
    if req.from_ms is None:
        await _send(sub, bodies(Buckets(w), keys, fmap, True, None, per_packet), None)
        sub.keys = tuple(keys)
        return None
    return await _range(broker, sub, keys, fmap, now_ms, per_packet)


async def _range(broker: Broker, sub: Subscription, keys: list[str], fmap: dict[str, FieldDef], now_ms: int,
                 per_packet: int) -> Pos | None:
    req = sub.req
    assert req.from_ms is not None
    end = req.to_ms if req.to_ms is not None else max(now_ms, req.from_ms)
    b, head, epoch, fields = await read_buckets(broker, req.channel, req.bucket_ms, req.from_ms, end, keys)
    if fields:
        fmap = {f.key: f for f in fields}
        keys = agg_keys(fmap, req.fields)
    position = head.encode(epoch) if head is not None else None
    await _send(sub, bodies(b, keys, fmap, True, position, per_packet), position)
    sub.keys = tuple(keys)
    return head


class AggFeed:
    """The live buckets of one channel at one width, interval and field filter (see the module)."""

    def __init__(self, broker: Broker, stats: Stats, settings: Settings, channel: str, interval_ms: int,
                 wanted: tuple[str, ...] | None, bucket_ms: int, fields: list[FieldDef]) -> None:
        self.broker = broker
        self.stats = stats
        self.channel = channel
        self.interval_ms = interval_ms
        self.wanted = wanted
        self.bucket_ms = bucket_ms
        self.fields: dict[str, FieldDef] = {f.key: f for f in fields}
        self.keys = agg_keys(self.fields, wanted)
        self.per_packet = max(1000, settings.history_page_bytes // (16 * max(1, len(self.keys))))
        self.subs: set[Subscription] = set()
        self.joining = 0
        self.touched: set[int] = set()
        self.last_pos: Pos | None = None
        self.newest: int | None = None
        """The newest point time seen: a bucket that ends at or before it is closed."""
        self.recent: deque[tuple[Pos, frozenset[int]]] = deque(maxlen=settings.ring)
        self.every_s = effective_interval_ms(interval_ms, bucket_ms) / 1000
        self.wake = asyncio.Event()
        self.urgent = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()

    @property
    def key(self) -> tuple[str, int, tuple[str, ...] | None, int]:
        return (self.channel, self.interval_ms, self.wanted, self.bucket_ms)

    def on_chunk(self, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        if new_fields:
            for f in new_fields:
                self.fields.setdefault(f.key, f)
            self.keys = agg_keys(self.fields, self.wanted)
        touched = touched_by((chunk,), self.bucket_ms)
        self.recent.append((chunk.pos, frozenset(touched)))
        self.last_pos = chunk.pos
        if not chunk.times:
            return
        w = self.bucket_ms
        closes = self.newest is not None and bucket_of(chunk.times[-1], w) > bucket_of(self.newest, w)
        if self.newest is None or chunk.times[-1] > self.newest:
            self.newest = chunk.times[-1]
        self._touch(touched, urgent=closes)

    def _touch(self, touched: set[int], urgent: bool = False) -> None:
        if not touched:
            return
        self.touched |= touched
        if urgent:
            self.urgent.set()
        self.wake.set()
        if self.task is None and (self.subs or self.joining):
            self.task = self.loop.create_task(self._run(), name=f"agg:{self.channel}:{self.bucket_ms}")

    async def join(self, sub: Subscription, after: Pos | None) -> None:
        """Start sending to ``sub``, which has every bucket as of ``after``: first the buckets
        touched since (through the feed's own sends, so they arrive in order)."""
        gap: set[int] = set()
        while after is not None and self.last_pos is not None and after < self.last_pos:
            ring = self.recent
            if ring and ring[0][0] <= after:
                for pos, touched in ring:
                    if pos > after:
                        gap |= touched
                break
            epoch = self.broker.epoch_of(self.channel) or ""
            hist = await self.broker.read_after(self.channel, epoch, after)
            if sub.closed:
                return
            if not hist.chunks:
                break
            gap |= touched_by(hist.chunks, self.bucket_ms)
            after = hist.chunks[-1].pos
        sub.feed = self
        self.subs.add(sub)
        if sub.keys != tuple(self.keys):
            body = data_body(frame_json([self.fields[k] for k in self.keys], self.keys, Rows()), None,
                             bucket_ms=self.bucket_ms)
            sub.send_data(body, None, force=True)
            sub.keys = tuple(self.keys)
        self._touch(gap)

    def remove(self, sub: Subscription) -> None:
        self.subs.discard(sub)

    async def _run(self) -> None:
        last_sent = -1e18
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.touched:
                continue
            wait = last_sent + self.every_s - self.loop.time()
            if wait > 0 and not self.urgent.is_set():
                await wait_event(self.urgent, wait)
            self.urgent.clear()
            touched, pos = self.touched, self.last_pos
            self.touched = set()
            try:
                b, epoch, _ = await read_touched(self.broker, self.channel, self.bucket_ms, touched, self.keys)
            except Exception as exc:  # the broker is away: keep the buckets owed, try again later
                log.warning("aggregated feed %s: reading buckets failed: %s", self.channel, exc)
                self.touched |= touched
                await asyncio.sleep(1.0)
                self.wake.set()
                continue
            last_sent = self.loop.time()
            position = pos.encode(epoch or self.broker.epoch_of(self.channel) or "") if pos is not None else None
            keys = tuple(self.keys)
            plain: list[bytes] | None = None
            for sub in list(self.subs):
                if sub.closed:
                    continue
                if sub.keys != keys:
                    packets = bodies(b, self.keys, self.fields, True, position, self.per_packet)
                    sub.keys = keys
                else:
                    if plain is None:
                        plain = bodies(b, self.keys, self.fields, False, position, self.per_packet)
                    packets = plain
                for i, body in enumerate(packets):
                    sub.send_data(body, position if i == len(packets) - 1 else None)
            if b.starts:
                self.stats.delivered(self.channel, len(b.starts) * len(self.subs))

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
