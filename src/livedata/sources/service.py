"""The sources of a server: run each once per cluster, share their status, notify their readers.

Each configured source runs on the server that holds its lease (the broker lease the generators
use: with a memory broker that is always this server; with Redis, one server of the cluster, and
another one takes over within about :data:`LEASE_TTL_S` when it dies).

The server running a source publishes its status as points on the channel ``_sources/<name>``
(fields ``up``, ``state``, ``messages``, ``errors``, ``points``, ``last_message``, ``server``) on
every change and every :data:`STATUS_EVERY_S`. Every server follows those channels, so
``GET /api/sources`` shows the same on every server, and every server sends a ``notice`` to its
own subscribers of a source's channels when the source goes down and when it is back (and to a
new subscriber while the source is down). The status channels can be charted like any channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from livedata.core.frames import Batch, Chunk, Column, FieldDef, value_at
from livedata.core.sourcespec import STATUS_PREFIX, MqttSpec, SourceSpec, StreamSpec
from livedata.sources.base import Sink, Source, SourceStatus, wall_ms
from livedata.sources.mqtt import MqttSource
from livedata.sources.stream import StreamSource
from livedata.tasks import cancel_and_wait

log = logging.getLogger("livedata.sources")

LEASE_TTL_S = 3.0
STATUS_EVERY_S = 5.0
STALE_S = 3 * STATUS_EVERY_S
"""A status older than this (its server died) shows as ``unknown`` until another server reports."""

_STATUS_FIELDS = {
    "up": FieldDef.of("up", "boolean"), "state": FieldDef.of("state", "string"),
    "messages": FieldDef.of("messages", "number"), "errors": FieldDef.of("errors", "number"),
    "points": FieldDef.of("points", "number"), "last_message": FieldDef.of("last_message", "number"),
    "server": FieldDef.of("server", "string"), "last_error": FieldDef.of("last_error", "string"),
}


class StatusBroker(Protocol):
    """The part of the broker the service uses directly (leases and the status channels)."""

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool: ...

    async def publish(self, channel: str, batch: Batch) -> Any: ...

    async def last_time(self, channel: str) -> int | None: ...

    async def history(self, channel: str, start_ms: int | None, end_ms: int | None) -> Any: ...

    def subscribe(self, channel: str, callback: Callable[[str, Chunk, list[FieldDef]], None],
                  after: Any) -> Callable[[], None]: ...


Notify = Callable[[Callable[[str], bool], str, str], object]
"""``notify(concerns, level, text)``: a notice to every subscription whose channel ``concerns``."""


@dataclass(slots=True)
class _Remote:
    """A source's status as the status channel last said."""

    up: bool | None = None
    state: str = "unknown"
    at_ms: int = 0
    values: dict[str, Any] | None = None


