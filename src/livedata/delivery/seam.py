"""The backfill-to-live seam: history first, then live points, with no gap and no duplicate.

A subscription first creates its feed (so nothing published from now on is missed), then reads
history up to a head position H (:func:`backfill`), then joins the feed with ``after = H``
(:func:`join`); the feed skips chunks at or before ``after`` for it. If the feed ran ahead of H
meanwhile, the gap comes from the feed's ring of recent chunks, or from the broker. Positions
make it exact: no gap, no duplicate, whatever was published during the handover.

History is paced by the reader: it is read from the broker a page at a time
(``Settings.history_page_bytes``), each page sent in pieces of about a quarter of the connection's
buffer cap, each piece written only once the connection's queue is back below that
(``Sink.drain``); a reader that takes nothing for ``FlowPolicy.stall_s`` is closed as ``slow``. So a
backfill holds at most a page and a piece, whatever the range asked for, and a page's share of the
memory budget (kind ``backfill``) while it does.

Every ``data`` message carries a position that is safe to resume from (docs/protocol.md,
"Positions"): history goes out in log order, in pieces that each end at a cut in the log (rows
sorted within a piece; a piece with rows older than what was already sent is marked ``late``),
and a piece before the last one names the backfill it belongs to, so a resume from it delivers
the rest of that backfill and then everything after its head.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from livedata.brokers.base import Broker, History
from livedata.core.budget import Budget, BudgetError
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


class Turns:
    """One page of history in flight per connection: the backfills of a connection's subscriptions
    take turns, a page at a time (they share one socket anyway), so a socket with many
    subscriptions holds one page's share of the memory budget, not one per subscription."""

    def __init__(self, steps: int = 4) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        """By ``id`` of the sink (sinks need not be hashable): a lock and how many use it."""
        self.steps = asyncio.Semaphore(steps)
        """Packets laid out and encoded at once, every connection (``Settings.backfill_steps``)."""

    async def acquire(self, sink: object) -> None:
        key = id(sink)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave(key)
            raise

    def release(self, sink: object) -> None:
        key = id(sink)
        self._locks[key][0].release()
        self._leave(key)

    def _leave(self, key: int) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Pages:
    """How one subscription reads and sends history: its page size, packet size, budget and turn."""

    def __init__(self, broker: Broker, settings: Settings, sub: Subscription, budget: Budget | None,
                 turns: Turns | None = None) -> None:
        self.broker = broker
        self.steps = turns.steps if turns is not None else None
        self.settings = settings
        self.sub = sub
        self.budget = budget
        self.turns = turns
        self.turn = False
        self.page = settings.history_page_bytes
        self.target = max(4096, int(sub.sink.flow.cap * settings.history_packet_share))
        self.held = 0
        self.stepping = False

    async def read(self, fetch: Coroutine[Any, Any, History]) -> History:
        """One page from the broker, in this connection's turn and with its share of the memory
        budget until :meth:`done`: room for two packets, and for the page itself when the broker
        made a copy of it (Redis; the memory broker's chunks are history's own, already counted)."""
        try:
            if self.turns is not None and not self.turn:
                await self.turns.acquire(self.sub.sink)
                self.turn = True
            await self.reserve(self.page + 2 * self.target)
        except BaseException:
            fetch.close()
            self.done()
            raise
        hist = await fetch
        if not hist.copied and self.budget is not None:
            self.budget.release("backfill", self.page)
            self.held -= self.page
        return hist

    async def reserve(self, n: int) -> None:
        budget = self.budget
        if budget is None:
            return
        deadline = time.monotonic() + self.settings.backfill_wait_s
        while not budget.reserve("backfill", n):
            if time.monotonic() > deadline or self.sub.closed:
                raise BudgetError("the server is at its memory budget for history being sent: subscribe again "
                                  "in a moment (or ask for a shorter range, or raise --max-memory)", "backfill")
            await asyncio.sleep(0.05)
        self.held += n

    async def step(self) -> None:
        """Wait for a turn to lay out and encode one packet (:meth:`stepped` when it is written)."""
        await asyncio.sleep(0)
        if self.steps is not None:
            await self.steps.acquire()
            self.stepping = True

    def stepped(self) -> None:
        if self.stepping and self.steps is not None:
            self.stepping = False
            self.steps.release()

    def done(self) -> None:
        """The page is sent: give back its share of the budget and the connection's turn."""
        self.stepped()
        if self.budget is not None and self.held:
            self.budget.release("backfill", self.held)
        self.held = 0
        if self.turn and self.turns is not None:
            self.turn = False
            self.turns.release(self.sub.sink)


