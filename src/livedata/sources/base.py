"""What every source shares: its status and counts, rows batched per channel, publishing, backoff.

A source turns what it receives into points (pure decoding in :mod:`livedata.core.payloads`,
:mod:`livedata.core.upstream`), gathers them per channel (:class:`~livedata.core.payloads.ChannelRows`,
checked against the channel's schema) and publishes them every ``flush_ms`` through the
server's ingest path (:class:`Sink`: the same checks, limits and metrics as a push). A bad
message is counted and logged (at most one line per reason every 10 s) and never stops it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from livedata.brokers.base import BrokerError, ChannelLimitError, Key
from livedata.core.frames import Batch, FieldDef, SchemaError
from livedata.core.payloads import Decoded, PayloadError
from livedata.core.rows import ChannelRows
from livedata.core.sourcespec import SourceSpec
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.sources")

MAX_HELD_POINTS = 200_000
"""Points a source holds while the broker refuses them (it is down); beyond, they are dropped."""
LOG_EVERY_S = 10.0


class PublishError(Exception):
    """The sink refused a batch: ``reason`` is ``broker`` (retry later), ``schema``, ``channels``
    (the channel limit) or ``channel`` (a name that cannot be used)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


KEY_TTL_S = 60.0
"""How long the broker remembers a source batch's idempotency key: a batch whose write had an
unknown outcome (Redis took it and did not answer) is retried with its key within this, so it is
stored once. Shorter than a push's key (a source writes far more batches); a retry after the
broker was away longer than this may store the batch twice."""


def source_key(key: str | None) -> Key | None:
    """The broker :class:`Key` of a source batch's key (the key names one batch object)."""
    return None if key is None else Key(key, "source", ttl_s=KEY_TTL_S)


class Sink(Protocol):
    """What a source needs from the server: the ingest path and the broker's schemas."""

    async def publish(self, channel: str, batch: Batch, key: str | None = None) -> None:
        """Store ``batch`` on ``channel`` as a push would, at most once per ``key`` (the same
        batch retried keeps its key). Raises PublishError."""
        ...

    async def fields(self, channel: str) -> list[FieldDef] | None:
        """The channel's schema, or None when it does not exist (raises on a broker error)."""
        ...


class BrokerSink:
    """A :class:`Sink` straight onto a broker (tests; the server passes its ingest path instead)."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    async def publish(self, channel: str, batch: Batch, key: str | None = None) -> None:
        try:
            await self.broker.publish(channel, batch, source_key(key))
        except SchemaError as exc:
            raise PublishError("schema", str(exc)) from None
        except ChannelLimitError as exc:
            raise PublishError("channels", str(exc)) from None
        except BrokerError as exc:
            raise PublishError("broker", str(exc)) from None

    async def fields(self, channel: str) -> list[FieldDef] | None:
        result: list[FieldDef] | None = await self.broker.fields(channel)
        return result


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def backoff(attempt: int, initial: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] for d = initial * 2**attempt, capped."""
    d = min(cap, initial * (2 ** min(attempt, 30)))
    return random.uniform(d / 2, d)


@dataclass(slots=True)
class SourceStatus:
    """What ``GET /api/sources`` shows of one source."""

    name: str
    kind: str
    url: str
    state: str = "starting"
    """``starting``, ``connecting``, ``up``, ``down``, ``standby`` (another server runs it),
    ``complete`` (a finite upstream ended) or ``stopped``."""
    since_ms: int = field(default_factory=wall_ms)
    last_message_ms: int | None = None
    messages: int = 0
    points: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    channels: int = 0
    server: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "url": self.url, "state": self.state,
            "since": self.since_ms, "last_message": self.last_message_ms, "messages": self.messages,
            "points": self.points, "errors": dict(self.errors), "error_count": sum(self.errors.values()),
            "last_error": self.last_error, "channels": self.channels, "server": self.server,
        }


