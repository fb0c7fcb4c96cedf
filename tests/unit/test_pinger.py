"""The server-wide WebSocket pinger's decisions, with explicit clocks (no sleeping)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from livedata.server.connections import PING_FRAME, Pinger

HB = 4.0


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.queued = 0

    def get_write_buffer_size(self) -> int:
        return self.queued

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


class FakeConn:
    """What the pinger reads of a WebSocket's ``Conn``."""

    def __init__(self, rx_at: float) -> None:
        self.rx_at = rx_at
        self.ping_at = 0.0
        self.close_reason = ""
        self.closed_with: list[str] = []
        self.transport = FakeTransport()
        self.peer = "p"
        self.ws = SimpleNamespace(closed=False)
        self.bytes_out = 0
        self.ping_sent = 0

    def close(self, reason: str) -> None:
        self.closed_with.append(reason)
        self.close_reason = self.close_reason or reason

    @property
    def conn(self) -> FakeConn:  # the tests below read ``s.conn.transport``
        return self


def fake_session(rx_at: float) -> Any:
    return FakeConn(rx_at)


def sweeps(pinger: Pinger, start: float, end: float) -> None:
    t = start
    while t <= end + 1e-9:
        pinger.sweep(t)
        t += HB / 4


def test_a_silent_peer_is_pinged_then_dropped_within_one_and_a_half_heartbeats() -> None:
    pinger = Pinger(HB, set())
    s = fake_session(rx_at=100.0)
    pinger.conns.add(s)
    sweeps(pinger, 100.0, 100.0 + 0.5 * HB)
    assert s.conn.transport.written == []  # not silent long enough yet
    sweeps(pinger, 100.0 + 0.75 * HB, 100.0 + HB)
    assert s.conn.transport.written == [PING_FRAME]  # one ping, not one per sweep
    assert not s.conn.transport.aborted
    sweeps(pinger, 100.0 + 1.25 * HB, 100.0 + 1.25 * HB)  # half a heartbeat after the ping
    assert s.conn.transport.aborted and s.closed_with == ["gone"]
    sweeps(pinger, 100.0 + 1.5 * HB, 100.0 + 3 * HB)
    assert s.closed_with == ["gone"]  # dropped once: a closed connection is not pinged or closed again
    assert s.conn.transport.written == [PING_FRAME]


def test_a_silent_peer_with_bytes_queued_for_it_is_dropped_as_slow() -> None:
    pinger = Pinger(HB, set())
    s = fake_session(rx_at=100.0)
    s.transport.queued = 70_000  # its pong waits behind what it does not read
    pinger.conns.add(s)
    sweeps(pinger, 100.0, 100.0 + 1.25 * HB)
    assert s.conn.transport.aborted and s.closed_with == ["slow"]


def test_a_peer_that_takes_what_is_written_to_it_is_kept_though_its_pong_is_late() -> None:
    pinger = Pinger(HB, set())
    s = fake_session(rx_at=100.0)
    s.transport.queued = 70_000
    pinger.conns.add(s)
    sweeps(pinger, 100.0, 100.0 + HB)  # pinged
    s.bytes_out += 200_000  # a backfill goes on; the kernel takes it: the peer reads
    sweeps(pinger, 100.0 + 1.25 * HB, 100.0 + 1.25 * HB)
    assert not s.conn.transport.aborted and s.closed_with == []
    sweeps(pinger, 100.0 + 1.5 * HB, 100.0 + 3.5 * HB)  # it stops taking anything: dropped
    assert s.conn.transport.aborted and s.closed_with == ["slow"]


def test_a_peer_that_answers_is_kept_and_pinged_again_later() -> None:
    pinger = Pinger(HB, set())
    s = fake_session(rx_at=0.0)
    pinger.conns.add(s)
    for t in (0.75 * HB, HB):
        pinger.sweep(t)
    assert s.conn.transport.written == [PING_FRAME]
    s.rx_at = HB + 0.1  # the pong
    for k in range(2, 6):  # silent again for 3/4 of a heartbeat at k = 4: a new ping, not yet due
        pinger.sweep(HB + k * HB / 4)
    assert not s.conn.transport.aborted
    assert s.conn.transport.written == [PING_FRAME, PING_FRAME]  # pinged again once silent again


def test_a_talking_peer_is_never_pinged_and_a_closing_one_is_left_alone() -> None:
    pinger = Pinger(HB, set())
    talking, closing = fake_session(rx_at=0.0), fake_session(rx_at=0.0)
    closing.ws.closed = True
    pinger.conns.update((talking, closing))
    t = 0.0
    for _ in range(40):
        t += HB / 4
        talking.rx_at = t - 0.01
        pinger.sweep(t)
    assert talking.conn.transport.written == [] and not talking.conn.transport.aborted
    assert closing.conn.transport.written == [] and not closing.conn.transport.aborted


def test_slices_cover_every_socket_once_per_quarter_heartbeat() -> None:
    pinger = Pinger(HB, set())
    many = [fake_session(rx_at=0.0) for _ in range(64)]
    pinger.conns.update(many)
    parts = Pinger.PARTS
    pinged_per_slice = []
    for part in range(parts):
        before = sum(len(s.conn.transport.written) for s in many)
        pinger.sweep(HB, part, parts)
        pinged_per_slice.append(sum(len(s.conn.transport.written) for s in many) - before)
    assert all(s.conn.transport.written == [PING_FRAME] for s in many)  # every socket, exactly once
    assert max(pinged_per_slice) < len(many)  # spread over the slices, not one burst
