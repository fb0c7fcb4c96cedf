"""The backfill-to-live seam: history first, then live points, with no gap and no duplicate.

A subscription first creates its feed (so nothing published from now on is missed), then reads
history up to a head position H (:func:`backfill`), then joins the feed with ``after = H``
(:func:`join`); the feed skips chunks at or before ``after`` for it. If the feed ran ahead of H
meanwhile, the gap comes from the feed's ring of recent chunks, or from the broker. Positions
make it exact: no gap, no duplicate, whatever was published during the handover.

Every ``data`` message carries a position that is safe to resume from (docs/protocol.md,
"Positions"): history goes out in log order, in pieces that each end at a cut in the log (rows
sorted within a piece; a piece with rows older than what was already sent is marked ``late``),
and a piece before the last one names the backfill it belongs to, so a resume from it delivers
the rest of that backfill and then everything after its head.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from livedata.brokers.base import Broker
from livedata.core.clock import wall_ms
from livedata.core.frames import (
    NO_EPOCH,
    ORIGIN,
    Chunk,
    FieldDef,
    Pos,
    Position,
    Rows,
    data_body,
    frame_json,
    parse_position,
    window,
)
from livedata.delivery.encode import gather, pieces, select
from livedata.delivery.feed import Feed, Subscription
from livedata.delivery.settings import Settings

FUTURE_MS = 1 << 62
"""A history read from here returns no points, only the channel's head, schema and epoch."""


async def backfill(broker: Broker, settings: Settings, sub: Subscription,
                   fields: list[FieldDef]) -> tuple[Pos, list[FieldDef]]:
    """Send the schema packet and any history; return the position the subscription then has, and
    the channel's fields as the read found them."""
    req = sub.req
    if req.since is not None:
        return await _resume(broker, settings, sub, fields, parse_position(req.since))
    live_only = req.from_ms is None
    hist = await broker.history(req.channel, FUTURE_MS if live_only else req.from_ms, req.to_ms)
    fields = hist.fields or fields
    fmap = {f.key: f for f in fields}
    keys = select(fmap, fmap, req.fields)
    epoch = hist.epoch or NO_EPOCH
    head = hist.head or ORIGIN
    if not await _send_log(sub, settings, keys, fmap, epoch, hist.chunks, head, req.from_ms, req.to_ms, [], None,
                           schema=True):
        _send_schema(sub, fields, keys, Position(epoch, head).encode())
    return head, fields


async def _resume(broker: Broker, settings: Settings, sub: Subscription, fields: list[FieldDef],
                  since: Position) -> tuple[Pos, list[FieldDef]]:
    """``since``: the rest of the backfill it was taken in (if any), then every point after it."""
    req = sub.req
    hist = await broker.read_after(req.channel, since.epoch, since.pos)
    fields = hist.fields or fields
    fmap = {f.key: f for f in fields}
    keys = select(fmap, fmap, req.fields)
    chunks = hist.chunks
    lost = hist.lost
    if since.epoch == NO_EPOCH:  # taken before the channel existed: all of it is new
        lost = chunks[0].count_before if chunks and chunks[0].count_before > 0 else None
    epoch = hist.epoch or NO_EPOCH
    same = since.epoch in (epoch, NO_EPOCH)
    if lost:
        text = "an unknown number of" if lost < 0 else str(lost)
        why = "the position is from another broker epoch (server restarted?)" if lost < 0 else "beyond retention"
        sub.control({"type": "notice", "level": "warning",
                     "text": f"{text} points lost: {why}; resuming from the oldest retained point", "lost": lost})
    head = since.head if same else None
    inside: list[Chunk] = []
    after: list[Chunk] = chunks
    if head is not None:
        n = next((i for i, c in enumerate(chunks) if c.pos > head), len(chunks))
        inside = [w for c in chunks[:n] if (w := window(c, since.start_ms, since.end_ms)) is not None]
        after = chunks[n:]
    finite = req.to_ms is not None and req.to_ms <= wall_ms()
    if finite:
        after = [] if head is not None else [w for c in after if (w := window(c, None, req.to_ms)) is not None]
    # Where the reader is now: its own position, or (after a loss) just before the oldest point kept.
    if not lost:
        at = since
    elif chunks:
        first = Pos(chunks[0].pos.a, chunks[0].pos.b, chunks[0].count_before)
        at = Position(epoch, first, head, since.start_ms, since.end_ms) if head is not None and first <= head \
            else Position(epoch, first)
    else:
        at = Position(epoch, hist.head or ORIGIN)
    _send_schema(sub, fields, keys, at.encode())
    floor = chunks[0].hwm if chunks else None
    await _send_log(sub, settings, keys, fmap, epoch, inside, head, since.start_ms, since.end_ms, after, floor,
                    schema=False)
    if hist.head is not None:
        return hist.head, fields
    return (since.pos if same else ORIGIN), fields