async def backfill(broker: Broker, settings: Settings, sub: Subscription, fields: list[FieldDef],
                   budget: Budget | None = None, turns: Turns | None = None) -> tuple[Pos, list[FieldDef]]:
    """Send the schema packet and any history; return the position the subscription then has, and
    the channel's fields as the read found them."""
    pages = Pages(broker, settings, sub, budget, turns)
    try:
        req = sub.req
        if req.since is not None:
            return await _resume(pages, fields, parse_position(req.since))
        return await _backfill(pages, fields)
    finally:
        pages.done()


async def _backfill(pages: Pages, fields: list[FieldDef]) -> tuple[Pos, list[FieldDef]]:
    broker, sub = pages.broker, pages.sub
    req = sub.req
    live_only = req.from_ms is None
    start = FUTURE_MS if live_only else req.from_ms
    hist = await pages.read(broker.history(req.channel, start, req.to_ms, max_bytes=pages.page))
    fields = hist.fields or fields
    fmap = {f.key: f for f in fields}
    keys = select(fmap, fmap, req.fields)
    epoch = hist.epoch or NO_EPOCH
    head = hist.head or ORIGIN
    log = _Log(pages, keys, fmap, epoch, head, req.from_ms, req.to_ms, None, schema=True)
    while True:
        await log.send(hist.chunks, [], inside_done=not hist.more)
        if not hist.more or sub.closed or not hist.chunks:
            break
        hist = await pages.read(broker.history(req.channel, start, req.to_ms, after=hist.chunks[-1].pos,
                                               until=hist.head, max_bytes=pages.page))
    if not log.sent:
        _send_schema(sub, fields, keys, Position(epoch, head).encode())
    return head, fields


async def _resume(pages: Pages, fields: list[FieldDef], since: Position) -> tuple[Pos, list[FieldDef]]:
    """``since``: the rest of the backfill it was taken in (if any), then every point after it."""
    broker, sub = pages.broker, pages.sub
    req = sub.req
    hist = await pages.read(broker.read_after(req.channel, since.epoch, since.pos, max_bytes=pages.page))
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
    # Where the reader is now: its own position, or (after a loss) just before the oldest point kept.
    at: Position
    if not lost:
        at = since
    elif chunks:
        first = Pos(chunks[0].pos.a, chunks[0].pos.b, chunks[0].count_before)
        at = Position(epoch, first, head, since.start_ms, since.end_ms) if head is not None and first <= head \
            else Position(epoch, first)
    else:
        at = Position(epoch, hist.head or ORIGIN)
    _send_schema(sub, fields, keys, at.encode())
    finite = req.to_ms is not None and req.to_ms <= wall_ms()
    top = hist.head
    log = _Log(pages, keys, fmap, epoch, head, since.start_ms, since.end_ms, chunks[0].hwm if chunks else None,
               schema=False)
    while True:
        chunks = hist.chunks
        inside: list[Chunk] = []
        after: list[Chunk] = chunks
        inside_done = True
        if head is not None:
            n = next((i for i, c in enumerate(chunks) if c.pos > head), len(chunks))
            inside = [w for c in chunks[:n] if (w := window(c, since.start_ms, since.end_ms)) is not None]
            after = chunks[n:]
            inside_done = n < len(chunks) or not hist.more
        if finite:
            after = [] if head is not None else [w for c in after if (w := window(c, None, req.to_ms)) is not None]
        await log.send(inside, after, inside_done)
        if not hist.more or sub.closed or not chunks:
            break
        if finite and head is not None and chunks[-1].pos >= head:
            break
        hist = await pages.read(broker.read_after(req.channel, hist.epoch, chunks[-1].pos, until=top,
                                                  max_bytes=pages.page))
    if top is not None:
        return top, fields
    return (since.pos if same else ORIGIN), fields


