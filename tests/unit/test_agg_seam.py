"""Aggregated subscriptions in process: backfill + live buckets + resumes equal the raw points
re-aggregated, whatever the interleaving (hypothesis), late points included.

Like ``test_hub_seam.py``: the hub and a memory broker on a real loop, recording sinks instead of
sockets. A reader keeps rows by time (a row replaces the row it has at that time, as the protocol
says) and its last position; readers are cut and resumed with ``since`` at random moments. At the
end each reader's rows must be exactly the M4 rows of every published point aggregated at the
subscription's width.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedata.brokers.memory import MemoryBroker
from livedata.core.frames import Batch, FieldDef
from livedata.core.protocol import parse_subscribe
from livedata.core.rollup import Tier, aggregate, choose_width, m4_rows
from livedata.delivery import Hub, Subscription
from tests.unit.test_hub_seam import RecordingSink

F = {"v": FieldDef.of("v", "number"), "s": FieldDef.of("s", "string")}
TIERS = (Tier(10, 10**12), Tier(50, 10**12))


class SlowBroker(MemoryBroker):
    """Reads that take a loop turn before and after, as a disk or Redis read does: points published
    meanwhile land before the read (in it) or after it (in the seam's gap)."""

    after_s = 0.0
    """The next read (only) takes this long to come back."""

    async def _back(self) -> None:
        delay, self.after_s = self.after_s, 0.0
        await asyncio.sleep(delay)

    async def rollups(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        out = await super().rollups(*args)
        await self._back()
        return out

    async def history(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        out = await super().history(*args)
        await self._back()
        return out

    async def read_after(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        out = await super().read_after(*args)
        await asyncio.sleep(0)
        return out


@dataclass
class BucketReader:
    rows: dict[int, Any] = field(default_factory=dict)
    position: str | None = None
    bucket_ms: int | None = None
    keys: list[str] = field(default_factory=list)

    def take(self, sink: RecordingSink) -> None:
        for m in sink.take_messages():
            assert m["type"] in ("data", "complete"), m
            if m["type"] != "data":
                continue
            assert m["bucket_ms"] > 0
            self.bucket_ms = m["bucket_ms"]
            frame = m["frame"]
            if "schema" in frame:
                self.keys = [f["name"] for f in frame["schema"]["fields"][1:]]
            times, *cols = frame["data"]["values"]
            for i, t in enumerate(times):
                self.rows[t] = tuple(c[i] for c in cols)
            if m.get("position"):
                self.position = m["position"]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.integers(-120, 40), min_size=1, max_size=6)),
        st.tuples(st.just("cut"), st.integers(0, 1)),
        st.tuples(st.just("resume"), st.integers(0, 1)),
        st.tuples(st.just("tick"), st.integers(0, 1)),
    ),
    max_size=30,
)


async def scenario(steps: list[tuple[str, Any]], resolution: int, interval: int, slow: bool) -> None:
    kind = SlowBroker if slow else MemoryBroker
    broker = kind(retention_s=3600, retention_points=10**9, wall=lambda: 20.0, tiers=TIERS)
    hub = Hub(broker)
    now = 10_000
    times_all: list[int] = []
    values_all: list[float] = []
    serial = 0

    async def publish(offsets: list[int]) -> None:
        nonlocal serial, now
        now += 17
        times = [now + o for o in offsets]
        values = [float((serial + i) * 7 % 23) for i in range(len(times))]
        serial += len(times)
        batch = Batch(times, {"v": values, "s": ["x"] * len(times)}, F).sorted()
        times_all.extend(batch.times)
        values_all.extend(batch.columns["v"])  # type: ignore[arg-type]
        await broker.publish("c", batch)

    await publish([0, 5])
    readers = [BucketReader() for _ in range(2)]
    sinks: list[RecordingSink | None] = [None, None]
    subs: list[Subscription | None] = [None, None]

    def subscribe(i: int) -> None:
        msg: dict[str, Any] = {"type": "subscribe", "id": f"r{i}", "channel": "c", "interval": interval,
                               "resolution_ms": resolution, "from": 0}
        if readers[i].position is not None:
            msg["since"] = readers[i].position
        sinks[i] = RecordingSink()
        subs[i] = hub.subscribe(parse_subscribe(msg, 10**13), sinks[i], lambda s: None)  # type: ignore[arg-type]

    def cut(i: int) -> None:
        sink, sub = sinks[i], subs[i]
        if sink is None or sub is None:
            return
        readers[i].take(sink)
        sink.shut()
        hub.unsubscribe(sub)
        sinks[i] = subs[i] = None

    for i in range(2):
        subscribe(i)
    for op, arg in steps:
        if op == "publish":
            await publish(arg)
        elif op == "cut":
            cut(arg)
        elif op == "resume" and sinks[arg] is None:
            subscribe(arg)
        await asyncio.sleep(0 if op != "tick" else 0.03)
    for i in range(2):
        if sinks[i] is None:
            subscribe(i)
    await asyncio.sleep(max(interval, 50) / 1000 * 2 + 0.05)  # the last send of every feed
    # the reference: every point, stable-sorted by time, aggregated at the subscription's width
    order = sorted(range(len(times_all)), key=times_all.__getitem__)
    times = [times_all[j] for j in order]
    width = choose_width(None, None, resolution)
    want_b = aggregate(times, {"v": [values_all[j] for j in order]}, ["v"], width)
    want_rows = m4_rows(want_b, ["v"])
    want = {t: (v,) for t, v in zip(want_rows.times, want_rows.columns["v"], strict=True)}
    for i in range(2):
        readers[i].take(sinks[i])  # type: ignore[arg-type]
        assert readers[i].keys == ["v"], "an aggregated frame has the numeric fields only"
        assert readers[i].bucket_ms == width
        assert readers[i].rows == want, f"reader {i}: its buckets differ from the raw points re-aggregated"
    await hub.close()
    await asyncio.sleep(0)


