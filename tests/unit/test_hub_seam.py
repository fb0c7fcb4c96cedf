"""The hub's seam, in process: every point exactly once, in order, across subscribe/cut/resume.

The hub and the memory broker run on a real event loop but with no sockets: a recording sink
stands in for a connection. Each scenario runs twice: with a sink that only has ``send_data`` (the
hub's slow path for every packet) and with the real WebSocket sink on a fake transport, whose
``lane()`` puts subscribers on the fast path (one shared framed write). Hypothesis drives random
interleavings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedata.brokers.memory import MemoryBroker
from livedata.core.frames import Batch, FieldDef
from livedata.core.protocol import parse_subscribe
from livedata.delivery import FlowPolicy, Hub, Settings, Sink, Subscription
from livedata.server.conn import Conn
from livedata.server.sinks import WsSink

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
    flow: FlowPolicy = field(default_factory=lambda: FlowPolicy(1 << 20))

    def close_slow(self) -> None:
        self.open = False

    def take_messages(self) -> list[dict[str, Any]]:
        out, self.messages = self.messages, []
        return out

    def shut(self) -> None:
        self.open = False


class FakeTransport:
    """What the sinks use of an asyncio transport; ``queued`` plays the unsent bytes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.queued = 0
        self.closing = False
        self.dead = False

    def write(self, data: bytes) -> None:
        if self.dead:
            raise RuntimeError("unable to perform operation: the handler is closed")  # as uvloop does
        if not self.closing:
            self.out += data

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.write(part)

    def get_write_buffer_size(self) -> int:
        return self.queued

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.dead = True


class FramedSink(WsSink):
    """The real WebSocket sink on a :class:`FakeTransport`: subscribers take the fast path."""

    def __init__(self, cap: int = 1 << 20) -> None:
        self.transport = FakeTransport()
        super().__init__(Conn(self.transport, FlowPolicy(cap)))

    def take_messages(self) -> list[dict[str, Any]]:
        out, buf = [], self.transport.out
        while buf:
            assert buf[0] == 0x81, "one unfragmented text frame per message"
            n, at = buf[1], 2
            if n == 126:
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, at = int.from_bytes(buf[2:10], "big"), 10
            out.append(msgspec.json.decode(bytes(buf[at:at + n])))
            del buf[:at + n]
        return out

    def shut(self) -> None:
        self.conn.close("gone")
        self.transport.abort()


class ProbeSink(Sink, Protocol):
    def take_messages(self) -> list[dict[str, Any]]: ...

    def shut(self) -> None: ...


SINKS: dict[str, Callable[[], ProbeSink]] = {"send_data": RecordingSink, "lane": FramedSink, "lane-step1": FramedSink}
"""``lane-step1``: rounds let the loop run after every subscriber, so chunks join running rounds."""
STEP_SUBS = {"lane-step1": 1}


@dataclass
class Reader:
    """A client's view: points it got, the last position, and its order checks."""

    points: list[tuple[int, int]] = field(default_factory=list)
    position: str | None = None
    last_time: int | None = None
    schema_seen: bool = False

    def take(self, sink: ProbeSink) -> None:
        for m in sink.take_messages():
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


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.integers(-50, 50), min_size=1, max_size=5)),
        st.tuples(st.just("cut"), st.integers(0, 2)),
        st.tuples(st.just("resume"), st.integers(0, 2)),
        st.tuples(st.just("tick"), st.integers(0, 2)),
    ),
    max_size=40,
)


async def scenario(steps: list[tuple[str, Any]], interval: int, make_sink: Callable[[], ProbeSink],
                   settings: Settings) -> None:
    broker = MemoryBroker(retention_s=3600, retention_points=10**9, wall=lambda: 20.0)
    hub = Hub(broker, settings=settings)
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
    sinks: list[ProbeSink | None] = [None, None, None]
    subs: list[Subscription | None] = [None, None, None]

    def subscribe(i: int) -> None:
        msg: dict[str, Any] = {"type": "subscribe", "id": f"r{i}", "channel": "c", "interval": interval}
        if readers[i].position is None:
            msg["from"] = 0
        else:
            msg["since"] = readers[i].position
        sink = make_sink()
        sinks[i] = sink
        subs[i] = hub.subscribe(parse_subscribe(msg, 10**13), sink, lambda s: None)

    def cut(i: int) -> None:
        sink, sub = sinks[i], subs[i]
        if sink is None or sub is None:
            return
        readers[i].take(sink)
        sink.shut()
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


