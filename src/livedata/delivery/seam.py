"""The backfill-to-live seam: history first, then live points, with no gap and no duplicate.

A subscription first creates its feed (so nothing published from now on is missed), then reads
history up to a head position H (:func:`backfill`), then joins the feed with ``after = H``
(:func:`join`); the feed skips chunks at or before ``after`` for it. If the feed ran ahead of H
meanwhile, the gap comes from the feed's ring of recent chunks, or from the broker. Positions
make it exact: no gap, no duplicate, whatever was published during the handover.

History is paced by the reader: it is read from the broker a page at a time
(``Settings.history_page_bytes``), each page encoded into packets of a quarter of the connection's
buffer cap, each packet written only once the connection's queue is back below that
(``Sink.drain``); a reader that takes nothing for ``FlowPolicy.stall_s`` is closed as ``slow``. So a
backfill holds at most a page and a packet, whatever the range asked for, and a page's share of the
memory budget (kind ``backfill``) while it does. Packets are in time order; a page whose points are
older than what was already sent (late points stored out of order) sends those in packets marked
``late``, as live delivery does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from livedata.brokers.base import Broker, History
from livedata.core.budget import Budget, BudgetError
from livedata.core.frames import FieldDef, Pos, Rows, data_body, frame_json, parse_position
from livedata.delivery.encode import encode_chunks, groups, history_page, select
from livedata.delivery.feed import Feed, Subscription
from livedata.delivery.settings import Settings


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
                   budget: Budget | None = None, turns: Turns | None = None) -> Pos | None:
    """Send the schema packet and any history; return the head position it reached."""
    pages = Pages(broker, settings, sub, budget, turns)
    try:
        return await _backfill(pages, sub, fields)
    finally:
        pages.done()


async def _backfill(pages: Pages, sub: Subscription, fields: list[FieldDef]) -> Pos | None:
    broker = pages.broker
    req = sub.req
    keys = select([f.key for f in fields], {f.key: f for f in fields}, req.fields)
    if req.since is not None:
        since: str = req.since
        epoch, pos = parse_position(since)
        hist = await pages.read(broker.read_after(req.channel, epoch, pos, max_bytes=pages.page))
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
        head = hist.head
        await _send_log(pages, hist, keys, fmap)
        return head if head is not None else (pos if epoch == hist.epoch else None)
    if req.from_ms is None:
        _send_schema(sub, fields, keys, None)
        return None
    hist = await pages.read(broker.history(req.channel, req.from_ms, req.to_ms, max_bytes=pages.page))
    fields = hist.fields or fields
    fmap = {f.key: f for f in fields}
    keys = select(fmap, fmap, req.fields)
    head = hist.head
    head_pos = head.encode(hist.epoch) if head else None
    schema: list[FieldDef] | None = [fmap[k] for k in keys]
    sub.keys = tuple(keys)
    hwm: int | None = None
    while True:
        last_page = not hist.more
        count, packets = history_page(hist.chunks, keys, hwm, pages.target)
        for i in range(count):
            await sub.sink.drain()
            await pages.step()  # a reader that takes everything at once still lets others run
            if sub.closed:
                return head
            rows, late = next(packets)  # laid out now, not while the reader lags
            position = head_pos if last_page and i == count - 1 else None
            sub.send_data(data_body(frame_json(schema, keys, rows), position, late), position, force=True)
            pages.stepped()
            schema = None
            if not late and rows.times:
                hwm = rows.times[-1]
        pages.done()
        if last_page or sub.closed:
            break
        after = hist.chunks[-1].pos
        hist = await pages.read(broker.history(req.channel, req.from_ms, req.to_ms, after=after,
                                               until=head, max_bytes=pages.page))
    if schema is not None:  # no rows at all: the schema packet alone, with the head
        sub.send_data(data_body(frame_json(schema, keys, Rows()), head_pos), head_pos, force=True)
    return head


async def join(broker: Broker, settings: Settings, sub: Subscription, feed: Feed, after: Pos | None,
               budget: Budget | None = None, turns: Turns | None = None) -> None:
    """Close the seam between what ``sub`` has (up to ``after``) and the feed's stream."""
    pages = Pages(broker, settings, sub, budget, turns)
    try:
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
            start = after
            hist = await pages.read(broker.read_after(feed.channel, epoch, start, max_bytes=pages.page))
            if not hist.chunks:
                feed.join(sub, after)
                return
            await _send_log(pages, hist, feed.keys, feed.fields, more=False)
            after = hist.chunks[-1].pos
    finally:
        pages.done()


def _send_schema(sub: Subscription, fields: list[FieldDef], keys: list[str], position: str | None) -> None:
    fmap = {f.key: f for f in fields}
    body = data_body(frame_json([fmap[k] for k in keys], keys, Rows()), position)
    sub.send_data(body, position, force=True)
    sub.keys = tuple(keys)


async def _send_log(pages: Pages, hist: History, keys: Sequence[str], fields: dict[str, FieldDef],
                    more: bool = True) -> None:
    """Send ``hist``'s chunks as they are in the log (``since``, the seam's gap), page after page
    up to its head while ``more``; each packet is positioned when it ends at a chunk's end."""
    broker, sub = pages.broker, pages.sub
    head = hist.head
    while True:
        chunks = hist.chunks
        for part, whole in groups(chunks, keys, pages.target):
            if sub.closed:
                return
            position = part[-1].pos.encode(hist.epoch) if whole else None
            await sub.sink.drain()
            await pages.step()
            if sub.closed:
                return
            for body in encode_chunks(part, keys, fields, False, position):
                sub.send_data(body, position, force=True)
            pages.stepped()
        pages.done()
        if not (more and hist.more and chunks) or sub.closed:
            return
        last = chunks[-1].pos
        epoch = hist.epoch
        hist = await pages.read(broker.read_after(sub.req.channel, epoch, last, until=head,
                                                          max_bytes=pages.page))