@pytest.mark.parametrize(("resolution", "interval", "slow"),
                         [(5, 0, False), (20, 0, True), (50, 60, False), (100, 0, True), (5, 0, True)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_buckets_equal_the_raw_points_reaggregated(resolution: int, interval: int, slow: bool,
                                                   steps: list[tuple[str, Any]]) -> None:
    asyncio.run(scenario(steps, resolution, interval, slow))


async def test_max_points_bounds_the_buckets_and_picks_a_tier() -> None:
    broker = MemoryBroker(retention_s=10**6, retention_points=10**9, tiers=TIERS)
    hub = Hub(broker)
    base = (int(time.time() * 1000) - 60_000) // 1000 * 1000  # tiers keep buckets within their retention
    await broker.publish("c", Batch(list(range(base, base + 10_000)), {"v": [float(i % 97) for i in range(10_000)]},
                                    {"v": F["v"]}))
    sink = RecordingSink()
    req = parse_subscribe({"type": "subscribe", "id": "A", "channel": "c", "from": base, "to": base + 9_999,
                           "max_points": 120}, 10**13)
    assert req.bucket_ms == 100  # 10 s / 120 = 83 ms -> 100 ms: the 50 ms tier regrouped by two
    done = asyncio.Event()
    hub.subscribe(req, sink, lambda s: done.set())
    await asyncio.wait_for(done.wait(), 5)
    reader = BucketReader()
    reader.take(sink)
    assert len(reader.rows) == 2 * 100 <= 2 * 120
    assert {v for row in reader.rows.values() for v in row} == {0.0, 96.0}  # every bucket spans 0..96
    await hub.close()


async def test_a_bucket_touched_during_the_backfill_reaches_a_reader_that_joins_after_the_feed_sent_it() -> None:
    broker = SlowBroker(retention_s=3600, retention_points=10**9, wall=lambda: 20.0, tiers=TIERS)
    hub = Hub(broker)
    await broker.publish("c", Batch([10_000], {"v": [1.0]}, {"v": F["v"]}))
    msg = {"type": "subscribe", "channel": "c", "resolution_ms": 50, "from": 0, "interval": 50}
    first, second = RecordingSink(), RecordingSink()
    hub.subscribe(parse_subscribe({**msg, "id": "a"}, 10**13), first, lambda s: None)
    await asyncio.sleep(0.1)
    broker.after_s = 0.3  # the second reader's backfill read is slow to come back
    hub.subscribe(parse_subscribe({**msg, "id": "b"}, 10**13), second, lambda s: None)
    await asyncio.sleep(0.05)
    await broker.publish("c", Batch([10_200], {"v": [5.0]}, {"v": F["v"]}))  # after the second one's head
    await asyncio.sleep(0.15)
    a = BucketReader()
    a.take(first)
    assert a.rows[10_200] == (5.0,), "the feed sent the new bucket before the second reader joined"
    await asyncio.sleep(0.4)
    b = BucketReader()
    b.take(second)
    assert b.rows == a.rows == {10_000: (1.0,), 10_025: (1.0,), 10_200: (5.0,), 10_225: (5.0,)}
    await hub.close()


async def test_raw_points_when_the_range_holds_fewer_than_max_points_or_nothing_to_aggregate() -> None:
    broker = MemoryBroker(retention_s=10**6, retention_points=10**9, tiers=TIERS)
    hub = Hub(broker)
    base = (int(time.time() * 1000) - 60_000) // 1000 * 1000
    await broker.publish("sparse", Batch([base + i * 1000 for i in range(50)], {"v": [float(i) for i in range(50)]},
                                         {"v": F["v"]}))
    await broker.publish("words", Batch([base, base + 1], {"s": ["a", "b"]}, {"s": F["s"]}))
    for channel, max_points, raw in (("sparse", 100, True), ("sparse", 20, False), ("words", 1, True)):
        sink = RecordingSink()
        done = asyncio.Event()
        req = parse_subscribe({"type": "subscribe", "id": "A", "channel": channel, "from": base - 1000,
                               "to": base + 60_000, "max_points": max_points}, 10**13)
        hub.subscribe(req, sink, lambda s, d=done: d.set())  # type: ignore[misc]
        await asyncio.wait_for(done.wait(), 5)
        data = [m for m in sink.messages if m["type"] == "data"]
        assert all(("bucket_ms" in m) != raw for m in data), (channel, max_points)
        rows = sum(len(m["frame"]["data"]["values"][0]) for m in data)
        buckets = len({(base + i * 1000) // 5000 for i in range(50)})  # 61 s / 20 -> 5 s buckets
        assert rows == ({"sparse": 50, "words": 2}[channel] if raw else 2 * buckets) and buckets <= 20
    await hub.close()
