"""Subscriptions, batching, encode-once fan-out, and the backfill-to-live seam.

A point travels: broker → :class:`Tap` (one broker subscription per channel) → :class:`Feed`
(one per channel, batching interval and field filter: it encodes each packet once) → every
:class:`Subscription` of that feed, as a synchronous write of shared bytes to its connection.

The seam: a subscription first creates its feed (so nothing published from now on is missed),
then reads history up to a head position H, then joins the feed with ``after = H``; the feed
skips chunks at or before ``after`` for it. If the feed ran ahead of H meanwhile, the gap comes
from the feed's ring of recent chunks, or from the broker. Positions make it exact: no gap, no
duplicate, whatever was published during the handover.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from livedata.brokers.base import Broker, History, Unsubscribe
from livedata.core.frames import Chunk, FieldDef, Pos, Rows, data_body, data_prefix, frame_json, message
from livedata.core.frames import parse_position as _parse_position
from livedata.core.pacing import Pacer
from livedata.core.protocol import Subscribe
from livedata.generators import Generators
from livedata.server.metrics import Metrics
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.hub")

RING = 512
"""Chunks a feed remembers, to close the seam without asking the broker."""
STEP_SUBS = 500
"""Subscribers a round writes to before it lets the loop run (about 3 ms on the fast path)."""
FLUSH_GRACE = 0.2
MAX_GRACE_S = 0.02
"""A batching feed's grace: this share of its interval, at most this many s (see ``core/pacing.py``)."""
HISTORY_POINTS_PER_PACKET = 250_000
BYTES_PER_CELL = 12
"""Rough encoded size of one value, to bound what a lagging subscription may hold back."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Sink(Protocol):
    """How one connection writes messages (one implementation per carrier)."""

    def send(self, msg: bytes, position: str | None = None, force: bool = False) -> bool:
        """Write one complete message. ``force`` may pass the buffer cap (history)."""
        ...

    def send_data(self, prefix: bytes, body: bytes, position: str | None, force: bool = False) -> bool:
        """Write ``prefix + body`` as one message; the body is shared with other subscribers."""
        ...

    async def drain(self) -> None:
        """Wait until the connection's buffer is low again."""
        ...

    @property
    def is_open(self) -> bool: ...

    @property
    def pressured(self) -> bool:
        """True while more than half the connection's buffer cap is still queued."""
        ...

    def close_slow(self) -> None:
        """Close the connection with the reason ``slow``."""
        ...

    @property
    def cap(self) -> int:
        """The connection's buffer cap in bytes."""
        ...

    @property
    def idle(self) -> bool:
        """True when nothing was written since the last call (for heartbeats)."""
        ...


class Outlet(Protocol):
    """What the fast path reads and counts on a connection (``server.conn.Conn``)."""

    close_reason: str
    bytes_out: int


Framer = Callable[[bytes, bytes, str | None], bytes]
Lane = tuple[Outlet, Callable[[], int], Callable[[bytes], object], int, Framer]
"""A sink's fast path, from its optional ``lane()``: (outlet, the transport's
``get_write_buffer_size``, its ``write``, the pressure threshold in bytes, and the framer
``(prefix, body, position) -> bytes``, which depends only on the carrier). Subscribers whose
lanes have equal framers and id prefixes get the very same framed bytes."""


_Member = tuple["Subscription", Outlet, Callable[[], int], Callable[[bytes], object], int]


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
    feed: Feed | None = None
    after: Pos | None = None
    keys: tuple[str, ...] = ()
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    closed: bool = False
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


def _select(keys: Iterable[str], fields: dict[str, FieldDef], wanted: tuple[str, ...] | None) -> list[str]:
    if wanted is None:
        return list(keys)
    return [k for k in keys if k in wanted or fields[k].name in wanted]