class Sources:
    """Every configured source of this server, and what the cluster says of each."""

    def __init__(self, specs: Iterable[SourceSpec], sink: Sink, broker: StatusBroker, owner: str,
                 notify: Notify | None = None, lease_ttl_s: float = LEASE_TTL_S,
                 status_every_s: float = STATUS_EVERY_S) -> None:
        self.specs = list(specs)
        self.sink = sink
        self.broker = broker
        self.owner = owner
        self.notify = notify
        self.lease_ttl_s = lease_ttl_s
        self.status_every_s = status_every_s
        self.running: dict[str, Source] = {}
        self._probes: dict[str, Source] = {s.name: self._make(s) for s in self.specs}
        """One idle Source per spec: what a channel belongs to (claims) before it runs here."""
        self.remote: dict[str, _Remote] = {s.name: _Remote() for s in self.specs}
        self._changed: dict[str, asyncio.Event] = {s.name: asyncio.Event() for s in self.specs}
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubs: list[Callable[[], None]] = []
        self._counted: dict[str, tuple[int, dict[str, int]]] = {}

    def __len__(self) -> int:
        return len(self.specs)

    def _make(self, spec: SourceSpec, on_state: Callable[[Source], None] | None = None) -> Source:
        if isinstance(spec, MqttSpec):
            return MqttSource(spec, self.sink, on_state)
        assert isinstance(spec, StreamSpec)
        return StreamSource(spec, self.sink, on_state, last_time=self.broker.last_time)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for spec in self.specs:
            channel = STATUS_PREFIX + spec.name
            self._unsubs.append(self.broker.subscribe(channel, self._on_status, None))
            with contextlib.suppress(Exception):
                last = await self.broker.last_time(channel)
                if last is not None:
                    for chunk in (await self.broker.history(channel, last, last)).chunks:
                        self._on_status(channel, chunk, [])
            self._tasks.append(loop.create_task(self._hold(spec), name=f"sources:lease:{spec.name}"))

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        running = list(self.running.values())
        self.running.clear()
        for src in running:
            await src.stop()
            await self._report(src)

    async def _hold(self, spec: SourceSpec) -> None:
        """Run ``spec`` while this server holds its lease; report its status meanwhile."""
        name = spec.name
        period = self.lease_ttl_s / 3
        loop = asyncio.get_running_loop()
        confirmed = loop.time()
        next_report = 0.0
        while True:
            try:
                held = await self.broker.lease("source:" + name, self.owner, self.lease_ttl_s)
                if held:
                    confirmed = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Without the broker nobody can store the source's points; after the lease's time
                # another server may run it, so stop here then (the MQTT broker keeps the messages).
                held = loop.time() - confirmed < self.lease_ttl_s
                log.debug("source %s: cannot renew its lease: %s", name, exc)
            src = self.running.get(name)
            if held and src is None:
                src = self.running[name] = self._make(spec, self._state_changed)
                src.status.server = self.owner
                src.start()
                log.info("source %s: running on this server", name)
            elif not held and src is not None:
                del self.running[name]
                await src.stop()
                log.info("source %s: another server runs it now", name)
            changed = self._changed[name]
            if src is not None and self.running.get(name) is src and (changed.is_set()
                                                                       or loop.time() >= next_report):
                changed.clear()
                next_report = loop.time() + self.status_every_s
                await self._report(src)
            with contextlib.suppress(TimeoutError):  # a state change reports at once
                async with asyncio.timeout(period):  # not wait_for: 3.11's can swallow a cancellation
                    await changed.wait()

    # --- status ---------------------------------------------------------------------------------------

    def _state_changed(self, src: Source) -> None:
        """A running source's state changed: its lease task reports it now (it owns the work)."""
        changed = self._changed.get(src.name)
        if changed is not None:
            changed.set()

    async def _report(self, src: Source) -> None:
        st = src.status
        row: dict[str, Any] = {
            "up": st.state == "up", "state": st.state, "messages": st.messages,
            "errors": sum(st.errors.values()), "points": st.points, "last_message": st.last_message_ms,
            "server": st.server, "last_error": st.last_error,
        }
        cols: dict[str, Column] = {k: [v] for k, v in row.items() if v is not None}
        batch = Batch([wall_ms()], cols, {k: _STATUS_FIELDS[k] for k in cols})
        try:
            await self.broker.publish(STATUS_PREFIX + src.name, batch)
        except Exception as exc:  # the broker is down: the next report tells
            log.debug("source %s: status not stored: %s", src.name, exc)
            self._apply(src.name, row, wall_ms())  # this server's readers still hear of it

    def _on_status(self, channel: str, chunk: Chunk, new_fields: list[FieldDef]) -> None:
        name = channel[len(STATUS_PREFIX):]
        if name not in self.remote or not chunk.times:
            return
        i = len(chunk.times) - 1
        row = {k: value_at(col, i) for k, col in chunk.columns.items()}
        self._apply(name, row, chunk.times[i])

    def _apply(self, name: str, row: dict[str, Any], at_ms: int) -> None:
        rem = self.remote[name]
        if at_ms < rem.at_ms:
            return
        was = rem.up
        rem.at_ms = at_ms
        rem.values = row
        rem.state = str(row.get("state") or "unknown")
        # "connecting" and "standby" change nothing: a first connection is not an outage, and a
        # source that is down stays down while it tries again.
        up = {"up": True, "down": False}.get(rem.state, None if rem.state in ("stopped", "complete") else was)
        rem.up = up
        if self.notify is None or up is None or up == was:
            return
        probe = self._probes[name]
        if not up:
            why = row.get("last_error") or rem.state
            self.notify(probe.claims, "warning", f"source {name} is down ({why}); its channels get no new "
                        "points until it is back")
        elif was is False:
            self.notify(probe.claims, "info", f"source {name} is back")

    def source_of(self, channel: str) -> str | None:
        """The name of the source writing ``channel`` (its status channel too), if any."""
        if channel.startswith(STATUS_PREFIX):
            name = channel[len(STATUS_PREFIX):]
            return name if name in self._probes else None
        for name, src in self.running.items():
            if src.claims(channel):
                return name
        for name, probe in self._probes.items():
            if probe.claims(channel):
                return name
        return None

    def notice_for(self, channel: str) -> str | None:
        """The notice a new subscriber of ``channel`` gets while a source writing it is down."""
        now = wall_ms()
        for name, rem in self.remote.items():
            if rem.up is False and now - rem.at_ms < STALE_S * 1000 * 4 and self._probes[name].claims(channel):
                why = (rem.values or {}).get("last_error") or rem.state
                return f"source {name} is down ({why}); its channels get no new points until it is back"
        return None

    def statuses(self) -> list[dict[str, Any]]:
        """Every source as ``GET /api/sources`` shows it: this server's own, else the cluster's word."""
        out: list[dict[str, Any]] = []
        now = wall_ms()
        for spec in self.specs:
            src = self.running.get(spec.name)
            if src is not None:
                doc = src.status.to_json()
                doc["here"] = True
            else:
                rem = self.remote[spec.name]
                doc = SourceStatus(spec.name, spec.kind, spec.display_url, state="standby").to_json()
                doc["here"] = False
                vals = rem.values or {}
                if vals:
                    stale = now - rem.at_ms > STALE_S * 1000
                    doc.update(state="unknown" if stale else rem.state, since=rem.at_ms,
                               last_message=vals.get("last_message"), messages=int(vals.get("messages") or 0),
                               points=int(vals.get("points") or 0), error_count=int(vals.get("errors") or 0),
                               last_error=vals.get("last_error"), server=vals.get("server") or "")
                    doc["errors"] = {}
            doc["channel"] = spec.channel if isinstance(spec, StreamSpec) else spec.channel.text
            if isinstance(spec, MqttSpec):
                doc["topics"] = list(spec.topics)
            out.append(doc)
        return out

    def running_sources(self) -> list[Source]:
        return list(self.running.values())

    def collect(self) -> Iterator[Metric]:
        """Prometheus families for the sources running on this server (a custom collector)."""
        messages = CounterMetricFamily("livedata_source_messages", "Messages a source received", labels=["source"])
        errors = CounterMetricFamily("livedata_source_errors",
                                     "Messages or points a source could not store, by reason",
                                     labels=["source", "reason"])
        up = GaugeMetricFamily("livedata_source_up", "1 while a source is connected to its upstream, else 0 "
                               "(only on the server that runs it)", labels=["source"])
        for name, src in sorted(self.running.items()):
            st = src.status
            messages.add_metric([name], st.messages)
            for reason, n in sorted(st.errors.items()):
                errors.add_metric([name, reason], n)
            up.add_metric([name], 1.0 if st.state == "up" else 0.0)
        yield messages
        yield errors
        yield up


LeaseFn = Callable[[str, str, float], Awaitable[bool]]

__all__ = ["LEASE_TTL_S", "STATUS_PREFIX", "Notify", "Sources", "StatusBroker"]
