"""The batching pacer on simulated timelines: one loop, a steady source, flushes that take time."""

from __future__ import annotations

import itertools
import random

import pytest

from livedata.core.pacing import BOUNDARY_WAIT_S, Pacer


def simulate(period: float, interval: float, flush_s: float, ticks: int = 400, lead: float = 0.001,
             jitter: float = 0.0, seed: int = 1) -> list[tuple[float, list[float]]]:
    """A source stamping rows every ``period`` (published ``lead`` after their time, plus
    ``jitter``) and a feed batching at ``interval`` on one event loop, where each packet keeps
    the loop busy for ``flush_s``. Ties go to the packet's timer (the worst case for batching).
    Returns the packets as (start, row times)."""
    rng = random.Random(seed)
    pacer = Pacer(interval, min(0.2 * interval, 0.02))
    pending: list[float] = []
    packets: list[tuple[float, list[float]]] = []
    free = 0.0  # the loop is busy until then
    k = 0
    tick_at = lead
    while k < ticks or pending:
        if pacer.due <= tick_at or k >= ticks:
            now = max(pacer.due, free)
            pacer.fire(now)
            packets.append((now, pending))
            pending = []
            free = now + flush_s
        else:
            now = max(tick_at, free)
            pending.append(k * period)
            pacer.arrive(now)
            k += 1
            tick_at = k * period + lead + rng.uniform(0, jitter)
    return packets


@pytest.mark.parametrize("flush_s", [0.0005, 0.03, 0.06, 0.085])
def test_a_steady_source_gets_full_packets_in_phase_even_when_flushes_take_most_of_the_interval(
        flush_s: float) -> None:
    packets = simulate(0.05, 0.1, flush_s)[5:-1]
    assert [len(rows) for _, rows in packets] == [2] * len(packets), "every packet carries two rows"
    for start, rows in packets:
        # the newest row goes out as it is published (or, when it lands a hair before the
        # boundary, BOUNDARY_WAIT_S later); the oldest waited one source period
        assert 0.001 - 1e-9 <= start - rows[-1] <= 0.001 + BOUNDARY_WAIT_S + 1e-9
        assert start - rows[0] == pytest.approx(start - rows[-1] + 0.05, abs=1e-9)


def test_packets_are_at_least_the_interval_less_the_grace_apart() -> None:
    """The phase follows the source, so a source whose period does not divide the interval may
    see packets up to the grace (20 %, at most 20 ms) sooner than the interval; never more."""
    for period in (0.001, 0.013, 0.05, 0.099, 0.1, 0.15):
        for flush_s in (0.0, 0.02, 0.09):
            packets = simulate(period, 0.1, flush_s, ticks=int(20 / period) if period < 0.01 else 400,
                               jitter=0.004)
            starts = [s for s, _ in packets[:-1]]
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert min(gaps) >= 0.1 - 0.02 - 1e-9, (period, flush_s)  # the grace is the only slack
            assert len(starts) <= (starts[-1] - starts[0]) / (0.1 - 0.02) + 2


def test_jittery_source_stays_locked() -> None:
    packets = simulate(0.05, 0.1, 0.03, jitter=0.003)[5:-1]
    sizes = [len(rows) for _, rows in packets]
    assert sizes.count(2) >= 0.95 * len(sizes)
    oldest = sorted(start - rows[0] for start, rows in packets)
    assert oldest[len(oldest) * 99 // 100] <= 0.05 + 0.001 + 0.003 + BOUNDARY_WAIT_S + 1e-9


def test_a_slow_source_is_sent_as_it_arrives() -> None:
    packets = simulate(0.25, 0.1, 0.01)[1:]
    assert all(len(rows) == 1 and start - rows[0] == pytest.approx(0.001, abs=1e-9) for start, rows in packets)


def test_a_fast_source_is_batched_into_one_packet_per_interval() -> None:
    packets = simulate(0.01, 0.1, 0.005, ticks=2000)[3:-1]
    assert all(len(rows) == 10 for _, rows in packets)
    starts = [s for s, _ in packets]
    assert all(abs(b - a - 0.1) <= BOUNDARY_WAIT_S + 1e-9 for a, b in itertools.pairwise(starts))


def test_a_packet_that_goes_out_late_counts_the_next_interval_from_when_it_went() -> None:
    p = Pacer(0.1, 0.02)
    assert p.arrive(0.0) == 0.0
    p.fire(0.0)
    assert p.arrive(0.05) == pytest.approx(0.12)  # sooner: the fallback
    assert p.fire(0.5) == pytest.approx(0.38)  # the loop was stuck: 380 ms late
    assert p.last == 0.5
    assert p.arrive(0.55) == pytest.approx(0.62)
    p.disarm()
    assert p.due == float("inf")
