"""The memory budget (core/budget.py), sizes (core/sizes.py) and config sizes, pure."""

from __future__ import annotations

import sys

import pytest

from livedata.config import MIN_MEMORY, Config, ConfigError, default_max_connections, parse_size, show_size
from livedata.core import sizes
from livedata.core.budget import SHARES, STANDING, WORK_SHARE, Budget, Reservation
from livedata.core.frames import FieldDef, Sparse

MiB = 1 << 20


def test_parse_size_takes_bytes_and_suffixes() -> None:
    assert parse_size("1048576") == MiB
    assert parse_size("256MiB") == 256 * MiB
    assert parse_size("256 mib") == 256 * MiB
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("512KiB") == 512 << 10
    assert parse_size("64M") == 64 * MiB
    assert parse_size("100MB") == 100_000_000
    for bad in ("", "MiB", "12 apples", "-5", "1e9", "256MiBs"):
        with pytest.raises(ConfigError, match="not a size"):
            parse_size(bad)
    assert show_size(256 * MiB) == "256 MiB"
    assert show_size(3 << 29) == "1.5 GiB"


def test_config_reads_sizes_from_the_environment_and_checks_them() -> None:
    config = Config.load(env={"LIVEDATA_MAX_MEMORY": "256MiB", "LIVEDATA_RETENTION_BYTES": "8MiB",
                              "LIVEDATA_BUFFER_BYTES": "64KiB", "LIVEDATA_MAX_GENERATORS": "3"})
    assert (config.max_memory, config.retention_bytes, config.buffer_bytes) == (256 * MiB, 8 * MiB, 64 << 10)
    assert config.max_generators == 3
    with pytest.raises(ConfigError, match="LIVEDATA_MAX_MEMORY"):
        Config.load(env={"LIVEDATA_MAX_MEMORY": "lots"})
    with pytest.raises(ConfigError, match="at least 32 MiB"):
        Config(max_memory=MiB)
    with pytest.raises(ConfigError, match="max_fields_per_channel"):
        Config(max_fields_per_channel=0)


def test_default_connections_stay_below_the_descriptor_limit() -> None:
    for fds in (1024, 20_000, 1 << 20):
        n = default_max_connections(fds)
        assert 16 <= n < fds - 64 - 128  # the admission headroom and a reserve stay free


def test_work_is_refused_past_its_share_and_history_past_nothing() -> None:
    b = Budget(1000 * MiB)
    assert b.reserve("ingest", 200 * MiB)
    assert not b.reserve("ingest", 60 * MiB)  # ingest's share is a quarter
    assert b.refused["ingest"] == 1 and b.used["ingest"] == 200 * MiB
    assert b.reserve("queues", 250 * MiB)
    assert not b.reserve("schema", 60 * MiB)  # all work together: half the limit
    assert b.free("schema") == 50 * MiB
    b.release("ingest", 200 * MiB)
    assert b.reserve("schema", 60 * MiB)
    assert b.work == 310 * MiB
    assert b.add_history(600 * MiB) == 0  # history takes what the work leaves
    assert b.total == 910 * MiB


def test_work_that_needs_room_makes_history_trim() -> None:
    b = Budget(1000 * MiB)
    asked: list[int] = []
    b.on_history_over = asked.append
    b.add_history(900 * MiB)
    assert b.reserve("backfill", 100 * MiB) and asked == []
    assert b.reserve("held", 50 * MiB)
    assert len(asked) == 1 and asked[0] >= 50 * MiB  # plus the slack, so that trims are rare
    over = b.add_history(10 * MiB)
    assert over >= 10 * MiB + 50 * MiB


def test_measured_kinds_report_what_is_over_their_share() -> None:
    b = Budget(400 * MiB)
    assert b.measure("queues", 50 * MiB) == 0
    assert b.measure("queues", 130 * MiB) == 30 * MiB  # share: a quarter
    assert b.measure("queues", 10 * MiB) == 0 and b.work == 10 * MiB


def test_shares_add_up_to_more_than_the_work_but_each_is_within_it() -> None:
    assert all(0 < s <= WORK_SHARE for s in SHARES.values())
    assert sum(SHARES.values()) > WORK_SHARE
    assert sum(SHARES[k] for k in STANDING) <= WORK_SHARE - 1 / 8


