"""The Broker protocol: where points live between publishers and the hub.

A broker keeps, per channel, an append-only log of chunks (published batches, time-sorted within
a batch) with ordered positions, a schema, and a bounded history. The hub reads history by time
range or after a position, and subscribes to new chunks. ``MemoryBroker`` and ``RedisBroker``
implement it; the same test suite runs against both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from livedata.core.frames import Batch, Chunk, FieldDef, Pos, Schema
from livedata.core.rollup import Buckets, Tier

log = logging.getLogger("livedata.broker")


class BrokerError(RuntimeError):
    """The broker cannot be reached or failed; the operation may be retried later.

    ``unknown`` is True when a write was sent but no answer came (a timeout, a connection lost
    mid-call): it may have been applied. Retrying it with the same :class:`Key` is then safe.
    """

    def __init__(self, message: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


class BrokerStartError(RuntimeError):
    """The broker cannot start (its data directory is locked, unreadable, or of another format)."""


class ChannelLimitError(RuntimeError):
    """Creating one more channel would pass the configured limit."""

    @classmethod
    def of(cls, limit: int) -> ChannelLimitError:
        return cls(f"too many channels: the limit is {limit} (delete some or raise --max-channels)")


def retained_from(start_ms: int | None, now_s: float, retention_ms: int) -> int:
    """The start of a history read: never before ``now - retention`` (point time).

    Both brokers trim at publish and keep a channel's newest batch whatever its age (positions
    need it), so a channel that was pushed old points and nothing since still holds them; reads
    leave them out, so "history is kept for --retention, by point time" holds for what is served.
    """
    cutoff = int(now_s * 1000) - retention_ms
    return cutoff if start_ms is None else max(start_ms, cutoff)


class FieldLimitError(RuntimeError):
    """The batch would give its channel more fields than ``--max-fields-per-channel``.

    ``field`` is the first new field over the limit."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def field_limit_error(channel: str, have: int, new: int, limit: int, first: str) -> FieldLimitError:
    return FieldLimitError(
        f"channel {channel!r} has {have} fields and this push adds {new}: the limit is {limit} per channel "
        "(send fewer distinct field names or tags, or raise --max-fields-per-channel)", first)


def admit_fields(channel: str, schema: Schema | None, reserved: Schema | None, fields: Iterable[FieldDef],
                 max_fields: int) -> tuple[list[FieldDef], list[FieldDef]]:
    """Check a batch's ``fields`` against its channel's ``schema`` (None: a new channel), the fields
    its held points ``reserved``, and ``max_fields`` (0: no limit), for a broker that checks in
    Python (the Redis broker checks the same in its publish script).

    Returns (the fields new to the schema, those of them not reserved: what grows the channel).
    Raises SchemaError (a field of another type) or FieldLimitError; nothing is changed.
    """
    new = (schema or Schema()).check(fields)
    held = reserved.fields if reserved is not None else {}
    if held and new:
        assert reserved is not None
        reserved.check(new)
    fresh = [f for f in new if f.key not in held]
    have = len(schema.fields) + len(held) if schema is not None else 0
    if max_fields and fresh and have + len(fresh) > max_fields:
        raise field_limit_error(channel, have, len(fresh), max_fields, fresh[max(0, max_fields - have)].key)
    return new, fresh


