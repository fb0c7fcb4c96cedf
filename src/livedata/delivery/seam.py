"""The backfill-to-live seam: history first, then live points, with no gap and no duplicate.

A subscription first creates its feed (so nothing published from now on is missed), then reads
history up to a head position H (:func:`backfill`), then joins the feed with ``after = H``
(:func:`join`); the feed skips chunks at or before ``after`` for it. If the feed ran ahead of H
meanwhile, the gap comes from the feed's ring of recent chunks, or from the broker. Positions
make it exact: no gap, no duplicate, whatever was published during the handover.
"""

from __future__ import annotations

from collections.abc import Sequence

from livedata.brokers.base import Broker, History
from livedata.core.frames import FieldDef, Pos, Rows, data_body, frame_json, parse_position
from livedata.delivery.encode import encode_chunks, select
from livedata.delivery.feed import Feed, Subscription
from livedata.delivery.settings import Settings


async def backfill(broker: Broker, settings: Settings, sub: Subscription, fields: list[FieldDef]) -> Pos | None:
    """Send the schema packet and any history; return the head position it reached."""
    req = sub.req
    keys = select([f.key for f in fields], {f.key: f for f in fields}, req.fields)
    if req.since is not None:
        since: str = req.since
        epoch, pos = parse_position(since)
        hist = await broker.read_after(req.channel, epoch, pos)
        fields = hist.fields or fields
        fmap = {f.key: f for f in fields}
        keys = select(fmap, fmap, req.fields)
        if hist.lost:
            lost = "an unknown number of" if hist.lost < 0 else str(hist.lost)
            why = "the position is from another broker epoch (server restarted?)" if hist.lost < 0 else (
                "beyond retention")
            sub.control({"type": "notice", "level": "warning",
                         "text": f"{lost} points lost: {why}; resuming from the oldest retained point",
                         "lost": hist.lost})
        # The schema packet names what the client already has: the head comes with the chunks.
        _send_schema(sub, fields, keys, since if epoch == hist.epoch and not hist.lost else None)
        await _send_chunks(sub, hist, keys, fmap, settings.history_chunks_per_packet)
        return hist.head if hist.head is not None else (pos if epoch == hist.epoch else None)
    if req.from_ms is None:
        _send_schema(sub, fields, keys, None)
        return None
    hist = await broker.history(req.channel, req.from_ms, req.to_ms)
    fields = hist.fields or fields
    fmap = {f.key: f for f in fields}
    keys = select(fmap, fmap, req.fields)
    rows = Rows()
    for c in hist.chunks:
        rows.extend(c.times, {k: c.columns[k] for k in keys if k in c.columns})
    if not hist.sorted:
        rows.sort()
    head_pos = hist.head.encode(hist.epoch) if hist.head else None
    per_packet = max(1000, settings.history_points_per_packet // max(1, len(keys)))
    n = len(rows)
    schema = [fmap[k] for k in keys]
    sub.keys = tuple(keys)
    if n == 0:
        sub.send_data(data_body(frame_json(schema, keys, rows), head_pos), head_pos, force=True)
    for lo in range(0, n, per_packet):
        hi = min(n, lo + per_packet)
        part = Rows(rows.times[lo:hi], {k: c[lo:hi] for k, c in rows.columns.items()})
        last = hi == n
        await sub.sink.drain()
        body = data_body(frame_json(schema if lo == 0 else None, keys, part), head_pos if last else None)
        sub.send_data(body, head_pos if last else None, force=True)
    return hist.head


async def join(broker: Broker, settings: Settings, sub: Subscription, feed: Feed, after: Pos | None) -> None:
    """Close the seam between what ``sub`` has (up to ``after``) and the feed's stream."""
    while True:
        if sub.closed:
            return
        if feed.last_pos is None or after is None or feed.last_pos <= after:
            feed.join(sub, after)
            return
        ring = feed.recent
        if ring and ring[0].pos <= after:
            pending = {id(c) for c in feed.pending}
            gap = [c for c in ring if c.pos > after and id(c) not in pending]
            if gap:
                epoch = broker.epoch_of(feed.channel) or ""
                position = gap[-1].pos.encode(epoch)
                for body in encode_chunks(gap, feed.keys, feed.fields, False, position):
                    sub.send_data(body, position, force=True)
                after = gap[-1].pos
            feed.join(sub, after)
            return
        epoch = broker.epoch_of(feed.channel) or ""
        hist = await broker.read_after(feed.channel, epoch, after)
        if not hist.chunks:
            feed.join(sub, after)
            return
        await _send_chunks(sub, hist, feed.keys, feed.fields, settings.history_chunks_per_packet)
        after = hist.chunks[-1].pos


def _send_schema(sub: Subscription, fields: list[FieldDef], keys: list[str], position: str | None) -> None:
    fmap = {f.key: f for f in fields}
    body = data_body(frame_json([fmap[k] for k in keys], keys, Rows()), position)
    sub.send_data(body, position, force=True)
    sub.keys = tuple(keys)


async def _send_chunks(sub: Subscription, hist: History, keys: Sequence[str], fields: dict[str, FieldDef],
                       step: int) -> None:
    chunks = hist.chunks
    for lo in range(0, len(chunks), step):
        part = chunks[lo:lo + step]
        position = part[-1].pos.encode(hist.epoch)
        await sub.sink.drain()
        for body in encode_chunks(part, keys, fields, False, position):
            sub.send_data(body, position, force=True)