class RateLimitedLog:
    """At most one log line per key every ``every_s``; says how many were not logged."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, key: str, level: int, msg: str, *args: Any) -> bool:
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return False
        self._next[key] = now + self.every_s
        quiet = self._quiet.pop(key, 0)
        if quiet:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, quiet, self.every_s)
        log.log(level, msg, *args)
        return True


class Source:
    """The shared half of an MQTT or stream source: status, counts, rows per channel, the flusher.

    Subclasses implement :meth:`_connect_loop` (receive, decode, call :meth:`add`) and
    :meth:`claims` (the channels a notice about this source concerns).
    """

    def __init__(self, spec: SourceSpec, sink: Sink, on_state: Callable[[Source], None] | None = None) -> None:
        self.spec = spec
        self.sink = sink
        self.on_state = on_state
        self.status = SourceStatus(spec.name, spec.kind, spec.display_url)
        self.rows: dict[str, ChannelRows] = {}
        self.refused: set[str] = set()
        """Channels the sink refused by name (a generated channel's name, an invalid name)."""
        self.held: list[tuple[str, Batch, str]] = []
        """Batches the broker could not take (or whose outcome is unknown), with their keys."""
        self._keys = (f"src-{os.urandom(8).hex()}-{n}" for n in itertools.count())
        self.held_points = 0
        self.log = RateLimitedLog()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self._flush_loop(), name=f"source:{self.name}:flush")
        self._task = loop.create_task(self._run(), name=f"source:{self.name}")

    async def stop(self) -> None:
        """Disconnect, then publish what is still gathered (a clean stop loses nothing received)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        flusher, self._flusher = self._flusher, None
        await cancel_and_wait(flusher)
        try:
            await asyncio.wait_for(self._flush(final=True), 5.0)
        except Exception as exc:  # the broker is gone: nothing more to do
            log.warning("source %s: %d points not stored at stop: %s", self.name, self.pending_points(), exc)
        self.set_state("stopped")

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: say so loudly, the server goes on
            log.exception("source %s stopped by an unexpected error", self.name)
            self.set_state("down", "internal error (see the server log)")

    async def _connect_loop(self) -> None:
        raise NotImplementedError

    def claims(self, channel: str) -> bool:
        """True when a notice about this source concerns subscribers of ``channel``."""
        return channel in self.rows

    # --- state ---------------------------------------------------------------------------------

    def set_state(self, state: str, error: str | None = None) -> None:
        st = self.status
        if error is not None:
            st.last_error = error
        if st.state == state:
            return
        st.state = state
        st.since_ms = wall_ms()
        if self.on_state is not None:
            self.on_state(self)

    def error(self, reason: str, text: str, count: int = 1) -> None:
        st = self.status
        st.errors[reason] = st.errors.get(reason, 0) + count
        st.last_error = text
        self.log(reason, logging.WARNING, "source %s: %s", self.name, text)

    # --- gathering and publishing ----------------------------------------------------------------

    async def add(self, channel: str, decoded: Decoded) -> None:
        """Gather ``decoded`` (points for ``channel``, or line-protocol batches for their channels)."""
        if decoded.points:
            rows = self.rows.get(channel)
            if rows is None:
                rows = await self._rows(channel)
            if rows is not None:
                for t, values in decoded.points:
                    try:
                        rows.add(t, values)
                    except SchemaError as exc:
                        self.error("schema", f"channel {channel!r}: {exc}")
        for ch, batch in decoded.batches.items():
            rows = self.rows.get(ch)
            if rows is None:
                rows = await self._rows(ch)
            if rows is not None:
                refused = rows.add_batch(batch)
                if refused:
                    self.error("schema", f"channel {ch!r}: {refused} points have a field of another type",
                               refused)
        self._wake.set()

    async def _rows(self, channel: str) -> ChannelRows | None:
        if channel in self.refused:
            self.error("channel", f"channel {channel!r} was refused before; message dropped")
            return None
        try:
            fields = await self.sink.fields(channel)
        except Exception as exc:  # the broker is down: gather anyway, the publish checks again
            self.log("fields", logging.WARNING, "source %s: cannot read the schema of %s: %s", self.name, channel, exc)
            fields = None
        rows = self.rows.get(channel)  # another message may have created it meanwhile
        if rows is None:
            rows = self.rows[channel] = ChannelRows({f.key: f for f in fields or []})
            self.status.channels = len(self.rows)
        return rows

    def pending_points(self) -> int:
        return sum(len(r) for r in self.rows.values()) + self.held_points

    async def _flush_loop(self) -> None:
        period = self.spec.flush_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.held and loop.time() < self._retry_at:
                await asyncio.sleep(self._retry_at - loop.time())
            await self._flush()
            if period:
                await asyncio.sleep(period)

    async def _flush(self, final: bool = False) -> None:
        batches = self.held
        self.held = []
        self.held_points = 0
        for channel, rows in self.rows.items():
            batch = rows.take()
            if batch is not None:
                batches.append((channel, batch, next(self._keys)))
        failed = 0
        for channel, batch, key in batches:
            try:
                await self.sink.publish(channel, batch, key)
            except PublishError as exc:
                if exc.reason == "broker":
                    failed += 1
                    self._hold(channel, batch, key)
                elif exc.reason == "schema":
                    await self._republish_fitting(channel, batch, exc)
                else:
                    if exc.reason == "channel":
                        self.refused.add(channel)
                        self.rows.pop(channel, None)
                    self.error(exc.reason, f"channel {channel!r}: {len(batch)} points not stored: {exc}", len(batch))
            else:
                self.status.points += len(batch)
        if failed and not final:
            loop = asyncio.get_running_loop()
            self._retry_at = loop.time() + backoff(min(failed, 5), 0.2, 2.0)
            self._wake.set()
        elif final and self.held:
            raise RuntimeError(f"the broker is unavailable ({self.held_points} points held)")

    def _hold(self, channel: str, batch: Batch, key: str) -> None:
        if self.held_points + len(batch) > MAX_HELD_POINTS:
            self.error("dropped", f"channel {channel!r}: {len(batch)} points dropped: the broker has been "
                       f"unavailable for too long ({self.held_points} points held)", len(batch))
            return
        self.held.append((channel, batch, key))
        self.held_points += len(batch)

    async def _republish_fitting(self, channel: str, batch: Batch, exc: PublishError) -> None:
        """Another writer changed the channel's schema: re-read it and keep the points that fit."""
        try:
            fields = await self.sink.fields(channel)
        except Exception:
            fields = None
        rows = ChannelRows({f.key: f for f in fields or []})
        refused = rows.add_batch(batch)
        self.rows[channel] = ChannelRows(rows.schema)
        if refused:
            self.error("schema", f"channel {channel!r}: {refused} points not stored: {exc}", refused)
        again = rows.take()
        if again is not None:
            try:
                await self.sink.publish(channel, again, next(self._keys))
            except PublishError as exc2:
                self.error(exc2.reason, f"channel {channel!r}: {len(again)} points not stored: {exc2}", len(again))
            else:
                self.status.points += len(again)

    def decode_failed(self, exc: PayloadError, where: str) -> None:
        self.error(exc.reason, f"{where}: {exc}")


__all__ = ["BrokerSink", "PublishError", "RateLimitedLog", "Sink", "Source", "SourceStatus", "backoff", "wall_ms"]
