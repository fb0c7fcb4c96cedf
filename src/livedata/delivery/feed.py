"""A feed: one channel at one batching interval with one field filter, delivered in rounds.

A point travels: broker -> ``Tap`` (one broker subscription per channel, in ``hub.py``) ->
:class:`Feed` (it encodes each packet once) -> every :class:`Subscription` of that feed, as a
synchronous write of shared bytes to its connection. This module is the hot path: the loop in
:meth:`Feed._step` was tuned to the microsecond (benchmarks/README.md, "lanes"); keep its shape —
no per-subscriber calls or attribute lookups beyond what it does now.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from livedata.brokers.base import Broker
from livedata.core.frames import (
    NO_EPOCH,
    Chunk,
    FieldDef,
    Pos,
    Rows,
    data_body,
    data_prefix,
    frame_json,
    message,
    rest_of,
)
from livedata.core.pacing import Pacer
from livedata.core.protocol import Subscribe
from livedata.delivery.encode import encode_owed, select
from livedata.delivery.settings import Settings
from livedata.delivery.sink import Framer, Lane, Outlet, Sink
from livedata.delivery.stats import Stats

log = logging.getLogger("livedata.hub")

_Member = tuple["Subscription", Outlet, Callable[[], int], Callable[[bytes], object], int]


class Joined(Protocol):
    """What a subscription's feed is to it: the raw :class:`Feed`, or ``agg.AggFeed``."""

    channel: str

    def remove(self, sub: Subscription) -> None: ...


class _Round:
    """Where a running round is: the fast groups as they were when it began, and its cursor."""

    __slots__ = ("gi", "mi", "snap", "start_head", "t0")

    def __init__(self, start_head: int, t0: float, snap: list[tuple[_Group, list[_Member]]]) -> None:
        self.start_head = start_head
        self.t0 = t0
        self.snap = snap
        self.gi = 0
        self.mi = 0


class _Group:
    """A feed's subscribers on the fast path that share one framing: one framed packet for all."""

    __slots__ = ("framer", "key", "members", "prefix", "snap")

    def __init__(self, key: tuple[Framer, bytes], framer: Framer, prefix: bytes) -> None:
        self.key = key
        self.framer = framer
        self.prefix = prefix
        self.members: dict[Subscription, _Member] = {}
        self.snap: list[_Member] | None = None
        """``members`` as a list, made again at the first packet after a change."""


@dataclass(eq=False, slots=True)  # one per subscribed reader: no per-instance dict
class Subscription:
    req: Subscribe
    sink: Sink
    on_done: Callable[[Subscription], None]
    prefix: bytes = b""
    feed: Joined | None = None
    after: Pos | None = None
    keys: tuple[str, ...] = ()
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    closed: bool = False
    acquired: bool = True
    """A generated channel counted this subscription as a user (False: it was refused)."""
    backlog: list[Chunk] | None = None
    backlog_cells: int = 0
    """Values held in ``backlog``, kept as it grows (a stall must not cost O(held) per round)."""
    backlog_schema: bool = False
    lane: Lane | None = None
    """Set once live when the sink takes pre-framed bytes (see :class:`Lane`): the fast path."""
    group: _Group | None = None
    """The feed's fast-path group this subscription is in right now (None: the slow path)."""
    got: int = 0
    """The feed's sequence number it has been sent up to (see :class:`Feed`)."""
    ver: int = 0
    """The feed's schema version it has been sent."""

    def __post_init__(self) -> None:
        self.prefix = data_prefix(self.req.id)

    @property
    def id(self) -> str:
        return self.req.id

    def send_data(self, body: bytes, position: str | None, force: bool = False) -> bool:
        return self.sink.send_data(self.prefix, body, position, force)

    def control(self, obj: dict[str, object]) -> None:
        self.sink.send(message({**obj, "id": self.req.id}), force=True)