async def _send_log(sub: Subscription, settings: Settings, keys: Sequence[str], fmap: dict[str, FieldDef],
                    epoch: str, inside: Sequence[Chunk], head: Pos | None, start_ms: int | None,
                    end_ms: int | None, after: Sequence[Chunk], floor: int | None, schema: bool) -> bool:
    """Send ``inside`` (the backfill of ``[start_ms, end_ms]`` up to ``head``), then ``after``, in
    pieces, waiting for the connection to drain before each; the first carries the schema when
    ``schema``. False when there was nothing to send."""
    sent = False
    for body, position in _messages(sub, settings, keys, fmap, epoch, inside, head, start_ms, end_ms, after, floor,
                                    schema):
        await sub.sink.drain()
        sub.send_data(body, position, force=True)
        sent = True
    return sent


def _messages(sub: Subscription, settings: Settings, keys: Sequence[str], fmap: dict[str, FieldDef], epoch: str,
              inside: Sequence[Chunk], head: Pos | None, start_ms: int | None, end_ms: int | None,
              after: Sequence[Chunk], floor: int | None, schema: bool) -> Iterator[tuple[bytes, str]]:
    """The messages of :func:`_send_log`: (body, position) per piece."""
    sub.keys = tuple(keys)
    per = settings.history_points_per_packet
    runs = list(pieces(inside, keys, per, settings.history_min_rows))
    n_in = len(runs)
    runs += pieces(after, keys, per, settings.history_min_rows)
    for i, run in enumerate(runs):
        if i < n_in:
            assert head is not None
            last = i == n_in - 1  # the rest of the backfill is out of its range: the reader is at its head
            position = Position(epoch, head) if last else Position(epoch, run[-1].end, head, start_ms, end_ms)
        else:
            position = Position(epoch, run[-1].end)
        rows, late = gather(run, keys, floor)
        text = position.encode()
        with_schema = schema and i == 0
        yield data_body(frame_json([fmap[k] for k in keys] if with_schema else None, keys, rows), text, late), text
        newest = max(c.times[-1] for c in run if c.times)
        if floor is None or newest > floor:
            floor = newest


async def join(broker: Broker, settings: Settings, sub: Subscription, feed: Feed, after: Pos) -> None:
    """Close the seam between what ``sub`` has (up to ``after``) and the feed's stream."""
    while True:
        if sub.closed:
            return
        if feed.last_pos is None or feed.last_pos <= after:
            feed.join(sub, after)
            return
        ring = feed.recent
        epoch = broker.epoch_of(feed.channel) or NO_EPOCH
        if ring and ring[0].pos <= after:
            pending = {id(c) for c in feed.pending}
            gap = [c for c in ring if c.pos > after and id(c) not in pending]
            if gap:  # sent at once: the next round must not run before the subscriber joins
                for body, position in _messages(sub, settings, feed.keys, feed.fields, epoch, [], None, None, None,
                                                gap, gap[0].hwm, schema=False):
                    sub.send_data(body, position, force=True)
                after = gap[-1].pos
            feed.join(sub, after)
            return
        hist = await broker.read_after(feed.channel, epoch, after)
        if not hist.chunks:
            feed.join(sub, after)
            return
        await _send_log(sub, settings, feed.keys, feed.fields, hist.epoch or epoch, [], None, None, None, hist.chunks,
                        hist.chunks[0].hwm, schema=False)
        after = hist.chunks[-1].pos


def _send_schema(sub: Subscription, fields: list[FieldDef], keys: Sequence[str], position: str) -> None:
    fmap = {f.key: f for f in fields}
    body = data_body(frame_json([fmap[k] for k in keys], keys, Rows()), position)
    sub.send_data(body, position, force=True)
    sub.keys = tuple(keys)