@pytest.mark.parametrize("sink", SINKS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_point_exactly_once_in_order_unbatched(sink: str, steps: list[tuple[str, Any]]) -> None:
    asyncio.run(scenario(steps, 0, SINKS[sink], Settings(step_subs=STEP_SUBS.get(sink, 500))))


@pytest.mark.parametrize("sink", SINKS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_point_exactly_once_in_order_batched(sink: str, steps: list[tuple[str, Any]]) -> None:
    asyncio.run(scenario(steps, 5, SINKS[sink], Settings(step_subs=STEP_SUBS.get(sink, 500))))


async def test_a_lagging_reader_gets_one_coalesced_packet_then_is_closed_past_the_cap() -> None:
    broker = MemoryBroker(wall=lambda: 20.0)
    hub = Hub(broker)
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
    slow.flow = FlowPolicy(100)
    for i in range(20):
        await broker.publish("c", Batch([10_010 + i], {"v": [i]}, V))
    assert not slow.open
    assert len([m for m in fast.messages if m["type"] == "data"]) == 27
    await hub.close()


def data_of(sink: ProbeSink) -> list[dict[str, Any]]:
    return [m for m in sink.take_messages() if m["type"] == "data"]


async def test_fast_path_falls_back_when_pressured_and_returns_when_drained() -> None:
    """The lane path: a pressured reader's packets are held and coalesced, a drained one rejoins
    the shared write, and a reader whose transport died under the hub costs the others nothing."""
    broker = MemoryBroker(wall=lambda: 20.0)
    hub = Hub(broker)
    slow, fast, dead = FramedSink(cap=1000), FramedSink(), FramedSink()
    subs = {}
    for sid, sink in (("s", slow), ("f", fast), ("d", dead)):
        subs[sid] = hub.subscribe(parse_subscribe({"type": "subscribe", "id": sid, "channel": "c"}, 10**13), sink,
                                  lambda s: None)
    await asyncio.sleep(0.01)
    await broker.publish("c", Batch([10_000], {"v": [0]}, V))
    feed = subs["f"].feed
    assert feed is not None
    assert {s.req.id for g in feed.groups.values() for s in g.members} == {"s", "f", "d"}
    assert not feed.cold
    assert len(data_of(fast)) == 2  # schema + 1
    assert len(data_of(slow)) == 2
    dead.transport.abort()  # closed under the hub (peer gone): write raises, as uvloop's does
    slow.transport.queued = 600  # more than half its cap: pressured
    for i in range(1, 4):
        await broker.publish("c", Batch([10_000 + i], {"v": [i]}, V))
    assert [m["frame"]["data"]["values"][1] for m in data_of(fast)] == [[1], [2], [3]]
    assert data_of(slow) == []
    assert subs["s"] in feed.cold and subs["s"].group is None
    slow.transport.queued = 0  # drained: one coalesced packet, then back on the fast path
    await broker.publish("c", Batch([10_004], {"v": [4]}, V))
    coalesced = data_of(slow)
    assert [m["frame"]["data"]["values"] for m in coalesced] == [[[10_001, 10_002, 10_003, 10_004], [1, 2, 3, 4]]]
    assert subs["s"].group is not None and subs["s"] not in feed.cold
    await broker.publish("c", Batch([10_005], {"v": [5]}, V))
    assert [m["frame"]["data"]["values"][1] for m in data_of(slow)] == [[5]]
    assert [m["frame"]["data"]["values"][1] for m in data_of(fast)] == [[4], [5]]
    assert fast.conn.bytes_out > 0 and slow.conn.bytes_out > 0
    # past the cap while pressured: closed as slow, its close frame is the last thing written
    slow.transport.queued = 2000
    for i in range(6, 200):
        await broker.publish("c", Batch([10_000 + i], {"v": [i]}, V))
    assert slow.conn.close_reason == "slow"
    hub.unsubscribe(subs["s"])
    hub.unsubscribe(subs["d"])
    assert {s.req.id for g in feed.groups.values() for s in g.members} == {"f"}
    assert not feed.cold
    assert len(data_of(fast)) == 194
    await hub.close()


async def test_a_round_lets_the_loop_run_and_takes_chunks_that_arrive_meanwhile() -> None:
    """Six readers, two per step: a chunk published while the round is under way goes to the four
    it has not reached in the same packet, and to the two it had passed in the next round."""
    broker = MemoryBroker(wall=lambda: 20.0)
    hub = Hub(broker, settings=Settings(step_subs=2))
    sinks = [FramedSink() for _ in range(6)]
    subs = [hub.subscribe(parse_subscribe({"type": "subscribe", "id": "A", "channel": "c"}, 10**13), s,
                          lambda s: None) for s in sinks]
    await asyncio.sleep(0.01)
    feed = subs[0].feed
    assert feed is not None and not feed.groups  # joined at the head: off the fast path until a chunk passes it
    await broker.publish("c", Batch([9_999], {"v": [-1]}, V))
    await asyncio.sleep(0.01)
    for s in sinks:
        s.take_messages()  # the schema packets and that first chunk
    assert len(feed.groups) == 1 and not feed.cold  # one carrier, one id: one framing for all six
    await broker.publish("c", Batch([10_000], {"v": [0]}, V))  # the round starts, reaches two, yields
    assert feed.rnd is not None
    await broker.publish("c", Batch([10_001], {"v": [1]}, V))  # arrives during the round
    await asyncio.sleep(0.01)
    packets = sorted(([m["frame"]["data"]["values"][0] for m in data_of(s)] for s in sinks), key=len)
    assert packets[:4] == [[[10_000, 10_001]]] * 4  # the four the round had not reached
    assert packets[4:] == [[[10_000], [10_001]]] * 2  # the two it had
    assert feed.rnd is None and feed.log == [] and feed.base == feed.head == 3
    await hub.close()


async def test_backfill_is_paged_and_paced_by_the_reader() -> None:
    """History comes a page at a time, in packets of a quarter of the connection's cap, each written
    only when the queue is back under it; a reader that takes nothing is closed as slow and was
    written one packet; late points stored out of order come marked late, never out of order."""
    broker = MemoryBroker(retention_points=10**9, wall=lambda: 20.0)
    sent = []
    for i in range(40):
        times = [100_000 + i * 1000 + k for k in range(1000)]
        sent += times
        await broker.publish("c", Batch(times, {"v": list(range(len(sent) - 1000, len(sent)))}, V))
    await broker.publish("c", Batch([99_000, 99_001], {"v": [-2, -1]}, V))  # late: older than all
    hub = Hub(broker, settings=Settings(history_page_bytes=64 << 10))
    cap = 64 << 10
    reader = FramedSink(cap=cap)
    hub.subscribe(parse_subscribe({"type": "subscribe", "id": "r", "channel": "c", "from": 0, "to": 10**9}, 10**13),
                  reader, lambda s: None)
    messages: list[dict[str, Any]] = []
    while not any(m["type"] == "complete" for m in messages):
        await asyncio.sleep(0.001)
        messages += reader.take_messages()
    data = [m for m in messages if m["type"] == "data"]
    biggest = max(len(msgspec.json.encode(m)) for m in data)
    assert biggest <= cap // 4 + 4096, f"a packet of {biggest} bytes"
    assert len(data) > 20
    on_time = [t for m in data if not m.get("late") for t in m["frame"]["data"]["values"][0]]
    late = [t for m in data if m.get("late") for t in m["frame"]["data"]["values"][0]]
    assert on_time == sorted(on_time) and sorted(on_time + late) == sorted([*sent, 99_000, 99_001])
    # Every packet is positioned: the ones before the last name the backfill (range and head), the
    # last one is the plain head (docs/protocol.md, "Positions").
    assert all(m.get("position") for m in data)
    assert all("~" in m["position"] for m in data[:-1] if m["frame"]["data"]["values"][0])
    assert "~" not in data[-1]["position"]
    # A reader that takes nothing: one packet, then it waits; closed as slow after the stall time.
    stalled = FramedSink(cap=cap)
    stalled.conn.flow = FlowPolicy(cap, stall_s=0.3)
    stalled.transport.queued = cap  # nothing it is written ever leaves the queue
    hub.subscribe(parse_subscribe({"type": "subscribe", "id": "s", "channel": "c", "from": 0}, 10**13), stalled,
                  lambda s: None)
    await asyncio.sleep(0.1)
    assert len(stalled.transport.out) <= 512  # the schema packet waits for room too
    await asyncio.sleep(0.5)
    assert stalled.conn.close_reason == "slow"
    await hub.close()


async def test_the_backfills_of_one_connection_take_turns() -> None:
    """100 subscriptions on one socket that stops reading: one page in flight, not 100."""
    from livedata.core.budget import Budget

    broker = MemoryBroker(retention_points=10**9, wall=lambda: 20.0)
    for i in range(20):
        await broker.publish("c", Batch([i * 1000 + k for k in range(1000)], {"v": [0] * 1000}, V))
    budget = Budget(64 << 20)
    hub = Hub(broker, settings=Settings(history_page_bytes=16 << 10), budget=budget)
    sink = FramedSink(cap=64 << 10)
    sink.transport.queued = 64 << 10
    for i in range(100):
        hub.subscribe(parse_subscribe({"type": "subscribe", "id": f"s{i}", "channel": "c", "from": 0}, 10**13),
                      sink, lambda s: None)
    await asyncio.sleep(0.2)
    page = (16 << 10) + 2 * (16 << 10)
    assert 0 < budget.used["backfill"] <= page - (16 << 10), budget.used
    assert len(hub.turns) == 1
    await hub.close()
    await asyncio.sleep(0.01)  # the cancelled backfills end
    assert budget.used["backfill"] == 0 and len(hub.turns) == 0