def _rows(chunks: Sequence[Chunk], keys: Sequence[str]) -> tuple[Rows, Rows]:
    """Split chunks into on-time and late rows (late: older than the channel's newest before)."""
    ontime, late = Rows(), Rows()
    for c in chunks:
        i = c.late_split()
        cols = {k: c.columns[k] for k in keys if k in c.columns}
        if i == 0:
            ontime.extend(c.times, cols)
        else:
            late.extend(c.times[:i], {k: v[:i] for k, v in cols.items()})
            ontime.extend(c.times[i:], {k: v[i:] for k, v in cols.items()})
    return ontime, late


def encode_chunks(
    chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool, position: str
) -> list[bytes]:
    """Bodies for ``chunks`` as live packets: a late one (if any), then the on-time one."""
    ontime, late = _rows(chunks, keys)
    schema = [fields[k] for k in keys] if with_schema else None
    out = []
    if len(late):
        late.sort()
        out.append(data_body(frame_json(schema, keys, late), position, late=True))
        schema = None
    if len(ontime) or schema is not None:
        out.append(data_body(frame_json(schema, keys, ontime), position))
    return out


class Feed:
    """One channel at one batching interval with one field filter: encodes once, writes to all.

    Delivery goes in **rounds**: a round visits every subscriber once and sends it what it has not
    had (``Subscription.got``, a sequence number into the feed's ``log`` of chunks). Subscribers
    that are owed the same chunks get the same encoded bytes (framed once per carrier and id
    prefix). A round lets the loop run every :data:`STEP_SUBS` subscribers, and chunks published
    meanwhile join it for the subscribers it has not reached yet: with 10,000 readers a round
    takes most of an interval, and without this a point published during one waited for the next
    round to start and then for its position in it (p99 about twice the round's length; now about
    once). The subscribers it had passed get those chunks in the next round.

    Batching (``interval_ms > 0``): a round starts at most once per interval, in phase with the
    data (:class:`~livedata.core.pacing.Pacer` decides when), and never while one runs; each
    subscriber is visited in the same order every round, so it too gets at most one packet per
    interval. A round that takes longer than the interval is counted in ``Hub.overruns``,
    exported as ``livedata_feed_overruns`` and logged (at most once a minute per feed).
    Unbatched (``0``): a round starts as soon as a chunk arrives and no round runs.
    """

    def __init__(self, hub: Hub, channel: str, interval_ms: int, wanted: tuple[str, ...] | None,
                 fields: list[FieldDef]) -> None:
        self.hub = hub
        self.channel = channel
        self.interval_ms = interval_ms
        self.wanted = wanted
        self.fields: dict[str, FieldDef] = {f.key: f for f in fields}
        self.keys: list[str] = _select(self.fields, self.fields, wanted)
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
        self.recent: deque[Chunk] = deque(maxlen=RING)
        self.last_pos: Pos | None = None
        self.loop = asyncio.get_running_loop()
        self.interval_s = interval_ms / 1000
        self.pacer = Pacer(self.interval_s, min(FLUSH_GRACE * self.interval_s, MAX_GRACE_S))
        self.timer: asyncio.TimerHandle | None = None
        self.overruns = 0
        self._warned_at = -math.inf

    @property
    def key(self) -> tuple[str, int, tuple[str, ...] | None]:
        return (self.channel, self.interval_ms, self.wanted)

    def on_chunk(self, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        self.recent.append(chunk)
        self.last_pos = chunk.pos
        if new_fields:
            for f in new_fields:
                self.fields.setdefault(f.key, f)
            keys = _select(self.fields, self.fields, self.wanted)
            if keys != self.keys:
                self.keys = keys
                self.schema_ver += 1
                self._bodies.clear()
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
            position = chunks[-1].pos.encode(epoch) if chunks else None
            bodies = encode_chunks(chunks, self.keys, self.fields, schema, position or "") if (
                chunks or schema) else []
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
        epoch = self.hub.broker.epoch_of(self.channel) or ""
        for sub in list(self.cold):  # off the fast path: seam, lagging, or no lane
            self._flush_one(sub, epoch)
        self._step()

    def _step(self) -> None:
        """Write to the next :data:`STEP_SUBS` subscribers of the running round."""
        self.step = None
        rnd = self.rnd
        if rnd is None:
            return
        self._fold()
        head, ver = self.head, self.schema_ver
        epoch = self.hub.broker.epoch_of(self.channel) or ""
        budget = STEP_SUBS
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
            self.hub.metrics.points_delivered.labels(self.channel).inc(delivered)
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
        self.hub.metrics.round_seconds.observe(took)
        if self.interval_ms == 0:
            if self.pending or self.folded:
                self.step = self.loop.call_soon(self._start_round)
            return
        if took > self.interval_s:
            self.overruns += 1
            self.hub.overruns += 1
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
        if sub.after is not None and chunks and chunks[0].pos <= sub.after:
            mine = [c for c in chunks if c.pos > sub.after]
        sub.after = None
        if sub.backlog is not None or sub.sink.pressured:
            # Coalesce: a reader that lags holds its chunks and gets them as one packet once
            # its buffer drains; once the held values would pass the buffer cap again it is
            # closed as slow (and can resume with `since`).
            backlog = sub.backlog if sub.backlog is not None else []
            backlog.extend(mine)
            sub.backlog_cells += sum(c.cells for c in mine)
            sub.backlog, sub.backlog_schema = backlog, sub.backlog_schema or with_schema
            if sub.sink.pressured:
                if sub.backlog_cells * BYTES_PER_CELL > sub.sink.cap:
                    sub.sink.close_slow()
                return
            with_schema = sub.backlog_schema
            sub.backlog, sub.backlog_schema, sub.backlog_cells = None, False, 0
            position = backlog[-1].pos.encode(epoch) if backlog else None
            bodies = encode_chunks(backlog, keys, self.fields, with_schema, position or "") if (
                backlog or with_schema) else []
            mine = backlog
        elif mine is chunks:
            bodies, position, _ = self._owed(got, with_schema, epoch)
        else:
            position = mine[-1].pos.encode(epoch) if mine else None
            bodies = encode_chunks(mine, keys, self.fields, with_schema, position or "") if (
                mine or with_schema) else []
        for body in bodies:
            if not sub.send_data(body, position):
                break
        else:
            if mine:
                self.hub.metrics.points_delivered.labels(self.channel).inc(sum(map(len, mine)))
        sub.keys = tuple(keys)

    def join(self, sub: Subscription, after: Pos | None) -> None:
        """Start sending live packets to ``sub``, skipping chunks at or before ``after``."""
        sub.after = after
        sub.feed = self
        if sub.keys != tuple(self.keys):
            # The schema grew between the history read and now: tell the client first.
            body = data_body(frame_json([self.fields[k] for k in self.keys], self.keys, Rows()), None)
            sub.send_data(body, None, force=True)
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


class Tap:
    """The one broker subscription of a channel in this process, shared by its feeds."""

    def __init__(self, hub: Hub, channel: str) -> None:
        self.channel = channel
        self.feeds: dict[tuple[str, int, tuple[str, ...] | None], Feed] = {}
        self.late_points = hub.metrics.late_points
        self.unsubscribe: Unsubscribe = hub.broker.subscribe(channel, self._on_chunk, None)

    def _on_chunk(self, channel: str, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        late = chunk.late_split()
        if late:
            self.late_points.labels(channel).inc(late)
        for feed in list(self.feeds.values()):
            feed.on_chunk(chunk, new_fields)


class Hub:
    """Owns taps, feeds and subscriptions of this process."""

    def __init__(self, broker: Broker, metrics: Metrics, *, keep_generators_s: float = 3600.0,
                 retention_s: float = 3600.0, retention_points: int = 200_000, heartbeat_s: float = 15.0,
                 rng: random.Random | None = None) -> None:
        self.broker = broker
        self.metrics = metrics
        self.taps: dict[str, Tap] = {}
        self.subs: set[Subscription] = set()
        self.sinks: set[Sink] = set()
        self.generators = Generators(self, keep_generators_s, retention_s, retention_points, rng)
        broker.on_status = self.broker_status
        self.heartbeat_s = heartbeat_s
        self._heartbeat: asyncio.Task[None] | None = None
        self.overruns = 0
        """Batched rounds that took longer than their interval (the next packet covers more)."""
        metrics.sources.append(lambda: {"livedata_feed_overruns": (
            "Batched delivery rounds that took longer than the batching interval (total)", float(self.overruns))})

    # --- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="heartbeat")

    async def close(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        await cancel_and_wait(heartbeat)
        for sub in list(self.subs):
            self.unsubscribe(sub)
        await self.generators.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            msg = message({"type": "heartbeat", "time": wall_ms()})
            for sink in list(self.sinks):
                if sink.idle and sink.is_open:
                    sink.send(msg, force=True)

    def broker_status(self, ok: bool, text: str) -> None:
        """The broker went away (``ok`` False) or came back: tell every subscription."""
        for sub in list(self.subs):
            if not sub.closed:
                sub.control({"type": "notice", "level": "info" if ok else "warning", "text": text})

    # --- subscriptions --------------------------------------------------------------------------

    def subscribe(self, req: Subscribe, sink: Sink, on_done: Callable[[Subscription], None]) -> Subscription:
        """Start a subscription; its backfill runs in a task the hub owns."""
        sub = Subscription(req, sink, on_done)
        self.subs.add(sub)
        self.metrics.subscriptions.inc()
        sub.task = asyncio.get_running_loop().create_task(self._attach(sub), name=f"attach:{req.channel}")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop ``sub`` and release what it held. Idempotent."""
        if sub.closed:
            return
        sub.closed = True
        self.subs.discard(sub)
        self.metrics.subscriptions.dec()
        if sub.task is not None and not sub.task.done() and sub.task is not asyncio.current_task():
            sub.task.cancel()
        if sub.timer is not None:
            sub.timer.cancel()
        feed = sub.feed
        if feed is not None:
            feed.remove(sub)
            self._maybe_drop(feed)
        if sub.req.generated is not None:
            self.generators.release(sub.req.generated)

    def _feed(self, req: Subscribe, fields: list[FieldDef]) -> Feed:
        tap = self.taps.get(req.channel)
        if tap is None:
            tap = self.taps[req.channel] = Tap(self, req.channel)
        key = (req.channel, req.interval_ms, req.fields)
        feed = tap.feeds.get(key)
        if feed is None:
            feed = tap.feeds[key] = Feed(self, req.channel, req.interval_ms, req.fields, fields)
        return feed

    def _maybe_drop(self, feed: Feed) -> None:
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

    def complete(self, sub: Subscription, notice: str | None = None) -> None:
        if sub.closed:
            return
        if notice:
            sub.control({"type": "notice", "level": "info", "text": notice})
        sub.control({"type": "complete"})
        self.unsubscribe(sub)
        sub.on_done(sub)

    async def _attach(self, sub: Subscription) -> None:
        req = sub.req
        feed: Feed | None = None
        try:
            if req.generated is not None:
                await self.generators.acquire(req.generated)
            now = wall_ms()
            finite = req.to_ms is not None and req.to_ms <= now
            fields = await self.broker.fields(req.channel) or []
            if not finite:
                feed = self._feed(req, fields)
                feed.joining += 1
            after = await self._backfill(sub, fields)
            if finite:
                self.complete(sub)
                return
            assert feed is not None
            await self._join(sub, feed, after)
            if req.to_ms is not None:
                sub.timer = asyncio.get_running_loop().call_later(
                    max(0.0, (req.to_ms - wall_ms()) / 1000), self.complete, sub)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("subscription %s on %s failed: %s", req.id, req.channel, exc)
            if not sub.closed:
                sub.control({"type": "error", "message": f"subscription failed: {exc}"})
                self.unsubscribe(sub)
                sub.on_done(sub)
        finally:
            if feed is not None:
                feed.joining -= 1
                if sub.closed:
                    self._maybe_drop(feed)
            sub.task = None  # a done task keeps its coroutine: do not hold it for the socket's life

    async def _backfill(self, sub: Subscription, fields: list[FieldDef]) -> Pos | None:
        """Send the schema packet and any history; return the head position it reached."""
        req = sub.req
        keys = _select([f.key for f in fields], {f.key: f for f in fields}, req.fields)
        if req.since is not None:
            since: str = req.since
            epoch, pos = _parse_position(since)
            hist = await self.broker.read_after(req.channel, epoch, pos)
            fields = hist.fields or fields
            fmap = {f.key: f for f in fields}
            keys = _select(fmap, fmap, req.fields)
            if hist.lost:
                lost = "an unknown number of" if hist.lost < 0 else str(hist.lost)
                why = "the position is from another broker epoch (server restarted?)" if hist.lost < 0 else (
                    "beyond retention")
                sub.control({"type": "notice", "level": "warning",
                             "text": f"{lost} points lost: {why}; resuming from the oldest retained point",
                             "lost": hist.lost})
            # The schema packet names what the client already has: the head comes with the chunks.
            self._send_schema(sub, fields, keys, since if epoch == hist.epoch and not hist.lost else None)
            await self._send_chunks(sub, hist, keys, fmap)
            return hist.head if hist.head is not None else (pos if epoch == hist.epoch else None)
        if req.from_ms is None:
            self._send_schema(sub, fields, keys, None)
            return None
        hist = await self.broker.history(req.channel, req.from_ms, req.to_ms)
        fields = hist.fields or fields
        fmap = {f.key: f for f in fields}
        keys = _select(fmap, fmap, req.fields)
        rows = Rows()
        for c in hist.chunks:
            rows.extend(c.times, {k: c.columns[k] for k in keys if k in c.columns})
        if not hist.sorted:
            rows.sort()
        head_pos = hist.head.encode(hist.epoch) if hist.head else None
        per_packet = max(1000, HISTORY_POINTS_PER_PACKET // max(1, len(keys)))
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

    def _send_schema(self, sub: Subscription, fields: list[FieldDef], keys: list[str], position: str | None) -> None:
        fmap = {f.key: f for f in fields}
        body = data_body(frame_json([fmap[k] for k in keys], keys, Rows()), position)
        sub.send_data(body, position, force=True)
        sub.keys = tuple(keys)

    async def _send_chunks(self, sub: Subscription, hist: History, keys: Sequence[str],
                           fields: dict[str, FieldDef]) -> None:
        chunks = hist.chunks
        step = 64
        for lo in range(0, len(chunks), step):
            part = chunks[lo:lo + step]
            position = part[-1].pos.encode(hist.epoch)
            await sub.sink.drain()
            for body in encode_chunks(part, keys, fields, False, position):
                sub.send_data(body, position, force=True)

    async def _join(self, sub: Subscription, feed: Feed, after: Pos | None) -> None:
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
                    epoch = self.broker.epoch_of(feed.channel) or ""
                    position = gap[-1].pos.encode(epoch)
                    for body in encode_chunks(gap, feed.keys, feed.fields, False, position):
                        sub.send_data(body, position, force=True)
                    after = gap[-1].pos
                feed.join(sub, after)
                return
            epoch = self.broker.epoch_of(feed.channel) or ""
            hist = await self.broker.read_after(feed.channel, epoch, after)
            if not hist.chunks:
                feed.join(sub, after)
                return
            await self._send_chunks(sub, hist, feed.keys, feed.fields)
            after = hist.chunks[-1].pos