class HeldLimitError(RuntimeError):
    """Holding these points in a reorder window would pass ``max_held_bytes``: nothing was held."""

    def __init__(self, message: str, size: int, used: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.used = used
        self.limit = limit


class KeyConflict(RuntimeError):
    """The idempotency key was already used on this channel for a different request."""


def held_limit_text(size: int, used: int, limit: int) -> str:
    """Why a push with a reorder window was refused (the same words on every broker)."""
    if size > limit:
        return (f"this push would hold {size} bytes in the reorder window, more than the bound of {limit} "
                "(--max-held-bytes): split it, or push without reorder_ms")
    return (f"the reorder window holds {used} bytes and this push needs {size} more, past the bound of {limit} "
            "(--max-held-bytes): retry in a moment, or push without reorder_ms")


KEY_TTL_S = 600.0
"""How long a broker remembers an idempotency key by default (``--idempotency-ttl``)."""


@dataclass(slots=True)
class Key:
    """An idempotency key of a write, and the digest of the request it came with.

    The broker checks and records it in the same atomic step as the write: a key it already
    recorded with the same digest makes the write a no-op and sets ``replayed``; with another
    digest the write raises :class:`KeyConflict`. Keys are per channel and kept for ``ttl_s``, or
    the broker's key time to live when None.
    """

    name: str
    digest: str
    replayed: bool = False
    ttl_s: float | None = None


@dataclass(slots=True)
class ChannelInfo:
    name: str
    fields: list[FieldDef]
    last_time: int | None
    points_per_s: float
    points: int
    generated: bool = False


@dataclass(slots=True)
class History:
    """Points of one channel: ``chunks`` in log order, and the head position they reach.

    ``head`` is None when the channel has no points. ``lost`` (for reads after a position) is the
    number of points between that position and the oldest one retained, or -1 when unknown
    (another broker epoch); None when nothing was lost.
    """

    epoch: str
    chunks: list[Chunk]
    head: Pos | None
    fields: list[FieldDef] = field(default_factory=list)
    lost: int | None = None
    sorted: bool = True
    """True when the chunks' points, taken in order, are in time order."""
    more: bool = False
    """A paged read (``max_bytes``) stopped before ``head``: read on after the last chunk."""
    copied: bool = False
    """The chunks were made for this read (decoded from Redis), not shared with the broker's own."""


@dataclass(slots=True)
class Rollup:
    """One tier's buckets of a channel over a range, and the head position they include.

    Every point up to ``head`` is in ``buckets``; points published after it may be too (a tier is
    updated with its chunk, and a read may see a later one): a subscription sends a bucket again
    after every chunk that touches it, so such a bucket is sent again anyway.
    """

    epoch: str
    head: Pos | None
    fields: list[FieldDef]
    buckets: Buckets


ChunkCallback = Callable[[str, Chunk, list[FieldDef]], None]
"""Called with (channel, chunk, fields the chunk added to the schema), in log order."""


class Unsubscribe(Protocol):
    def __call__(self) -> None: ...


class Subscribers:
    """Per channel, the callbacks of this process's broker subscriptions: the bookkeeping every
    broker shares (which channels are subscribed, adding, removing, calling them in order).

    ``on_last(channel)`` runs when a channel's last callback leaves (a broker stops reading it).
    """

    __slots__ = ("_by_channel", "_on_last")

    def __init__(self, on_last: Callable[[str], None] | None = None) -> None:
        self._by_channel: dict[str, list[ChunkCallback]] = {}
        self._on_last = on_last

    def __contains__(self, channel: object) -> bool:
        return channel in self._by_channel

    def __bool__(self) -> bool:
        return bool(self._by_channel)

    def channels(self) -> list[str]:
        return list(self._by_channel)

    def add(self, channel: str, callback: ChunkCallback) -> Unsubscribe:
        """Register ``callback`` for ``channel``; the result removes it (idempotent)."""
        self._by_channel.setdefault(channel, []).append(callback)

        def unsubscribe() -> None:
            lst = self._by_channel.get(channel)
            if lst is not None and callback in lst:
                lst.remove(callback)
                if not lst:
                    del self._by_channel[channel]
                    if self._on_last is not None:
                        self._on_last(channel)

        return unsubscribe

    def deliver(self, channel: str, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        """Call every callback of ``channel``; one that raises is logged and the others still run."""
        callbacks = self._by_channel.get(channel)
        if not callbacks:
            return
        for callback in list(callbacks):
            try:
                callback(channel, chunk, new_fields)
            except Exception:
                log.exception("subscriber of %s failed", channel)

    def clear(self) -> None:
        self._by_channel.clear()


class Broker(Protocol):
    """What the hub needs from a broker."""

    on_status: Callable[[bool, str], None] | None
    """Set by the hub: called with ``(False, text)`` when the broker becomes unreachable for live
    reads and ``(True, text)`` when it is back (a broker that cannot fail never calls it)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the broker answers; raise BrokerError when it cannot be reached (within
        its command timeout). ``/api/health`` reports it."""
        ...

    async def publish(self, channel: str, batch: Batch, key: Key | None = None) -> Pos:
        """Store ``batch`` (sorted here) atomically; return the position of its last point.

        With a ``key`` already recorded for the same request nothing is stored (``key.replayed``)
        and the channel's head is returned.

        Raises:
            SchemaError: a field conflicts with the channel's schema or held fields (nothing stored).
            ChannelLimitError: the channel is new and there are too many.
            KeyConflict: ``key`` was recorded for another request (nothing stored).
            BrokerError: the broker is unreachable (nothing stored; with ``unknown``, maybe stored).
        """
        ...

    async def hold(self, channel: str, batch: Batch, hold_ms: int, key: Key | None = None) -> None:
        """Store ``batch`` in the channel's reorder window, due in ``hold_ms``: it is published by
        :meth:`release` (of this or any process sharing the broker), never lost once this returns.
        Its fields are reserved in the channel's schema from now on.

        Raises:
            SchemaError, ChannelLimitError, KeyConflict, BrokerError: as :meth:`publish`.
            HeldLimitError: the held points would pass the broker's bound (nothing held).
        """
        ...

    async def release(self, now_ms: int | None = None, everything: bool = False) -> int | None:
        """Publish the held points that are due (all of them with ``everything``), exactly once
        however often it is called, here or elsewhere; return when the next are due (wall clock
        ms), or None when nothing is held.

        Raises:
            BrokerError: the broker is unreachable (what is held stays held).
        """
        ...

    async def history(self, channel: str, start_ms: int | None, end_ms: int | None, *,
                      after: Pos | None = None, until: Pos | None = None, max_bytes: int = 0) -> History:
        """Points with ``start_ms <= time <= end_ms`` (None: unbounded), up to the head now.

        Paged: with ``max_bytes`` a read stops once its chunks hold about that many bytes (at least
        one chunk) and sets ``more``; the next page is read with ``after`` = the last chunk's
        position and ``until`` = the first page's ``head``. Chunks come in log order.
        """
        ...

    async def read_after(self, channel: str, epoch: str, pos: Pos, limit: int = 0, *,
                         until: Pos | None = None, max_bytes: int = 0) -> History:
        """Chunks after ``pos`` (from the oldest retained one when it is gone or the epoch differs),
        up to ``until`` (default: the head), at most ``limit`` chunks and about ``max_bytes``."""
        ...

    tiers: tuple[Tier, ...]
    """The rollup tiers this broker keeps (finest first), updated at every publish."""

    async def rollups(self, channel: str, width_ms: int, start_ms: int | None, end_ms: int | None) -> Rollup:
        """The buckets of the tier ``width_ms`` (one of ``tiers``) overlapping ``[start_ms, end_ms]``."""
        ...

    def subscribe(self, channel: str, callback: ChunkCallback, after: Pos | None) -> Unsubscribe:
        """Call ``callback`` for every chunk after ``after`` (None: from now), in log order."""
        ...

    async def channels(self) -> list[ChannelInfo]: ...

    async def channel_count(self) -> int:
        """Channels that count in the channel limit (every one but the generated ones)."""
        ...

    async def fields(self, channel: str) -> list[FieldDef] | None:
        """The channel's schema, or None when it does not exist."""
        ...

    async def last_time(self, channel: str) -> int | None: ...

    async def delete(self, channel: str) -> bool: ...

    def epoch_of(self, channel: str) -> str | None:
        """The channel's epoch if known locally (cheap); None if not known yet."""
        ...

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Acquire or renew the lease ``name`` for ``owner`` for ``ttl_s`` seconds.

        True when ``owner`` holds it now; False when another owner does. Servers sharing a broker
        use it to run each generated channel once. Raises BrokerError when unreachable.
        """
        ...