@pytest.mark.parametrize("limit", [MIN_MEMORY, 64 * MiB, 256 * MiB, 8 << 30])
def test_full_channels_and_reorder_windows_leave_room_for_connections_and_pushes(limit: int) -> None:
    """At --max-memory 32MiB (the least the config takes) the 16 MiB of caches once filled the
    work's half: every connection was a 503. At 64 MiB, channels filling their share did the same
    (and made pushes 429 "retry in a moment" for good). The caches come off the top now, and what
    stays (schemas, held points) can never take the last eighth of the work's room."""
    b = Budget(limit, fixed=sizes.CACHES)
    assert b.snapshot()["caches"] == sizes.CACHES and b.total == sizes.CACHES
    for kind in STANDING:  # fill them in small steps, as channels and windows grow
        while b.reserve(kind, 4096):
            pass
    passing = b.work_limit - b.work
    assert passing >= (limit - sizes.CACHES) // 8
    assert b.reserve("connections", sizes.CONNECTION) and b.reserve("ingest", passing // 4)
    assert b.reserve("backfill", passing // 4)
    assert b.total <= b.limit and b.history_room >= (limit - sizes.CACHES) // 2
    with pytest.raises(ValueError, match="more than its fixed part"):
        Budget(sizes.CACHES, fixed=sizes.CACHES)


def test_a_reservation_returns_everything_once() -> None:
    b = Budget(100 * MiB)
    r = Reservation(b, "ingest")
    assert r.grow(10 * MiB) and r.grow(5 * MiB)
    assert not r.grow(20 * MiB) and r.n == 15 * MiB
    r.close()
    r.close()
    assert b.work == 0


def test_size_estimates_are_not_below_what_python_holds() -> None:
    times = [1_700_000_000_000 + i for i in range(1000)]
    floats = [i * 1.5 for i in range(1000)]
    strings = [f"value {i}" * 10 for i in range(1000)]
    fields = {"f": FieldDef.of("f", "number"), "s": FieldDef.of("s", "string")}
    real = (sys.getsizeof(times) + sum(map(sys.getsizeof, times)) + sys.getsizeof(floats)
            + sum(map(sys.getsizeof, floats)) + sys.getsizeof(strings) + sum(map(sys.getsizeof, strings)))
    est = sizes.chunk_bytes(times, {"f": floats, "s": strings}, fields)
    assert real <= est <= real * 1.5
    sparse = Sparse(100_000, [5, 50_000], [1.0, 2.0])
    assert sizes.column_bytes(sparse, "number") < 1000  # what it carries, not its rows


async def test_the_memory_broker_trims_the_biggest_channels_first_when_the_budget_needs_room() -> None:
    from livedata.brokers.memory import MemoryBroker
    from livedata.core.budget import BudgetError
    from livedata.core.frames import Batch

    budget = Budget(64 * MiB)
    broker = MemoryBroker(retention_points=10**9, budget=budget, wall=lambda: 1_700_000_000.0)
    fields = {"s": FieldDef.of("s", "string")}

    def push(channel: str, i: int, size: int) -> None:
        broker.publish_now(channel, Batch([1_700_000_000_000 + i], {"s": ["x" * size]}, fields))

    for i in range(10):
        push("small", i, 100)
    for i in range(400):
        push("big", i, 100_000)  # about 40 MB
    assert 35 * MiB < budget.history < 42 * MiB and broker.history_bytes == budget.history
    small = broker._channels["small"].bytes
    assert budget.reserve("ingest", 16 * MiB)  # the work may take its share: history makes room
    assert budget.reserve("queues", 14 * MiB)
    assert budget.total <= budget.limit
    assert broker._channels["small"].bytes == small, "the small channel keeps its history"
    assert broker._channels["big"].bytes <= 34 * MiB and broker.trimmed_for_room
    assert broker.history_bytes == budget.history
    # Deleting gives history and schema back.
    await broker.delete("big")
    await broker.delete("small")
    assert budget.history == 0 and budget.used["schema"] == 0
    # Schemas have their share: a channel that cannot be held is refused, nothing stored.
    tiny = Budget(32 * MiB)
    b2 = MemoryBroker(budget=tiny)
    many = {f"f{i}": FieldDef.of(f"f{i}" + "y" * 1000, "number") for i in range(5000)}
    with pytest.raises(BudgetError, match="memory budget for channels and fields"):
        b2.publish_now("w", Batch([1], {k: [1.0] for k in many}, many))
    assert await b2.fields("w") is None and tiny.used["schema"] == 0
