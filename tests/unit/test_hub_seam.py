"""The hub's seam, in process: every point exactly once, in order, across subscribe/cut/resume.

The hub and the memory broker run on a real event loop but with no sockets: a recording sink
stands in for a connection. Hypothesis drives random interleavings.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedata.brokers.memory import MemoryBroker
from livedata.core.frames import Batch, FieldDef
from livedata.core.protocol import parse_subscribe
from livedata.hub import Hub, Subscription
from livedata.server.metrics import Metrics

V = {"v": FieldDef.of("v", "number")}


@dataclass
class RecordingSink:
    messages: list[dict[str, Any]] = field(default_factory=list)
    open: bool = True

    def send(self, msg: bytes, position: str | None = None, force: bool = False) -> bool:
        if self.open:
            self.messages.append(msgspec.json.decode(msg))
        return self.open

    def send_data(self, prefix: bytes, body: bytes, position: str | None, force: bool = False) -> bool:
        return self.send(prefix + body)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    @property
    def is_open(self) -> bool:
        return self.open

    @property
    def idle(self) -> bool:
        return False

    pressured: bool = False
    cap: int = 1 << 20

    def close_slow(self) -> None:
        self.open = False


@dataclass
class Reader:
    """A client's view: points it got, the last position, and its order checks."""

    points: list[tuple[int, int]] = field(default_factory=list)
    position: str | None = None
    last_time: int | None = None
    schema_seen: bool = False

    def take(self, sink: RecordingSink) -> None:
        for m in sink.messages:
            if m["type"] != "data":
                continue
            frame = m["frame"]
            if "schema" in frame:
                self.schema_seen = True
            times, values = frame["data"]["values"]
            if not m.get("late"):
                for t in times:
                    assert self.last_time is None or t >= self.last_time, "on-time points went backwards"
                    self.last_time = t
            self.points.extend(zip(times, values, strict=True))
            if m.get("position"):
                self.position = m["position"]
        sink.messages.clear()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.integers(-50, 50), min_size=1, max_size=5)),
        st.tuples(st.just("cut"), st.integers(0, 2)),
        st.tuples(st.just("resume"), st.integers(0, 2)),
        st.tuples(st.just("tick"), st.integers(0, 2)),
    ),
    max_size=40,
)


async def scenario(steps: list[tuple[str, Any]], interval: int) -> None:
    broker = MemoryBroker(retention_s=3600, retention_points=10**9, wall=lambda: 20.0)
    hub = Hub(broker, Metrics(), heartbeat_s=3600)
    now = 10_000
    published: list[tuple[int, int]] = []
    serial = 0

    async def publish(offsets: list[int]) -> None:
        nonlocal serial, now
        now += 10
        times = [now + o for o in offsets]
        values = list(range(serial, serial + len(times)))
        serial += len(times)
        published.extend(zip(times, values, strict=True))
        await broker.publish("c", Batch(times, {"v": values}, V))

    await publish([0])  # history exists before anyone subscribes
    readers = [Reader() for _ in range(3)]
    sinks: list[RecordingSink | None] = [None, None, None]
    subs: list[Subscription | None] = [None, None, None]

    def subscribe(i: int) -> None:
        msg: dict[str, Any] = {"type": "subscribe", "id": f"r{i}", "channel": "c", "interval": interval}
        if readers[i].position is None:
            msg["from"] = 0
        else:
            msg["since"] = readers[i].position
        sink = RecordingSink()
        sinks[i] = sink
        subs[i] = hub.subscribe(parse_subscribe(msg, 10**13), sink, lambda s: None)

    def cut(i: int) -> None:
        sink, sub = sinks[i], subs[i]
        if sink is None or sub is None:
            return
        readers[i].take(sink)
        sink.open = False
        hub.unsubscribe(sub)
        sinks[i] = subs[i] = None

    for i in range(3):
        subscribe(i)
    for op, arg in steps:
        if op == "publish":
            await publish(arg)
        elif op == "cut":
            cut(arg)
        elif op == "resume" and sinks[arg] is None:
            subscribe(arg)
        await asyncio.sleep(0 if op != "tick" else interval / 1000 + 0.002)
    for i in range(3):
        if sinks[i] is None:
            subscribe(i)
    await asyncio.sleep(interval / 1000 * 2 + 0.01)  # let the last batch and any attach finish
    for i in range(3):
        readers[i].take(sinks[i])  # type: ignore[arg-type]
        assert readers[i].schema_seen
        got = sorted(readers[i].points, key=lambda p: p[1])
        assert got == sorted(published, key=lambda p: p[1]), f"reader {i}: not every point exactly once"
    await hub.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_point_exactly_once_in_order_unbatched(steps: list[tuple[str, Any]]) -> None:
    asyncio.run(scenario(steps, 0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_point_exactly_once_in_order_batched(steps: list[tuple[str, Any]]) -> None:
    asyncio.run(scenario(steps, 5))


async def test_a_lagging_reader_gets_one_coalesced_packet_then_is_closed_past_the_cap() -> None:
    broker = MemoryBroker(wall=lambda: 20.0)
    hub = Hub(broker, Metrics(), heartbeat_s=3600)
    slow, fast = RecordingSink(), RecordingSink()
    for sid, sink in (("s", slow), ("f", fast)):
        hub.subscribe(parse_subscribe({"type": "subscribe", "id": sid, "channel": "c"}, 10**13), sink, lambda s: None)
    await asyncio.sleep(0.01)
    slow.pressured = True
    for i in range(5):
        await broker.publish("c", Batch([10_000 + i], {"v": [i]}, V))
    assert len([m for m in fast.messages if m["type"] == "data"]) == 6  # schema + 5 live packets
    assert len([m for m in slow.messages if m["type"] == "data"]) == 1  # only the schema packet
    slow.pressured = False
    await broker.publish("c", Batch([10_005], {"v": [5]}, V))
    coalesced = [m for m in slow.messages if m["type"] == "data"][-1]
    assert coalesced["frame"]["data"]["values"] == [[10_000 + i for i in range(6)], list(range(6))]
    assert coalesced["position"] == fast.messages[-1]["position"]
    # past the cap: closed as slow
    slow.pressured = True
    slow.cap = 100
    for i in range(20):
        await broker.publish("c", Batch([10_010 + i], {"v": [i]}, V))
    assert not slow.open
    assert len([m for m in fast.messages if m["type"] == "data"]) == 27
    await hub.close()
