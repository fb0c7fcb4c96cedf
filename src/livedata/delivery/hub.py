"""The hub: this process's registry of subscriptions, and the taps and feeds that serve them.

It depends only on the :class:`~livedata.brokers.base.Broker` protocol, the
:class:`~livedata.delivery.sink.Sink` protocol, a :class:`~livedata.delivery.stats.Stats` sink for
its counters and, for generated channels, something that runs generators (:class:`Producers`).
The server builds it and hands it those; nothing here knows about HTTP, sockets or metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol

from livedata.brokers.base import Broker, Unsubscribe
from livedata.core import sizes
from livedata.core.budget import Budget, BudgetError, Refused
from livedata.core.clock import wall_ms
from livedata.core.frames import ORIGIN, Chunk, FieldDef, Pos
from livedata.core.protocol import Subscribe
from livedata.core.sources import GeneratedChannel
from livedata.delivery import agg, seam
from livedata.delivery.agg import AggFeed
from livedata.delivery.feed import Feed, Subscription
from livedata.delivery.settings import Settings
from livedata.delivery.sink import Sink
from livedata.delivery.stats import NullStats, Stats

log = logging.getLogger("livedata.hub")

FeedKey = tuple[str, int, tuple[str, ...] | None] | tuple[str, int, tuple[str, ...] | None, int]
AnyFeed = Feed | AggFeed


class Producers(Protocol):
    """What runs generated channels (``livedata.generators.Generators``), as the hub sees it."""

    async def acquire(self, gen: GeneratedChannel, live: bool = True) -> None:
        """Count a user of ``gen`` (``live``: not a finite range); return once its channel has points.

        Raises:
            Refused: no more generators may run.
        """
        ...

    def release(self, gen: GeneratedChannel) -> None: ...


class Advisor(Protocol):
    """Something that may have a word for a new subscriber of a channel (a source that is down)."""

    def notice_for(self, channel: str) -> str | None: ...


class Tap:
    """The one broker subscription of a channel in this process, shared by its feeds."""

    def __init__(self, broker: Broker, stats: Stats, channel: str) -> None:
        self.channel = channel
        self.feeds: dict[FeedKey, AnyFeed] = {}
        self.stats = stats
        self.unsubscribe: Unsubscribe = broker.subscribe(channel, self._on_chunk, None)

    def _on_chunk(self, channel: str, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        late = chunk.late_split()
        if late:
            self.stats.late(channel, late)
        for feed in list(self.feeds.values()):
            feed.on_chunk(chunk, new_fields)


class Hub:
    """Owns the taps, feeds and subscriptions of this process."""

    def __init__(self, broker: Broker, stats: Stats | None = None, settings: Settings | None = None,
                 producers: Producers | None = None, advisor: Advisor | None = None,
                 budget: Budget | None = None) -> None:
        self.broker = broker
        self.stats: Stats = stats or NullStats()
        self.settings = settings or Settings()
        self.producers = producers
        self.advisor = advisor
        """Asked for a notice to a new subscription (e.g. its channel's source is down)."""
        self.budget = budget
        self.turns = seam.Turns(self.settings.backfill_steps)
        """Per connection, the backfill whose page is in flight (one at a time)."""
        self.taps: dict[str, Tap] = {}
        self.subs: set[Subscription] = set()
        broker.on_status = self.broker_status

    async def close(self) -> None:
        """End every subscription (their attach tasks are cancelled)."""
        for sub in list(self.subs):
            self.unsubscribe(sub)

    @property
    def feeds(self) -> int:
        """Shared feeds (channel, interval, fields) open now."""
        return sum(len(t.feeds) for t in self.taps.values())

    def of_channel(self, channel: str) -> list[Subscription]:
        return [s for s in self.subs if s.req.channel == channel]

    def notice(self, concerns: Callable[[str], bool], level: str, text: str) -> int:
        """A notice to every open subscription whose channel ``concerns`` (a source went down or
        came back); returns how many got it."""
        told = 0
        for sub in list(self.subs):
            if not sub.closed and concerns(sub.req.channel):
                sub.control({"type": "notice", "level": level, "text": text})
                told += 1
        return told

    def broker_status(self, ok: bool, text: str) -> None:
        """The broker went away (``ok`` False) or came back: tell every subscription."""
        for sub in list(self.subs):
            if not sub.closed:
                sub.control({"type": "notice", "level": "info" if ok else "warning", "text": text})

    # --- subscriptions --------------------------------------------------------------------------

    def subscribe(self, req: Subscribe, sink: Sink, on_done: Callable[[Subscription], None]) -> Subscription:
        """Start a subscription; its backfill runs in a task the hub owns.

        Raises:
            BudgetError: the memory budget has no room for one more subscription.
        """
        if self.budget is not None and not self.budget.reserve("connections", sizes.subscription_bytes(req)):
            raise BudgetError("the server is at its memory budget for subscriptions: subscribe again in a moment "
                              "(or raise --max-memory)", "connections")
        sub = Subscription(req, sink, on_done)
        self.subs.add(sub)
        self.stats.subscriptions_changed(1)
        sub.task = asyncio.get_running_loop().create_task(self._attach(sub), name=f"attach:{req.channel}")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop ``sub`` and release what it held. Idempotent."""
        if sub.closed:
            return
        sub.closed = True
        self.subs.discard(sub)
        self.stats.subscriptions_changed(-1)
        if self.budget is not None:
            self.budget.release("connections", sizes.subscription_bytes(sub.req))
        if sub.task is not None and not sub.task.done() and sub.task is not asyncio.current_task():
            sub.task.cancel()
        if sub.timer is not None:
            sub.timer.cancel()
        feed = sub.feed
        if feed is not None:
            feed.remove(sub)
            if isinstance(feed, Feed | AggFeed):
                self._maybe_drop(feed)
        if sub.req.generated is not None and self.producers is not None and sub.acquired:
            self.producers.release(sub.req.generated)

    def complete(self, sub: Subscription, notice: str | None = None) -> None:
        """End ``sub`` normally: an optional notice, then ``complete``."""
        if sub.closed:
            return
        if notice:
            sub.control({"type": "notice", "level": "info", "text": notice})
        sub.control({"type": "complete"})
        self.unsubscribe(sub)
        sub.on_done(sub)

    def _feed(self, req: Subscribe, fields: list[FieldDef]) -> Feed:
        tap = self.taps.get(req.channel)
        if tap is None:
            tap = self.taps[req.channel] = Tap(self.broker, self.stats, req.channel)
        key = (req.channel, req.interval_ms, req.fields)
        feed = tap.feeds.get(key)
        if feed is None:
            feed = tap.feeds[key] = Feed(self.broker, self.stats, self.settings, req.channel, req.interval_ms,
                                         req.fields, fields)
        assert isinstance(feed, Feed)
        return feed

    def _agg_feed(self, req: Subscribe, fields: list[FieldDef]) -> AggFeed:
        tap = self.taps.get(req.channel)
        if tap is None:
            tap = self.taps[req.channel] = Tap(self.broker, self.stats, req.channel)
        key = (req.channel, req.interval_ms, req.fields, req.bucket_ms)
        feed = tap.feeds.get(key)
        if feed is None:
            feed = tap.feeds[key] = AggFeed(self.broker, self.stats, self.settings, req.channel, req.interval_ms,
                                            req.fields, req.bucket_ms, fields)
        assert isinstance(feed, AggFeed)
        return feed

    async def _raw_will_do(self, req: Subscribe, fields: list[FieldDef], now: int) -> bool:
        """An aggregated request that gets raw points instead: when nothing can be aggregated
        (strings, booleans), or when ``max_points`` was given and no field has more points than
        that over the range (a new subscription; a resume keeps what it had, clients know it by
        the ``bucket_ms`` of the data messages)."""
        keys = agg.agg_keys({f.key: f for f in fields}, req.fields)
        if fields and not keys:
            return True
        if req.max_points is None or req.since is not None or req.from_ms is None or not keys:
            return False
        end = req.to_ms if req.to_ms is not None else now
        return await agg.densest(self.broker, req.channel, req.from_ms, end, keys) <= req.max_points

    def _maybe_drop(self, feed: AnyFeed) -> None:
        if feed.subs or feed.joining:
            return
        tap = self.taps.get(feed.channel)
        feed.close()
        if tap is None:
            return
        if tap.feeds.get(feed.key) is feed:
            del tap.feeds[feed.key]
        if not tap.feeds:
            tap.unsubscribe()
            del self.taps[feed.channel]

    async def _attach(self, sub: Subscription) -> None:
        """History, then live (``seam.py``; ``agg.py`` for buckets), then the end of a finite range."""
        req = sub.req
        feed: AnyFeed | None = None
        try:
            if self.advisor is not None:
                advice = self.advisor.notice_for(req.channel)
                if advice:
                    sub.control({"type": "notice", "level": "warning", "text": advice})
            now = wall_ms()
            finite = req.to_ms is not None and req.to_ms <= now
            if req.generated is not None and self.producers is not None:
                try:
                    await self.producers.acquire(req.generated, live=not finite)
                except Exception:
                    sub.acquired = False
                    raise
            fields = await self.broker.fields(req.channel) or []
            if req.bucket_ms and await self._raw_will_do(req, fields, now):
                req = sub.req = dataclasses.replace(req, bucket_ms=0)
            if not finite:
                feed = self._agg_feed(req, fields) if req.bucket_ms else self._feed(req, fields)
                feed.joining += 1
            agg_after: Pos | None = None
            after = ORIGIN
            if req.bucket_ms:  # buckets: from the rollup tiers (agg.py), small whatever the range
                agg_after = await agg.backfill(self.broker, self.settings, sub, fields, now)
            else:
                after, fields = await seam.backfill(self.broker, self.settings, sub, fields, self.budget, self.turns)
            if finite:
                self.complete(sub)
                return
            assert feed is not None
            if isinstance(feed, AggFeed):
                await feed.join(sub, agg_after)
            else:
                feed.learn(fields)
                await seam.join(self.broker, self.settings, sub, feed, after, self.budget, self.turns)
            if req.to_ms is not None:
                sub.timer = asyncio.get_running_loop().call_later(
                    max(0.0, (req.to_ms - wall_ms()) / 1000), self.complete, sub)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("subscription %s on %s failed: %s", req.id, req.channel, exc)
            if not sub.closed:
                text = str(exc) if isinstance(exc, Refused) else f"subscription failed: {exc}"
                sub.control({"type": "error", "message": text})
                self.unsubscribe(sub)
                sub.on_done(sub)
        finally:
            if feed is not None:
                feed.joining -= 1
                if sub.closed:
                    self._maybe_drop(feed)
            sub.task = None  # a done task keeps its coroutine: do not hold it for the socket's life