class _Log:
    """Sends history in pieces: the backfill of ``[start_ms, end_ms]`` up to ``head`` (``inside``),
    then what comes after it, each piece one message at a position safe to resume from."""

    def __init__(self, pages: Pages, keys: Sequence[str], fmap: dict[str, FieldDef], epoch: str, head: Pos | None,
                 start_ms: int | None, end_ms: int | None, floor: int | None, schema: bool) -> None:
        self.pages = pages
        self.keys = keys
        self.fmap = fmap
        self.epoch = epoch
        self.head = head
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.floor = floor
        self.schema = schema
        self.sent = False
        self.target = pages.target

    async def send(self, inside: Sequence[Chunk], after: Sequence[Chunk], inside_done: bool) -> None:
        """Send a page: ``inside`` then ``after``; ``inside_done`` when no more of the backfill
        follows (its last piece is then positioned at its head)."""
        pages, sub, settings = self.pages, self.pages.sub, self.pages.settings
        keys = self.keys
        sub.keys = tuple(keys)
        per, least = settings.history_points_per_packet, settings.history_min_rows
        runs = list(pieces(inside, keys, per, least, self.target))
        n_in = len(runs)
        runs += pieces(after, keys, per, least, self.target)
        for i, run in enumerate(runs):
            await sub.sink.drain()
            await pages.step()  # a reader that takes everything at once still lets others run
            if sub.closed:
                pages.stepped()
                return
            if i < n_in:
                assert self.head is not None
                last = inside_done and i == n_in - 1  # the rest of the backfill is out of its range
                position = Position(self.epoch, self.head) if last else \
                    Position(self.epoch, run[-1].end, self.head, self.start_ms, self.end_ms)
            else:
                position = Position(self.epoch, run[-1].end)
            rows, late = gather(run, keys, self.floor)  # laid out now, not while the reader lags
            text = position.encode()
            with_schema = self.schema and not self.sent
            body = data_body(frame_json([self.fmap[k] for k in keys] if with_schema else None, keys, rows), text, late)
            sub.send_data(body, text, force=True)
            pages.stepped()
            self.sent = True
            newest = max(c.times[-1] for c in run if c.times)
            if self.floor is None or newest > self.floor:
                self.floor = newest
        pages.done()


async def join(broker: Broker, settings: Settings, sub: Subscription, feed: Feed, after: Pos,
               budget: Budget | None = None, turns: Turns | None = None) -> None:
    """Close the seam between what ``sub`` has (up to ``after``) and the feed's stream."""
    pages = Pages(broker, settings, sub, budget, turns)
    try:
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
                    floor = gap[0].hwm
                    for run in pieces(gap, feed.keys, settings.history_points_per_packet, settings.history_min_rows):
                        position = Position(epoch, run[-1].end).encode()
                        rows, late = gather(run, feed.keys, floor)
                        sub.send_data(data_body(frame_json(None, feed.keys, rows), position, late), position,
                                      force=True)
                        newest = max(c.times[-1] for c in run if c.times)
                        if floor is None or newest > floor:
                            floor = newest
                    after = gap[-1].pos
                feed.join(sub, after)
                return
            hist = await pages.read(broker.read_after(feed.channel, epoch, after, max_bytes=pages.page))
            if not hist.chunks:
                pages.done()
                feed.join(sub, after)
                return
            log = _Log(pages, feed.keys, feed.fields, hist.epoch or epoch, None, None, None, hist.chunks[0].hwm,
                       schema=False)
            await log.send([], hist.chunks, True)
            after = hist.chunks[-1].pos
    finally:
        pages.done()


def _send_schema(sub: Subscription, fields: list[FieldDef], keys: Sequence[str], position: str) -> None:
    fmap = {f.key: f for f in fields}
    body = data_body(frame_json([fmap[k] for k in keys], keys, Rows()), position)
    sub.send_data(body, position, force=True)
    sub.keys = tuple(keys)
