"""One slow-reader policy for every writer: the hub's fast and slow paths, the reference ticker and
``Conn.send_parts`` write, hold and close at the thresholds of the connection's ``FlowPolicy``."""

from __future__ import annotations

import asyncio
import random

import pytest

from livedata.delivery import FlowPolicy
from livedata.server.compat import ReferenceTicker
from livedata.server.conn import Conn
from livedata.server.sinks import NdjsonSink, SseSink, WsSink
from tests.unit.test_hub_seam import FakeTransport

CAP = 4096


def test_thresholds() -> None:
    flow = FlowPolicy(CAP)
    assert (flow.hold_above, flow.drain_below) == (CAP // 2, CAP // 4)
    assert not flow.holds_too_much(CAP // flow.bytes_per_value)
    assert flow.holds_too_much(CAP // flow.bytes_per_value + 1)
    with pytest.raises(AttributeError):
        flow.cap = 1  # type: ignore[misc]  # frozen: one policy cannot drift per writer


@pytest.mark.parametrize("sink_class", [WsSink, NdjsonSink, SseSink])
async def test_sinks_hold_and_close_where_the_policy_says(sink_class: type[WsSink]) -> None:
    transport = FakeTransport()
    sink = sink_class(Conn(transport, FlowPolicy(CAP)))
    conn, _queued, _write, hold_above, _framer = sink.lane()
    assert conn is sink.conn and hold_above == CAP // 2 and sink.flow is sink.conn.flow
    transport.queued = CAP // 2
    assert not sink.pressured
    transport.queued = CAP // 2 + 1
    assert sink.pressured
    assert sink.send(b'{"type":"x"}')  # still under the cap: written
    transport.queued = CAP + 1
    assert sink.send(b'{"type":"x"}', force=True)  # history may pass the cap
    assert not sink.send(b'{"type":"x"}')  # live data may not: closed as slow
    assert conn.close_reason == "slow"


async def test_backfill_drains_to_a_quarter_and_closes_a_reader_that_stalls() -> None:
    transport = FakeTransport()
    sink = WsSink(Conn(transport, FlowPolicy(CAP, stall_s=0.05)))
    transport.queued = CAP // 4
    await asyncio.wait_for(sink.drain(), 1)  # at the threshold: no wait
    transport.queued = CAP // 4 + 1
    await asyncio.wait_for(sink.drain(), 1)  # never drains, never moves: closed after stall_s
    assert sink.conn.close_reason == "slow"


async def test_the_reference_ticker_closes_above_the_cap_and_writes_below() -> None:
    ticker = ReferenceTicker(0.05, rng=random.Random(1), wall_ms=lambda: 1_000)
    ok, full = FakeTransport(), FakeTransport()
    conns = [Conn(ok, FlowPolicy(CAP)), Conn(full, FlowPolicy(CAP))]
    for conn in conns:
        ticker.add(conn, 2)
    ok.queued, full.queued = CAP, CAP + 1
    ticker.tick()
    assert ok.out and conns[0].bytes_out == len(ok.out) and not conns[0].close_reason
    assert not full.out and conns[1].close_reason == "slow"
    for conn in conns:
        ticker.remove(conn, 2)
    await ticker.stop()