class Feed:
    """One channel at one batching interval with one field filter: encodes once, writes to all.

    Delivery goes in **rounds**: a round visits every subscriber once and sends it what it has not
    had (``Subscription.got``, a sequence number into the feed's ``log`` of chunks). Subscribers
    that are owed the same chunks get the same encoded bytes (framed once per carrier and id
    prefix). A round lets the loop run every ``Settings.step_subs`` subscribers, and chunks published
    meanwhile join it for the subscribers it has not reached yet: with 10,000 readers a round
    takes most of an interval, and without this a point published during one waited for the next
    round to start and then for its position in it (p99 about twice the round's length; now about
    once). The subscribers it had passed get those chunks in the next round.

    Batching (``interval_ms > 0``): a round starts at most once per interval, in phase with the
    data (:class:`~livedata.core.pacing.Pacer` decides when), and never while one runs; each
    subscriber is visited in the same order every round, so it too gets at most one packet per
    interval. A round that takes longer than the interval is counted (``Stats.overrun``, exported
    as ``livedata_feed_overruns``) and logged (at most once a minute per feed).
    Unbatched (``0``): a round starts as soon as a chunk arrives and no round runs.
    """

    def __init__(self, broker: Broker, stats: Stats, settings: Settings, channel: str, interval_ms: int,
                 wanted: tuple[str, ...] | None, fields: list[FieldDef]) -> None:
        self.epoch_of = broker.epoch_of
        self.stats = stats
        self.step_subs = settings.step_subs
        self.channel = channel
        self.interval_ms = interval_ms
        self.wanted = wanted
        self.fields: dict[str, FieldDef] = {f.key: f for f in fields}
        self.keys: list[str] = select(self.fields, self.fields, wanted)
        self.subs: set[Subscription] = set()
        """Every subscription of this feed, on the fast path (in ``groups``) or not (in ``cold``)."""
        self.groups: dict[tuple[Framer, bytes], _Group] = {}
        self.cold: set[Subscription] = set()
        self.joining = 0
        self.pending: list[Chunk] = []
        """Chunks that arrived since the running (or last) round last looked."""
        self.log: list[Chunk] = []
        """Chunks some subscriber may still be owed: sequence numbers ``base`` to ``head - 1``."""
        self.base = 0
        self.head = 0
        self.schema_ver = 0
        self.rnd: _Round | None = None
        self.step: asyncio.Handle | None = None
        self.again = False
        """The pacer's time came while a round ran: start the next one when it ends."""
        self.folded = False
        """Chunks joined the running round: subscribers it had passed are owed them."""
        self._bodies: dict[tuple[int, bool], tuple[list[bytes], str | None, int]] = {}
        """Encoded bodies, position and points per (got, with schema), for ``head``/``keys`` as they are."""
        self.recent: deque[Chunk] = deque(maxlen=settings.ring)
        """The newest chunks (at most ``Settings.ring`` of them and about ``ring_bytes``): the seam
        closes a gap from here without asking the broker."""
        self.recent_bytes = 0
        self.ring_bytes = settings.ring_bytes
        self.last_pos: Pos | None = None
        self.loop = asyncio.get_running_loop()
        self.interval_s = interval_ms / 1000
        self.pacer = Pacer(self.interval_s, min(settings.flush_grace * self.interval_s, settings.max_grace_s))
        self.timer: asyncio.TimerHandle | None = None
        self.overruns = 0
        self._warned_at = -math.inf

    @property
    def key(self) -> tuple[str, int, tuple[str, ...] | None]:
        return (self.channel, self.interval_ms, self.wanted)

    def learn(self, fields: list[FieldDef]) -> None:
        """Fields of the channel (a chunk added them, or a history read saw them): the ones this
        feed did not have join its schema (a feed made before its channel existed, whose broker
        subscription began after the chunk that added them, learns them from its readers' reads)."""
        if all(f.key in self.fields for f in fields):
            return
        for f in fields:
            self.fields.setdefault(f.key, f)
        keys = select(self.fields, self.fields, self.wanted)
        if keys != self.keys:
            self.keys = keys
            self.schema_ver += 1
            self._bodies.clear()

    def on_chunk(self, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        recent = self.recent
        if len(recent) == recent.maxlen:
            self.recent_bytes -= recent[0].nbytes
        recent.append(chunk)
        self.recent_bytes += chunk.nbytes
        while self.recent_bytes > self.ring_bytes and len(recent) > 1:
            self.recent_bytes -= recent.popleft().nbytes
        self.last_pos = chunk.pos
        if new_fields:
            self.learn(new_fields)
        self.pending.append(chunk)
        if self.interval_ms == 0:
            if self.rnd is None and self.step is None:  # else the running (or scheduled) round takes it
                self._start_round()
            return
        self._arm()

    def _arm(self) -> None:
        due = self.pacer.arrive(self.loop.time())
        if due is not None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(due, self._run)  # a due time in the past runs on the next iteration

    def _run(self) -> None:
        self.timer = None
        if self.rnd is not None or self.step is not None:
            self.again = True
            return
        if not (self.pending or self.folded):
            self.pacer.disarm()
            return
        self.pacer.fire(self.loop.time())
        self._start_round()

    # --- rounds ------------------------------------------------------------------------------

    def _fold(self) -> None:
        """Move what arrived into the log: the rest of the running round sends it too."""
        if self.pending:
            self.log.extend(self.pending)
            self.head += len(self.pending)
            self.pending = []
            self._bodies.clear()
            if self.rnd is not None:
                self.folded = True

    def _owed(self, got: int, schema: bool, epoch: str) -> tuple[list[bytes], str | None, int]:
        """Bodies for a subscriber at ``got`` (chunks ``got .. head - 1``), the position, the points."""
        hit = self._bodies.get((got, schema))
        if hit is None:
            assert got >= self.base, "a subscriber fell behind the feed's log"
            chunks = self.log[got - self.base:]
            bodies, position = encode_owed(chunks, self.keys, self.fields, schema, epoch)
            hit = self._bodies[(got, schema)] = (bodies, position, sum(map(len, chunks)))
        return hit

    def _start_round(self) -> None:
        self.step = None
        self._fold()
        self.folded = False
        snap = []
        for group in list(self.groups.values()):
            if group.snap is None:
                group.snap = list(group.members.values())
            snap.append((group, group.snap))
        self.rnd = _Round(self.head, time.monotonic(), snap)
        epoch = self.epoch_of(self.channel) or ""
        for sub in list(self.cold):  # off the fast path: seam, lagging, or no lane
            self._flush_one(sub, epoch)
        self._step()

    def _step(self) -> None:
        """Write to the next ``step_subs`` subscribers of the running round."""
        self.step = None
        rnd = self.rnd
        if rnd is None:
            return
        self._fold()
        head, ver = self.head, self.schema_ver
        epoch = self.epoch_of(self.channel) or ""
        budget = self.step_subs
        delivered = 0
        snap = rnd.snap
        while rnd.gi < len(snap):
            group, members = snap[rnd.gi]
            framer, prefix = group.framer, group.prefix
            i = rnd.mi
            end = min(len(members), i + budget)
            last_got, last_schema, data, n, points = -1, False, b"", 0, 0
            # A fast subscriber costs one look at its state and queue and one write of bytes it
            # shares with every subscriber owed the same chunks.
            while i < end:
                sub, outlet, queued, write, pressure = members[i]
                i += 1
                got = sub.got
                schema = sub.ver != ver
                if got == head and not schema:
                    continue  # nothing owed (joined, or was sent, since the round began)
                if sub.group is not group:
                    continue  # left the fast path (or the feed) since the round began
                if outlet.close_reason or queued() > pressure:
                    self._flush_one(sub, epoch)
                    continue
                if got != last_got or schema != last_schema:
                    bodies, position, points = self._owed(got, schema, epoch)
                    data = b"".join([framer(prefix, body, position) for body in bodies])
                    last_got, last_schema, n = got, schema, len(data)
                if n:
                    try:
                        write(data)
                    except RuntimeError:  # the transport closed under us: the slow path sees it
                        self._flush_one(sub, epoch)
                        continue
                    outlet.bytes_out += n
                sub.got, sub.ver = head, ver
                delivered += points
            budget -= i - rnd.mi
            if i < len(members):
                rnd.mi = i
                break
            rnd.gi, rnd.mi = rnd.gi + 1, 0
            if budget <= 0:
                break
        if delivered:
            self.stats.delivered(self.channel, delivered)
        if self.rnd is not rnd:  # the feed closed under this step (its last subscriber left)
            return
        if rnd.gi < len(snap):
            self.step = self.loop.call_soon(self._step)
            return
        self._end_round(rnd)

    def _end_round(self, rnd: _Round) -> None:
        self.rnd = None
        # Every subscriber now has at least what the log held when the round began.
        del self.log[:rnd.start_head - self.base]
        self.base = rnd.start_head
        took = time.monotonic() - rnd.t0
        self.stats.round_took(took)
        if self.interval_ms == 0:
            if self.pending or self.folded:
                self.step = self.loop.call_soon(self._start_round)
            return
        if took > self.interval_s:
            self.overruns += 1
            self.stats.overrun()
            if rnd.t0 - self._warned_at >= 60.0:
                self._warned_at = rnd.t0
                log.warning("feed %s at %d ms: a round to %d subscribers took %.0f ms, longer than the interval "
                            "(%d times so far): the next packet covers more than one interval", self.channel,
                            self.interval_ms, len(self.subs), took * 1000, self.overruns)
        if self.again:
            self.again = False
            if self.pending or self.folded:
                self.pacer.fire(self.loop.time())
                self.step = self.loop.call_soon(self._start_round)
            else:
                self.pacer.disarm()

    def _place(self, sub: Subscription) -> None:
        """Put ``sub`` on the fast path (its lane's group) or the slow one (``cold``), as its state says."""
        live = not sub.closed and sub.feed is self
        hot = live and sub.lane is not None and sub.after is None and sub.backlog is None
        if sub.group is not None and not hot:
            self._ungroup(sub)
        if hot:
            if sub.group is None:
                assert sub.lane is not None
                outlet, queued, write, pressure, framer = sub.lane
                key = (framer, sub.prefix)
                group = self.groups.get(key)
                if group is None:
                    group = self.groups[key] = _Group(key, framer, sub.prefix)
                group.members[sub] = (sub, outlet, queued, write, pressure)
                group.snap, sub.group = None, group
            self.cold.discard(sub)
        elif live:
            self.cold.add(sub)
        else:
            self.cold.discard(sub)

    def _ungroup(self, sub: Subscription) -> None:
        group = sub.group
        assert group is not None
        del group.members[sub]
        group.snap, sub.group = None, None
        if not group.members and self.groups.get(group.key) is group:
            del self.groups[group.key]

    def remove(self, sub: Subscription) -> None:
        """Stop writing to ``sub`` (it is closed)."""
        self.subs.discard(sub)
        self.cold.discard(sub)
        if sub.group is not None:
            self._ungroup(sub)

    def _flush_one(self, sub: Subscription, epoch: str) -> None:
        """One subscriber off the fast path: at the seam, lagging, pressured, or closed."""
        got, schema = sub.got, sub.ver != self.schema_ver
        sub.got, sub.ver = self.head, self.schema_ver
        if got != self.head or schema:
            self._send_one(sub, got, schema, epoch)
        self._place(sub)

    def _send_one(self, sub: Subscription, got: int, with_schema: bool, epoch: str) -> None:
        keys = self.keys
        assert got >= self.base, "a subscriber fell behind the feed's log"
        chunks = self.log[got - self.base:]
        mine = chunks
        after = sub.after
        if after is not None and chunks:
            if chunks[0].pos <= after:
                mine = [r for c in chunks if (r := rest_of(c, after)) is not None]
            if chunks[-1].pos >= after:
                sub.after = None  # every chunk from now on is after it
        # With nothing owed but the schema, the packet stays where the subscriber is.
        here: str | None = None
        if after is not None:
            here = after.encode(epoch)
        elif got > self.base:
            here = self.log[got - self.base - 1].end.encode(epoch)
        if sub.backlog is not None or sub.sink.pressured:
            # Coalesce: a reader that lags holds its chunks and gets them as one packet once
            # its buffer drains; once the held values would pass the buffer cap again it is
            # closed as slow (and can resume with `since`).
            backlog = sub.backlog if sub.backlog is not None else []
            backlog.extend(mine)
            sub.backlog_cells += sum(c.cells for c in mine)
            sub.backlog, sub.backlog_schema = backlog, sub.backlog_schema or with_schema
            if sub.sink.pressured:
                if sub.sink.flow.holds_too_much(sub.backlog_cells):
                    sub.sink.close_slow()
                return
            with_schema = sub.backlog_schema
            sub.backlog, sub.backlog_schema, sub.backlog_cells = None, False, 0
            bodies, position = encode_owed(backlog, keys, self.fields, with_schema, epoch, here)
            mine = backlog
        elif mine is chunks and chunks:
            bodies, position, _ = self._owed(got, with_schema, epoch)
        else:
            bodies, position = encode_owed(mine, keys, self.fields, with_schema, epoch, here)
        for body in bodies:
            if not sub.send_data(body, position):
                break
        else:
            if mine:
                self.stats.delivered(self.channel, sum(map(len, mine)))
        sub.keys = tuple(keys)

    def join(self, sub: Subscription, after: Pos | None) -> None:
        """Start sending live packets to ``sub``, skipping chunks at or before ``after``."""
        # Chunks at or before ``after`` may still come: ones not folded into the log yet, and (when
        # the broker's reader lags, as Redis's may) ones it has not delivered yet. Until a chunk
        # past ``after`` arrives the subscriber stays off the fast path, and they are skipped.
        last, pending = self.last_pos, self.pending
        sub.after = after if after is not None and (last is None or last < after or (pending and
                                                                                  pending[0].pos <= after)) else None
        sub.feed = self
        if sub.keys != tuple(self.keys):
            # The schema grew between the history read and now: tell the client first.
            here = after.encode(self.epoch_of(self.channel) or NO_EPOCH) if after is not None else None
            body = data_body(frame_json([self.fields[k] for k in self.keys], self.keys, Rows()), here)
            sub.send_data(body, here, force=True)
            sub.keys = tuple(self.keys)
        lane = getattr(sub.sink, "lane", None)
        sub.lane = lane() if lane is not None else None  # the carrier takes pre-framed bytes: the fast path
        sub.got, sub.ver = self.head, self.schema_ver  # owed what arrives from now on (the seam did the rest)
        self.subs.add(sub)
        self._place(sub)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.pacer.disarm()
        if self.step is not None:
            self.step.cancel()
            self.step = None
        self.rnd = None
