"""The Redis broker: the same log as :class:`~livedata.brokers.memory.MemoryBroker`, shared by servers.

About 800 lines, one class: every method depends on the key layout below (publishing through the
scripts in ``redis_lua.py``, reading history and positions back, the subscribers' reading loop,
reconnects), and keeping them together next to it is what keeps them consistent.

Keys (``P`` is the prefix, ``livedata:`` by default; one Redis, not Redis Cluster):

``P s:{channel}``
    A Redis Stream, one entry per published batch: ``d`` (the batch, msgpack ``[times, columns]``),
    ``t0``/``t1`` (its min/max time), ``hwm`` (the channel's max time before it, empty for the
    first), ``n`` (points in the channel's log up to and including it), ``e`` (epoch) and ``new``
    (JSON ``[[key, name, type, labels], ...]`` of the fields it added to the schema, or empty).
    The entry ID is ``max(t1, previous ID's ms)-seq``: IDs grow with the channel's max time, so
    every entry holding a point ``>= T`` has an ID ``>= T`` and a time range is read from ``T`` on.
    A position is ``Pos(ms, seq, n)``.
``P m:{channel}``
    Meta hash: ``epoch`` (a random token made with the channel: a deleted and recreated channel,
    or a flushed Redis, has another one), ``n``, ``max`` (max time), ``lms`` (last ID's ms),
    ``hid`` (last ID), ``late`` (ID of the last late entry), ``cells`` (values retained) and a
    10-second rate counter.
``P f:{channel}``
    Schema hash: field key -> ``order|type|[key, name, type, labels]``.
``P i:{channel}``
    A small index list parallel to the stream (``id n rows values t1`` per entry) that retention
    reads instead of the entries (which hold the payload).
``P r{w}:{channel}`` / ``P z{w}:{channel}``
    Rollup tier ``w`` (ms): a hash bucket start -> msgpack ``{field order (a string): aggregate}``
    (``core/rollup.py``), and a sorted set of its bucket starts (range reads, retention). Merged in
    the publish script, so a tier always holds exactly the stream's points.
``P channels``
    The set of channel names; ``P generated`` the generated ones among them (they do not count in
    the channel limit). ``P lease:{name}``: generator leases. ``P w:{token}``: a wake-up stream of
    one process's reader.

Publishing (schema check and merge, channel limit, append, counters, retention) is one Lua script
(``redis_lua.py``), so it is atomic: a schema conflict or the channel limit stores nothing. How
entries, IDs and schema rows are encoded: ``redis_codec.py``.

Retention is by point time (``retention_s`` against this process's clock, at publish), by
count of values (as in the memory broker) and by payload bytes (``retention_bytes``), at entry
granularity: an entry is dropped when all its points are older than the cutoff, or when the values
(or bytes) after it are still at least ``retention_points`` (``retention_bytes``). The newest entry is
always kept. So Redis keeps *at least* what the memory broker keeps (which cuts inside the oldest
batch): up to one batch more, and late entries (whose ID is above their points' times) are kept
until the ones before them go.

Subscriptions use no Redis connection each: one reader task per process reads every subscribed
stream with one ``XREAD BLOCK`` on its own connection, calls the callbacks in log order, and is
woken through its own tiny stream when it must read a new stream. When Redis goes away the reader
retries with exponential backoff, reports through ``on_status``, and resumes from the last IDs it
delivered, so subscribers see no gap (points published meanwhile were refused with BrokerError).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from livedata.brokers.base import (
    KEY_TTL_S,
    BrokerError,
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
    field_limit_error,
    held_limit_text,
    retained_from,
)
from livedata.brokers.redis_codec import (
    Entry,
    decode_entry,
    decode_held,
    def_json,
    def_of,
    encode_held,
    encode_payload,
    entry_id,
    is_late,
    json_decode,
    payload_decode,
    payload_encode,
    schema_of,
)
from livedata.brokers.redis_lua import DELETE, HOLD, LEASE, PUBLISH, RELEASE
from livedata.core.frames import Batch, Chunk, FieldDef, Pos, SchemaError, rest_of, window
from livedata.core.rollup import DEFAULT_TIERS, Buckets, Tier, check_tiers, chunk_rollup
from livedata.core.sources import is_generated
from livedata.core.window import Held, held_bytes, release

log = logging.getLogger("livedata.redis")

PAGE = 256
"""Entries per XRANGE page."""


class RedisBroker:
    """A broker in one Redis (>= 7.0), shared by every ``livedata serve`` pointed at it.

    Same semantics as the memory broker (see the module docstring for the layout and the
    retention guarantee). ``BrokerError`` is raised when Redis cannot be reached; connects time
    out after ``connect_timeout_s`` and commands after ``timeout_s``, so nothing hangs.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "livedata:",
        retention_s: float = 3600.0,
        retention_points: int = 200_000,
        max_channels: int = 10_000,
        wall: Callable[[], float] = time.time,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        block_ms: int = 1000,
        *,
        retention_bytes: int = 0,
        max_fields: int = 0,
        tiers: Sequence[Tier] = DEFAULT_TIERS,
        max_held_bytes: int = 64 << 20,
        key_ttl_s: float = KEY_TTL_S,
    ) -> None:
        check_tiers(tiers)
        self.tiers = tuple(tiers)
        self.url = url
        self.prefix = prefix
        self.retention_ms = int(retention_s * 1000)
        self.retention_points = retention_points
        self.retention_bytes = retention_bytes
        """Per channel, in payload bytes (0: no limit)."""
        self.max_fields = max_fields
        self.max_channels = max_channels
        self.wall = wall
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.block_ms = block_ms
        self.max_held_bytes = max_held_bytes
        self.key_ttl_s = key_ttl_s
        self.on_status: Callable[[bool, str], None] | None = None
        self.where = url.split("@")[-1]
        self.token = secrets.token_hex(6)
        # No automatic retry: a publish that timed out after being sent must not be sent twice.
        self._r: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s, retry=Retry(NoBackoff(), 0))
        self._reader_r: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=block_ms / 1000 + timeout_s + 1, socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0), max_connections=1)
        self._publish = self._r.register_script(PUBLISH)
        self._hold = self._r.register_script(HOLD)
        self._release_script = self._r.register_script(RELEASE)
        self._delete = self._r.register_script(DELETE)
        self._lease = self._r.register_script(LEASE)
        self._epochs: dict[str, str] = {}
        self._subs = Subscribers(on_last=self._stop_reading)
        self._last: dict[str, str] = {}
        """Per subscribed channel: the stream ID the reader delivered up to."""
        self._pending: set[str] = set()
        """Subscribed channels whose start ID is not known yet (the head when resolved)."""
        self._fresh: set[str] = set()
        """Subscribed channels nothing was delivered to yet: a read may still lower their start."""
        self._wake_key = f"{prefix}w:{self.token}"
        self._wake_last = "0-0"
        self._wake_needed = False
        self._wake_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._down = False
        self._closed = False

    # --- keys and errors ------------------------------------------------------------------------

    def _k(self, kind: str, channel: str) -> str:
        return f"{self.prefix}{kind}:{channel}"

    @property
    def _reg(self) -> str:
        return f"{self.prefix}channels"

    @property
    def _greg(self) -> str:
        return f"{self.prefix}generated"

    @property
    def _holding(self) -> str:
        return f"{self.prefix}holding"

    @property
    def _held_bytes(self) -> str:
        return f"{self.prefix}heldbytes"

    def _error(self, exc: BaseException) -> BrokerError:
        return BrokerError(f"Redis at {self.where} is unavailable ({type(exc).__name__}: {exc})")

    # --- lifetime -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        try:
            await self._r.ping()
        except (RedisError, OSError) as exc:
            log.warning("Redis at %s is not reachable yet (%s): pushes fail with 503 until it is", self.where, exc)
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(), name="redis-reader")

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._reader, *self._tasks) if t is not None]
        self._reader = None
        self._wake_event.set()
        while tasks:
            # A cancel that lands as redis-py's read times out can be turned into a TimeoutError
            # and lost: cancel again until the task is done (the loop also checks _closed).
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=0.2)
            tasks = [t for t in tasks if not t.done()]
        self._tasks.clear()
        self._subs.clear()
        self._last.clear()
        self._pending.clear()
        for client in (self._r, self._reader_r):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ping(self) -> None:
        await self._run(self._r.ping)

    # --- writing --------------------------------------------------------------------------------

    def epoch_of(self, channel: str) -> str | None:
        return self._epochs.get(channel)

    async def _call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a writing script, telling a failure before it was sent (``BrokerError``: nothing was
        done) from one after (``BrokerError(unknown=True)``: it may have run)."""
        pool = self._r.connection_pool
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None
        try:
            try:
                await conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return await conn.read_response()
            except NoScriptError:  # not run: load it (a restarted Redis forgets scripts) and run it
                await conn.send_command("SCRIPT", "LOAD", script.script)
                await conn.read_response()
                await conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return await conn.read_response()
        except ResponseError as exc:
            raise BrokerError(f"Redis at {self.where} refused the write: {exc}") from None
        except BaseException as exc:
            await conn.disconnect()  # a late answer must not be read as the next command's
            if not isinstance(exc, RedisError | OSError):
                raise
            raise BrokerError(f"Redis at {self.where} did not answer ({type(exc).__name__}: {exc})",
                              unknown=True) from None
        finally:
            await pool.release(conn)

    def _refused(self, channel: str, res: list[Any], key: Key | None) -> bool:
        """Raise for a refusal; True for a replayed key (``key.replayed`` set)."""
        kind = res[0]
        if kind == b"schema":
            field, have, got = (x.decode() for x in res[1:4])
            raise SchemaError(f"field {field!r} is {have} on this channel; got a {got}", field=field)
        if kind == b"fields":
            have, new = int(res[1]), int(res[2])
            raise field_limit_error(channel, have, new, self.max_fields, res[3].decode())
        if kind == b"limit":
            raise ChannelLimitError.of(self.max_channels)
        if kind == b"conflict":
            assert key is not None
            raise KeyConflict(f"Idempotency-Key {key.name[:80]!r} was already used on channel {channel!r} for a "
                              "different request: use a new key for new data")
        if kind == b"dup":
            assert key is not None
            key.replayed = True
            return True
        return False

    def _key_args(self, channel: str, key: Key | None) -> tuple[str, list[Any]]:
        """The idempotency key's Redis key, and the digest and time to live arguments."""
        if key is None:
            return self._k("k", channel) + ":", ["", 0]
        ttl_s = self.key_ttl_s if key.ttl_s is None else key.ttl_s
        return f"{self._k('k', channel)}:{key.name}", [key.digest, int(ttl_s * 1000)]

    def _append_args(self, channel: str, batch: Batch) -> list[Any]:
        times = batch.times
        return [
            channel, secrets.token_hex(4), self.max_channels, int(self.wall() * 1000), self.retention_ms,
            self.retention_points, self.retention_bytes, self.max_fields, 0 if is_generated(channel) else 1,
            times[0] if times else "", times[-1] if times else "", len(times),
            encode_payload(times, batch.columns) if times else b"", batch.cells, self._rollup_arg(batch),
        ]

    @staticmethod
    def _field_args(batch: Batch) -> list[Any]:
        out: list[Any] = [len(batch.fields)]
        for f in batch.fields.values():
            out += [f.key, f.type, def_json(f)]
        return out

    def _rollup_arg(self, batch: Batch) -> Any:
        """The rollups of ``batch`` for the tiers (``ARGV[15]`` of PUBLISH and RELEASE), or ''."""
        numeric = [f.key for f in batch.fields.values() if f.type == "number"]
        parts = chunk_rollup(batch.times, batch.columns, numeric, self.tiers) if numeric and batch.times else []
        if not parts:
            return ""
        return payload_encode([[t.width_ms, t.retention_ms, p] for t, p in zip(self.tiers, parts, strict=True)])

    def _pos(self, channel: str, res: list[Any]) -> Pos:
        eid, n, epoch = res[1], int(res[2]), res[3].decode()
        if epoch:
            self._epochs[channel] = epoch
        if not eid:
            return Pos(0, 0, 0)
        a, b = entry_id(eid)
        return Pos(a, b, n)

    async def publish(self, channel: str, batch: Batch, key: Key | None = None) -> Pos:
        if batch.times != sorted(batch.times):  # the check in C: pushes are nearly always in order already
            batch = batch.sorted()
        kk, key_args = self._key_args(channel, key)
        args = self._append_args(channel, batch) + key_args + self._field_args(batch)
        keys = [self._k("m", channel), self._k("f", channel), self._k("s", channel), self._k("i", channel), self._reg,
                self._greg, self._k("hf", channel), kk, *self._tier_keys(channel)]
        res = await self._call(self._publish, keys, args)
        self._refused(channel, res, key)
        return self._pos(channel, res)

    async def hold(self, channel: str, batch: Batch, hold_ms: int, key: Key | None = None) -> None:
        if not len(batch):
            await self.publish(channel, batch, key)
            return
        batch = batch.sorted()
        size = held_bytes(batch)
        if size > self.max_held_bytes:
            raise HeldLimitError(held_limit_text(size, 0, self.max_held_bytes), size, 0, self.max_held_bytes)
        kk, key_args = self._key_args(channel, key)
        entry = encode_held(batch, size)
        args = [channel, secrets.token_hex(4), self.max_channels, int(self.wall() * 1000) + hold_ms, entry, size,
                self.max_held_bytes, *key_args, self.max_fields, 0 if is_generated(channel) else 1,
                *self._field_args(batch)]
        keys = [self._k("m", channel), self._k("f", channel), self._reg, self._greg, self._k("hf", channel),
                self._k("h", channel), self._k("hd", channel), self._holding, self._held_bytes, kk]
        res = await self._call(self._hold, keys, args)
        if res[0] == b"full":
            used = int(res[1])
            raise HeldLimitError(held_limit_text(size, used, self.max_held_bytes), size, used, self.max_held_bytes)
        if self._refused(channel, res, key):
            return
        self._epochs[channel] = res[1].decode()

    async def release(self, now_ms: int | None = None, everything: bool = False) -> int | None:
        now = int(self.wall() * 1000) if now_ms is None else now_ms
        due = await self._run(lambda: self._r.zrangebyscore(self._holding, "-inf", "+inf" if everything else now))
        for name in due:
            await self._release(name.decode(), now, everything)
        first = await self._run(lambda: self._r.zrange(self._holding, 0, 0, withscores=True))
        return int(first[0][1]) if first else None

    async def _release(self, channel: str, now: int, everything: bool) -> None:
        """Publish what is due in ``channel``'s window, once: retried when another release raced us."""
        for _ in range(100):
            async def read() -> list[Any]:
                async with self._r.pipeline(transaction=True) as p:
                    p.hgetall(self._k("h", channel))
                    p.zrange(self._k("hd", channel), 0, -1, withscores=True)
                    res: list[Any] = await p.execute()
                    return res

            raw, dues = await self._run(read)
            entries = []
            due_of = {int(i): d for i, d in dues}
            for i, payload in raw.items():
                held, size = decode_held(payload)
                entries.append(Held(int(i), due_of.get(int(i), 0.0), held, size))
            entries.sort(key=lambda e: e.id)
            out = release(entries, now, everything)
            if out is None:
                return
            sizes = {e.id: e.size for e in entries}
            freed = sum(sizes[i] for i in out.gone) + sum(sizes[e.id] - e.size for e in out.kept)
            kept: list[Any] = []
            for e in out.kept:
                kept += [e.id, encode_held(e.batch, e.size)]
            args = [*self._append_args(channel, out.batch), freed, len(out.gone), len(out.kept),
                    *self._field_args(out.batch), *out.gone, *kept]
            keys = [self._k("m", channel), self._k("f", channel), self._k("s", channel), self._k("i", channel),
                    self._reg, self._greg, self._k("hf", channel), self._k("h", channel), self._k("hd", channel),
                    self._holding, self._held_bytes, *self._tier_keys(channel)]
            res = await self._call(self._release_script, keys, args)
            if res[0] == b"retry":
                continue
            self._refused(channel, res, None)
            self._pos(channel, res)
            return
        log.warning("held points of %s: other releases kept racing this one; the next call publishes them", channel)

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Acquire or renew the lease ``name`` for ``owner`` for ``ttl_s``; False if another holds it."""
        try:
            got = await self._lease(keys=[self._k("lease", name)], args=[owner, max(1, int(ttl_s * 1000))])
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None
        return bool(got)

    def _tier_keys(self, channel: str) -> list[str]:
        out = []
        for t in self.tiers:
            out += [self._k(f"r{t.width_ms}", channel), self._k(f"z{t.width_ms}", channel)]
        return out

    async def delete(self, channel: str) -> bool:
        keys = [*(self._k(k, channel) for k in ("m", "f", "s", "i", "hf", "h", "hd")), self._reg, self._holding,
                self._held_bytes, self._greg, *self._tier_keys(channel)]
        deleted = await self._run(lambda: self._delete(keys=keys, args=[channel]))
        self._epochs.pop(channel, None)
        return bool(deleted)

    # --- reading --------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None

    async def _range(self, channel: str, lo: str, hi: str, limit: int = 0) -> list[Entry]:
        count = min(PAGE, limit) if limit else PAGE
        out: list[Entry] = await self._run(lambda: self._r.xrange(self._k("s", channel), lo, hi, count=count))
        return out

    def _seen_head(self, channel: str, head: bytes | None) -> None:
        """A read found the head: a subscription still waiting for its start begins there."""
        if channel in self._subs and (channel in self._pending or channel in self._fresh):
            start = head.decode() if head else "0-0"
            last = self._last.get(channel)
            if last is None or entry_id(start) < entry_id(last):
                self._last[channel] = start
                self._fresh.add(channel)
                self._wake()
            self._pending.discard(channel)

    async def history(self, channel: str, start_ms: int | None, end_ms: int | None, *,
                      after: Pos | None = None, until: Pos | None = None, max_bytes: int = 0) -> History:
        start_ms = retained_from(start_ms, self.wall(), self.retention_ms)
        lo = "-" if start_ms is None or start_ms <= 0 else str(start_ms)
        if after is not None and (start_ms is None or (after.a, after.b) >= (start_ms, 0)):
            lo = f"({after.a}-{after.b}"

        async def first() -> list[Any]:
            async with self._r.pipeline(transaction=True) as p:
                p.hmget(self._k("m", channel), "epoch", "late", "hid", "n")
                p.hgetall(self._k("f", channel))
                p.xrange(self._k("s", channel), lo, "+", count=PAGE)
                res: list[Any] = await p.execute()
                return res

        (epoch_b, late_b, hid_b, n_b), raw_fields, page = await self._run(first)
        if epoch_b is None:
            self._seen_head(channel, None)  # no channel yet: a waiting subscription gets all of it
            return History("", [], None)
        epoch = epoch_b.decode()
        self._epochs[channel] = epoch
        self._seen_head(channel, hid_b)
        fields = schema_of(raw_fields)
        if not hid_b:
            return History(epoch, [], None, fields)
        head = until if until is not None else Pos(*entry_id(hid_b), int(n_b))
        head_id = (head.a, head.b)
        last_late = entry_id(late_b) if late_b else (-1, -1)
        out: list[Chunk] = []
        in_order = True
        size = 0
        more = False
        while page:
            done = False
            for eid, f in page:
                i = entry_id(eid)
                if i > head_id:
                    done = True
                    break
                if after is not None and i <= (after.a, after.b):
                    continue
                if end_ms is not None and int(f[b"t0"]) > end_ms:
                    if i > last_late:  # every later entry is on time, so after end_ms too
                        done = True
                        break
                    continue
                if start_ms is not None and int(f[b"t1"]) < start_ms:
                    continue
                if max_bytes and size >= max_bytes:
                    more = done = True
                    break
                chunk = window(decode_entry(eid, f), start_ms, end_ms)
                if chunk is not None:
                    out.append(chunk)
                    size += chunk.nbytes
                    in_order = in_order and not is_late(chunk)
            if done or len(page) < PAGE:
                break
            page = await self._range(channel, "(" + page[-1][0].decode(), f"{head.a}-{head.b}")
        return History(epoch, out, head, fields, sorted=in_order, more=more, copied=True)

    async def read_after(self, channel: str, epoch: str, pos: Pos, limit: int = 0, *,
                         until: Pos | None = None, max_bytes: int = 0) -> History:
        async def first() -> list[Any]:
            async with self._r.pipeline(transaction=True) as p:
                p.hmget(self._k("m", channel), "epoch", "hid", "n")
                p.hgetall(self._k("f", channel))
                p.lindex(self._k("i", channel), 0)
                res: list[Any] = await p.execute()
                return res

        (epoch_b, hid_b, n_b), raw_fields, oldest = await self._run(first)
        if epoch_b is None:
            self._seen_head(channel, None)
            return History("", [], None, lost=-1 if epoch else None)
        mine = epoch_b.decode()
        self._epochs[channel] = mine
        self._seen_head(channel, hid_b)
        fields = schema_of(raw_fields)
        if not hid_b:
            return History(mine, [], None, fields, lost=-1 if epoch != mine else None)
        head = until if until is not None else Pos(*entry_id(hid_b), int(n_b))
        lost: int | None = None
        lo = "-"
        if epoch != mine:
            lost = -1
        else:
            lo = f"{pos.a}-{pos.b}"  # inclusive: a position inside an entry gets the rest of it
            if oldest:
                oid, on, ok = oldest.split(b" ")[:3]
                before = int(on) - int(ok)
                if (pos.a, pos.b) < entry_id(oid) and before > pos.count:
                    lost = before - pos.count
        out: list[Chunk] = []
        hi = f"{head.a}-{head.b}"
        size = 0
        more = False
        extra = 1 if lost is None else 0  # the first page starts at the position's own entry
        while True:
            page = await self._range(channel, lo, hi, limit - len(out) + extra if limit else 0)
            extra = 0
            for eid, f in page:
                if (limit and len(out) >= limit) or (max_bytes and size >= max_bytes):
                    more = True
                    break
                got: Chunk | None = decode_entry(eid, f)
                if lost is None and got is not None and got.pos == pos:
                    got = rest_of(got, pos)
                if got is not None:
                    out.append(got)
                    size += got.nbytes
            if more or len(page) < PAGE:
                break
            if limit and len(out) >= limit:
                more = True
                break
            lo = "(" + page[-1][0].decode()
        return History(mine, out, head, fields, lost=lost, sorted=not any(map(is_late, out)), more=more,
                       copied=True)

    async def rollups(self, channel: str, width_ms: int, start_ms: int | None, end_ms: int | None) -> Rollup:
        if all(t.width_ms != width_ms for t in self.tiers):
            raise ValueError(f"no tier of {width_ms} ms (tiers: {[t.width_ms for t in self.tiers]})")
        lo = "-inf" if start_ms is None else str(start_ms - width_ms + 1)
        hi = "+inf" if end_ms is None else str(end_ms)
        hk, zk = self._k(f"r{width_ms}", channel), self._k(f"z{width_ms}", channel)

        async def first() -> list[Any]:
            async with self._r.pipeline(transaction=True) as p:
                p.hmget(self._k("m", channel), "epoch", "hid", "n")
                p.hgetall(self._k("f", channel))
                p.zrangebyscore(zk, lo, hi)
                res: list[Any] = await p.execute()
                return res

        (epoch_b, hid_b, n_b), raw_fields, buckets = await self._run(first)
        if epoch_b is None:
            return Rollup("", None, [], Buckets(width_ms))
        epoch = epoch_b.decode()
        self._epochs[channel] = epoch
        fields = schema_of(raw_fields)
        head = Pos(*entry_id(hid_b), int(n_b)) if hid_b else None
        out = Buckets(width_ms)
        if buckets:
            rows = await self._run(lambda: self._r.hmget(hk, buckets))
            keys = [f.key for f in fields]
            for b, raw in zip(buckets, rows, strict=True):
                if raw is None:  # trimmed between the two reads
                    continue
                row = payload_decode(raw)  # {"field order": aggregate}
                aggs = {keys[int(o)]: [float(x) for x in a] for o, a in row.items()
                        if isinstance(a, list) and int(o) < len(keys)}
                out.add(int(b), aggs)
        return Rollup(epoch, head, fields, out)

    async def fields(self, channel: str) -> list[FieldDef] | None:
        async def get() -> list[Any]:
            async with self._r.pipeline(transaction=True) as p:
                p.hget(self._k("m", channel), "epoch")
                p.hgetall(self._k("f", channel))
                res: list[Any] = await p.execute()
                return res

        epoch_b, raw = await self._run(get)
        if epoch_b is None:
            return None
        self._epochs[channel] = epoch_b.decode()
        return schema_of(raw)

    async def last_time(self, channel: str) -> int | None:
        raw = await self._run(lambda: self._r.hget(self._k("m", channel), "max"))
        return int(raw) if raw else None

    async def channels(self) -> list[ChannelInfo]:
        names = sorted(n.decode() for n in await self._run(lambda: self._r.smembers(self._reg)))
        if not names:
            return []

        async def get() -> list[Any]:
            async with self._r.pipeline(transaction=False) as p:
                for name in names:
                    p.hmget(self._k("m", name), "max", "cells", "wi", "wc", "pc", "epoch")
                    p.hgetall(self._k("f", name))
                res: list[Any] = await p.execute()
                return res

        res = await self._run(get)
        now = self.wall() * 1000
        wi_now, frac = divmod(now, 10_000)
        out = []
        for j, name in enumerate(names):
            (mx, cells, wi, wc, pc, epoch), raw_fields = res[2 * j:2 * j + 2]
            if epoch is None:  # deleted meanwhile
                continue
            rate = 0.0
            if wi is not None:
                w, cur, prev = int(wi), int(wc or 0), int(pc or 0)
                if w == wi_now:
                    rate = (prev * (1 - frac / 10_000) + cur) / 10
                elif w == wi_now - 1:
                    rate = cur * (1 - frac / 10_000) / 10
            out.append(ChannelInfo(name, schema_of(raw_fields), int(mx) if mx else None, rate, int(cells or 0)))
        return out

    async def channel_count(self) -> int:
        async def get() -> list[Any]:
            async with self._r.pipeline(transaction=True) as p:
                p.scard(self._reg)
                p.scard(self._greg)
                res: list[Any] = await p.execute()
                return res

        every, generated = await self._run(get)
        return int(every) - int(generated)

    # --- subscriptions --------------------------------------------------------------------------

    def subscribe(self, channel: str, callback: ChunkCallback, after: Pos | None) -> Unsubscribe:
        """Call ``callback`` for every chunk after ``after`` (None: from now), in log order.

        ``after`` counts only for the first subscription of a channel in this process; later ones
        get the chunks the reader has not delivered yet. "Now" is the channel's head when the
        reader (or a history read, whichever comes first) looks at it, so a history read after
        subscribing always reaches a head at or after where live delivery starts.
        """
        unsubscribe = self._subs.add(channel, callback)
        if channel not in self._last and channel not in self._pending:
            if after is not None:
                self._last[channel] = f"{after.a}-{after.b}"
            else:
                self._pending.add(channel)
            self._fresh.add(channel)
            self._wake()
        return unsubscribe

    def _stop_reading(self, channel: str) -> None:
        """The channel's last subscriber left: the reader forgets it."""
        self._last.pop(channel, None)
        self._pending.discard(channel)
        self._fresh.discard(channel)

    def _wake(self) -> None:
        """Make the reader rebuild its XREAD now (the set of streams changed)."""
        self._wake_event.set()
        if self._wake_needed or self._reader is None or self._closed:
            return
        self._wake_needed = True

        async def poke() -> None:
            try:
                async with self._r.pipeline(transaction=False) as p:
                    p.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
                    p.pexpire(self._wake_key, 600_000)
                    await p.execute()
            except (RedisError, OSError):
                pass  # the reader's short block timeout covers it

        task = asyncio.get_running_loop().create_task(poke(), name="redis-wake")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _status(self, ok: bool, text: str) -> None:
        hook = self.on_status
        if hook is not None:
            try:
                hook(ok, text)
            except Exception:
                log.exception("broker status hook failed")

    async def _resolve_pending(self) -> None:
        pending = sorted(self._pending)
        async with self._reader_r.pipeline(transaction=False) as p:
            for ch in pending:
                p.hget(self._k("m", ch), "hid")
            heads = await p.execute()
        for ch, head in zip(pending, heads, strict=True):
            if ch in self._pending:
                self._pending.discard(ch)
                self._last[ch] = head.decode() if head else "0-0"

    async def _read_loop(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                if not self._subs:
                    self._wake_event.clear()
                    await self._wake_event.wait()
                    continue
                if self._pending:
                    await self._resolve_pending()
                self._wake_needed = False
                self._wake_event.clear()
                req: dict[str, str] = {self._k("s", ch): self._last[ch] for ch in self._subs.channels()
                                       if ch in self._last}
                req[self._wake_key] = self._wake_last
                resp: Any = await self._reader_r.xread(cast(Any, req), count=PAGE, block=self.block_ms)
                if self._down:
                    self._down = False
                    log.warning("Redis at %s is reachable again: streams resume where they stopped", self.where)
                    self._status(True, f"the broker (Redis at {self.where}) is back: the stream resumes "
                                       "where it stopped")
                backoff = 0.1
                self._deliver(req, resp or [])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._closed:
                    return
                if not self._down:
                    self._down = True
                    log.warning("Redis at %s is unreachable (%s): retrying with backoff", self.where, exc)
                    self._status(False, f"the broker (Redis at {self.where}) is unreachable: live data is "
                                        "paused and resumes without a gap when it returns")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("redis reader failed; retrying")
                await asyncio.sleep(1.0)

    def _deliver(self, req: dict[str, str], resp: Sequence[Any]) -> None:
        cut = len(self.prefix) + 2
        for key_b, entries in resp:
            key = key_b.decode()
            if key == self._wake_key:
                self._wake_last = entries[-1][0].decode()
                continue
            ch = key[cut:]
            if self._last.get(ch) != req.get(key):
                continue  # the start moved (a read lowered it) or the channel left: read again
            for eid, f in entries:
                chunk = decode_entry(eid, f)
                new = [def_of(d) for d in json_decode(f[b"new"])] if f.get(b"new") else []
                self._epochs[ch] = f[b"e"].decode()
                self._last[ch] = eid.decode()
                self._fresh.discard(ch)
                self._subs.deliver(ch, chunk, new)

