"""The Broker contract, run on every broker (``broker`` is parametrized: memory, a real Redis, a data dir)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedata.brokers.base import ChannelLimitError, FieldLimitError
from livedata.core.frames import Batch, Chunk, FieldDef, Pos, SchemaError, Sparse, dense
from tests.conftest import BrokerMaker

V = FieldDef.of("v", "number")
NOW = int(time.time() * 1000)
_names = itertools.count()


def batch(times: list[int], values: list[Any] | None = None, **more: list[Any]) -> Batch:
    cols: dict[str, list[Any]] = {"v": values if values is not None else [float(t) for t in times]}
    fields = {"v": V}
    for key, col in more.items():
        cols[key] = col
        fields[key] = FieldDef.of(key, "string" if col and isinstance(col[0], str) else "number")
    return Batch(times, cols, fields)


def points(chunks: list[Chunk]) -> list[tuple[int, Any]]:
    return [(t, v) for c in chunks for t, v in zip(c.times, c.columns["v"], strict=True)]


async def until(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_publish_then_history_by_time_range(broker: Any) -> None:
    t = NOW
    p1 = await broker.publish("c", batch([t, t + 10, t + 20]))
    p2 = await broker.publish("c", batch([t + 30, t + 40]))
    assert p1 < p2 and p1.count == 3 and p2.count == 5
    h = await broker.history("c", None, None)
    assert points(h.chunks) == [(t + i * 10, float(t + i * 10)) for i in range(5)]
    assert h.head == p2 and h.sorted and h.epoch == broker.epoch_of("c") and h.fields == [V]
    h = await broker.history("c", t + 10, t + 30)
    assert [x for x, _ in points(h.chunks)] == [t + 10, t + 20, t + 30]
    assert h.head == p2
    assert (await broker.history("c", t + 41, None)).chunks == []
    assert (await broker.history("c", None, t - 1)).chunks == []
    missing = await broker.history("nope", None, None)
    assert missing.chunks == [] and missing.head is None


async def test_a_batch_is_sorted_on_publish(broker: Any) -> None:
    await broker.publish("c", batch([NOW + 3, NOW + 1, NOW + 2], [3.0, 1.0, 2.0], s=["c", "a", "b"]))
    (chunk,) = (await broker.history("c", None, None)).chunks
    assert chunk.times == [NOW + 1, NOW + 2, NOW + 3]
    assert chunk.columns == {"v": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]}


async def test_values_keep_their_types(broker: Any) -> None:
    fields = {"i": FieldDef.of("i", "number"), "b": FieldDef.of("b", "boolean"), "s": FieldDef.of("s", "string")}
    await broker.publish("c", Batch([NOW, NOW + 1], {"i": [1, 2.5], "b": [True, None], "s": ["x", "é"]}, fields))
    (chunk,) = (await broker.history("c", None, None)).chunks
    assert chunk.columns == {"i": [1, 2.5], "b": [True, None], "s": ["x", "é"]}
    assert type(chunk.columns["i"][0]) is int


async def test_late_batches_carry_hwm_and_are_found_by_time(broker: Any) -> None:
    t = NOW
    await broker.publish("c", batch([t + 100, t + 110]))
    await broker.publish("c", batch([t + 200]))
    late = await broker.publish("c", batch([t + 95, t + 105, t + 220]))  # two late points
    await broker.publish("c", batch([t + 300]))
    got: list[Chunk] = []
    h = await broker.history("c", None, None)
    got = h.chunks
    assert not h.sorted
    assert got[2].pos == late and got[2].hwm == t + 200 and got[2].late_split() == 2
    assert got[0].hwm is None and got[1].hwm == t + 110 and got[3].hwm == t + 220
    assert got[3].late_split() == 0
    # A time range before the newest point still finds the late points stored after it.
    h = await broker.history("c", t + 90, t + 150)
    assert sorted(x for x, _ in points(h.chunks)) == [t + 95, t + 100, t + 105, t + 110]
    assert not h.sorted
    h = await broker.history("c", t + 150, t + 250)
    assert sorted(x for x, _ in points(h.chunks)) == [t + 200, t + 220]
    assert await broker.last_time("c") == t + 300


async def test_in_order_history_is_sorted(broker: Any) -> None:
    for i in range(5):
        await broker.publish("c", batch([NOW + i * 10, NOW + i * 10 + 5]))
    h = await broker.history("c", NOW + 12, NOW + 31)
    assert h.sorted and [x for x, _ in points(h.chunks)] == [NOW + 15, NOW + 20, NOW + 25, NOW + 30]


async def test_history_pages_through_many_entries(broker: Any) -> None:
    for i in range(600):
        await broker.publish("c", batch([NOW + i]))
    h = await broker.history("c", NOW + 10, NOW + 589)
    assert [x for x, _ in points(h.chunks)] == list(range(NOW + 10, NOW + 590))
    after = await broker.read_after("c", h.epoch, h.chunks[0].pos)
    assert [x for x, _ in points(after.chunks)] == list(range(NOW + 11, NOW + 600))
    limited = await broker.read_after("c", h.epoch, h.chunks[0].pos, limit=300)
    assert len(limited.chunks) == 300 and limited.chunks[-1].times == [NOW + 310]


async def test_read_after_is_exact(broker: Any) -> None:
    positions = [await broker.publish("c", batch([NOW + i * 10, NOW + i * 10 + 1])) for i in range(6)]
    epoch = broker.epoch_of("c")
    assert epoch
    for i, pos in enumerate(positions):
        h = await broker.read_after("c", epoch, pos)
        assert h.lost is None and h.head == positions[-1] and h.epoch == epoch
        assert [c.pos for c in h.chunks] == positions[i + 1:]
        assert h.fields == [V]
    h = await broker.read_after("c", epoch, positions[1], limit=2)
    assert [c.pos for c in h.chunks] == positions[2:4]
    # The position a client got in a message parses back to the same Pos.
    assert positions[2].encode(epoch).endswith(f":{positions[2].a}-{positions[2].b}:{positions[2].count}")


async def test_read_after_counts_points_lost_beyond_retention(make_broker: BrokerMaker) -> None:
    b = await make_broker(retention_points=12, prefix=f"lost{next(_names)}:")
    positions = [await b.publish("c", batch([NOW + i * 10 + k for k in range(5)])) for i in range(10)]
    epoch = b.epoch_of("c")
    h = await b.read_after("c", epoch, positions[0])
    oldest = h.chunks[0]
    kept = sum(map(len, h.chunks))
    assert 12 <= kept < 12 + 5
    assert h.lost == oldest.count_before - positions[0].count > 0
    assert h.chunks[-1].pos == positions[-1]
    assert [x for x, _ in points(h.chunks)][-kept:] == [NOW + i * 10 + k for i in range(10) for k in range(5)][-kept:]
    assert (await b.read_after("c", epoch, Pos(0, 0, 0))).lost == oldest.count_before
    assert (await b.read_after("c", epoch, positions[-2])).lost is None
    # Another epoch: everything retained, lost unknown.
    other = await b.read_after("c", "zzz", positions[-2])
    assert other.lost == -1 and other.chunks[-1].pos == positions[-1] and sum(map(len, other.chunks)) == kept
    assert (await b.read_after("missing", "zzz", positions[0])).lost == -1


async def test_delete_and_recreate_changes_the_epoch(broker: Any) -> None:
    pos = await broker.publish("c", batch([NOW]))
    epoch = broker.epoch_of("c")
    assert await broker.delete("c")
    assert not await broker.delete("c")
    assert await broker.fields("c") is None
    assert await broker.last_time("c") is None
    assert "c" not in [i.name for i in await broker.channels()]
    gone = await broker.history("c", None, None)
    assert gone.chunks == [] and gone.head is None
    await broker.publish("c", batch([NOW + 1]))
    assert broker.epoch_of("c") != epoch
    h = await broker.read_after("c", epoch or "", pos)
    assert h.lost == -1 and [x for x, _ in points(h.chunks)] == [NOW + 1]


async def test_subscribe_gets_chunks_in_log_order_with_new_fields(broker: Any) -> None:
    got: list[tuple[str, Chunk, list[FieldDef]]] = []
    unsubscribe = broker.subscribe("c", lambda ch, c, new: got.append((ch, c, new)), None)
    await asyncio.sleep(0.05)
    w = FieldDef.of("w", "number", {"host": "a"})
    expected = [
        await broker.publish("c", batch([NOW + 10, NOW + 20])),
        await broker.publish("c", Batch([NOW + 30], {"v": [1.0], w.key: [2.0]}, {"v": V, w.key: w})),
        await broker.publish("c", batch([NOW + 5])),  # late
        await broker.publish("c", batch([NOW + 40])),
    ]
    await until(lambda: len(got) == 4)
    assert [c.pos for _, c, _ in got] == expected
    assert [new for _, _, new in got] == [[V], [w], [], []]
    assert {ch for ch, _, _ in got} == {"c"}
    assert got[2][1].hwm == NOW + 30 and got[2][1].late_split() == 1
    assert got[1][1].columns[w.key] == [2.0]
    unsubscribe()
    await broker.publish("c", batch([NOW + 50]))
    await asyncio.sleep(0.05)
    assert len(got) == 4
    unsubscribe()  # idempotent


async def test_subscribers_of_two_channels_and_two_callbacks(broker: Any) -> None:
    a: list[int] = []
    b: list[int] = []
    a2: list[int] = []
    broker.subscribe("a", lambda ch, c, new: a.extend(c.times), None)
    broker.subscribe("b", lambda ch, c, new: b.extend(c.times), None)
    # A history read after subscribing fixes where live delivery starts (the Broker contract):
    # a sleep here was a guess that a loaded machine could lose (Redis: the reader's first XREAD).
    await broker.history("a", None, None)
    await broker.history("b", None, None)
    for i in range(20):
        await broker.publish("a" if i % 2 else "b", batch([NOW + i]))
        if i == 10:
            broker.subscribe("a", lambda ch, c, new: a2.extend(c.times), None)
            await asyncio.sleep(0.05)
    await until(lambda: len(a) == 10 and len(b) == 10 and len(a2) >= 4)
    assert a == [NOW + i for i in range(1, 20, 2)]
    assert b == [NOW + i for i in range(0, 20, 2)]
    assert a2 == a[-len(a2):]


async def test_a_subscriber_that_raises_costs_the_others_nothing(broker: Any) -> None:
    """Shared subscriber bookkeeping (``brokers.base.Subscribers``): a callback that raises is
    logged, the other callbacks still get every chunk, and the publish still succeeds."""
    got: list[int] = []

    def bad(ch: str, c: Chunk, new: list[FieldDef]) -> None:
        raise RuntimeError("a subscriber bug")

    broker.subscribe("raise", bad, None)
    unsubscribe = broker.subscribe("raise", lambda ch, c, new: got.extend(c.times), None)
    await asyncio.sleep(0.05)
    for i in range(3):
        await broker.publish("raise", batch([NOW + i]))
    await until(lambda: len(got) == 3)
    assert got == [NOW, NOW + 1, NOW + 2]
    unsubscribe()
    unsubscribe()  # idempotent
    await broker.publish("raise", batch([NOW + 3]))
    await asyncio.sleep(0.05)
    assert got == [NOW, NOW + 1, NOW + 2]


async def test_history_after_subscribe_meets_live_without_gap(broker: Any) -> None:
    """The hub's seam: subscribe, read history to head H, then chunks after H come live."""
    for i in range(3):
        await broker.publish("c", batch([NOW + i]))
    live: list[Chunk] = []
    broker.subscribe("c", lambda ch, c, new: live.append(c), None)
    writer = asyncio.ensure_future(asyncio.gather(*(broker.publish("c", batch([NOW + 10 + i])) for i in range(20))))
    h = await broker.history("c", None, None)
    await writer
    await until(lambda: bool(live) and live[-1].pos.count == 23)
    after = [c for c in live if h.head is None or c.pos > h.head]
    times = [x for x, _ in points(h.chunks)] + [x for x, _ in points(after)]
    assert sorted(times) == [NOW + i for i in range(3)] + [NOW + 10 + i for i in range(20)]
    assert len(times) == 23


async def test_schema_conflict_stores_nothing(broker: Any) -> None:
    await broker.publish("c", batch([NOW], w=[1.0]))
    before = await broker.history("c", None, None)
    with pytest.raises(SchemaError) as err:
        await broker.publish("c", Batch([NOW + 1], {"v": [1.0], "new": [2.0], "w": ["x"]},
                                        {"v": V, "new": FieldDef.of("new", "number"), "w": FieldDef.of("w", "string")}))
    assert err.value.field == "w" and "number" in str(err.value) and "string" in str(err.value)
    after = await broker.history("c", None, None)
    assert points(after.chunks) == points(before.chunks) and after.head == before.head
    assert [f.key for f in await broker.fields("c")] == ["v", "w"]
    assert await broker.last_time("c") == NOW
    pos = await broker.publish("c", batch([NOW + 2], w=[3.0]))
    assert pos.count == 2


async def test_fields_keep_order_type_and_labels(broker: Any) -> None:
    a = FieldDef.of("temp", "number", {"room": "kitchen", "floor": "1"})
    b = FieldDef.of("temp", "number", {"room": "hall"})
    s = FieldDef.of("state", "string")
    await broker.publish("c", Batch([NOW], {a.key: [1.0]}, {a.key: a}))
    await broker.publish("c", Batch([NOW + 1], {s.key: ["on"], b.key: [2.0], a.key: [3.0]},
                                    {s.key: s, b.key: b, a.key: a}))
    assert await broker.fields("c") == [a, s, b]
    assert a.key == 'temp {floor="1",room="kitchen"}' and a.labels == (("floor", "1"), ("room", "kitchen"))
    assert await broker.fields("none") is None


async def test_empty_batch_creates_the_channel_with_its_schema(broker: Any) -> None:
    pos = await broker.publish("c", Batch([], {"v": []}, {"v": V}))
    assert pos == Pos(0, 0, 0)
    assert await broker.fields("c") == [V]
    assert await broker.last_time("c") is None
    h = await broker.history("c", None, None)
    assert h.chunks == [] and h.head is None and h.epoch
    assert [i.name for i in await broker.channels()] == ["c"]


async def test_retention_by_age(make_broker: BrokerMaker) -> None:
    clock = [NOW / 1000]
    b = await make_broker(retention_s=10, wall=lambda: clock[0], prefix=f"age{next(_names)}:")
    await b.publish("c", batch([NOW - 30_000, NOW - 25_000]))
    await b.publish("c", batch([NOW - 15_000, NOW - 5_000]))  # straddles the cutoff: stored whole ...
    await b.publish("c", batch([NOW - 1000]))
    assert (await b.channels())[0].points == 3
    h = await b.history("c", None, None)
    assert [x for x, _ in points(h.chunks)] == [NOW - 5_000, NOW - 1000]  # ... served from the cutoff
    clock[0] += 60
    await b.publish("c", batch([NOW + 2000]))  # everything else is older than 10 s now
    assert (await b.channels())[0].points == 1  # trimmed from storage but the newest batch
    h = await b.history("c", None, None)
    assert points(h.chunks) == [], "NOW + 2000 is 58 s old by the clock: beyond retention, not served"
    clock[0] = (NOW + 5000) / 1000
    h = await b.history("c", None, None)
    assert [x for x, _ in points(h.chunks)] == [NOW + 2000]
    clock[0] += 3600
    await b.publish("c", batch([NOW + 3000]))  # the newest batch is kept even when old ...
    assert (await b.channels())[0].points == 1
    h = await b.history("c", NOW, None)
    assert points(h.chunks) == [], "... but not served: retention is by point time"


async def test_old_points_are_not_served_beyond_retention(make_broker: BrokerMaker) -> None:
    """Points dated a year ago, pushed now: no read returns them, however the range is asked."""
    b = await make_broker(retention_s=3600, prefix=f"old{next(_names)}:")
    year_ago = NOW - 365 * 86_400_000
    await b.publish("c", batch([year_ago, year_ago + 1000]))
    assert (await b.history("c", None, None)).chunks == []
    assert (await b.history("c", 0, None)).chunks == []
    assert (await b.history("c", year_ago - 1, year_ago + 5000)).chunks == []
    await b.publish("c", batch([NOW]))
    assert [x for x, _ in points((await b.history("c", 0, None)).chunks)] == [NOW]


async def test_retention_by_count(make_broker: BrokerMaker) -> None:
    b = await make_broker(retention_points=12, prefix=f"count{next(_names)}:")
    sent = []
    for i in range(10):
        times = [NOW + i * 10 + k for k in range(5)]
        sent += times
        await b.publish("c", batch(times))
    h = await b.history("c", None, None)
    kept = [x for x, _ in points(h.chunks)]
    assert 12 <= len(kept) < 12 + 5, "at least the retention, at most one batch more"
    assert kept == sent[-len(kept):]
    (info,) = await b.channels()
    assert info.points == len(kept) and info.last_time == sent[-1]


async def test_channel_limit(make_broker: BrokerMaker) -> None:
    b = await make_broker(max_channels=2, prefix=f"lim{next(_names)}:")
    await b.publish("a", batch([NOW]))
    await b.publish("b", batch([NOW]))
    with pytest.raises(ChannelLimitError, match="limit is 2"):
        await b.publish("c", batch([NOW]))
    assert await b.fields("c") is None
    assert sorted(i.name for i in await b.channels()) == ["a", "b"]
    await b.publish("a", batch([NOW + 1]))  # existing channels still take points
    await b.delete("b")
    await b.publish("c", batch([NOW]))


async def test_generated_channels_do_not_count_in_the_channel_limit(make_broker: BrokerMaker) -> None:
    b = await make_broker(max_channels=1, prefix=f"glim{next(_names)}:")
    for name in ("random-walk", "random-walk/series=3", "sine/period=500"):
        await b.publish(name, batch([NOW]))
    assert await b.channel_count() == 0
    await b.publish("a", batch([NOW]))
    assert await b.channel_count() == 1
    with pytest.raises(ChannelLimitError):
        await b.publish("b", batch([NOW]))
    await b.delete("random-walk")
    await b.delete("a")
    assert await b.channel_count() == 0
    await b.publish("b", batch([NOW]))


async def test_field_limit_stores_nothing(make_broker: BrokerMaker) -> None:
    b = await make_broker(max_fields=3, prefix=f"flim{next(_names)}:")
    await b.publish("c", batch([NOW], a=[1.0]))  # v and a
    with pytest.raises(FieldLimitError, match="has 2 fields and this push adds 2: the limit is 3") as err:
        await b.publish("c", batch([NOW + 1], x=[1.0], y=[2.0]))
    assert err.value.field == "y"
    assert [f.key for f in await b.fields("c")] == ["v", "a"]
    assert len(points((await b.history("c", None, None)).chunks)) == 1
    await b.publish("c", batch([NOW + 2], a=[3.0], x=[1.0]))  # one more is fine, known ones too
    with pytest.raises(FieldLimitError):
        await b.publish("d", batch([NOW], a=[1.0], x=[1.0], y=[1.0]))  # a new channel, four at once
    assert await b.fields("d") is None


async def test_sparse_columns_round_trip(broker: Any) -> None:
    fields = {"a": FieldDef.of("a", "number"), "s": FieldDef.of("s", "string")}
    times = [NOW + i for i in range(100)]
    await broker.publish("c", Batch(times, {"a": Sparse(100, [3, 97], [1.5, 2]), "s": Sparse(100, [50], ["x"])},
                                    fields))
    (chunk,) = (await broker.history("c", None, None)).chunks
    assert chunk.times == times and chunk.cells == 3
    assert chunk.columns == {"a": Sparse(100, [3, 97], [1.5, 2]), "s": Sparse(100, [50], ["x"])}
    (part,) = (await broker.history("c", NOW + 40, NOW + 60)).chunks
    assert part.times == times[40:61] and dense(part.columns["s"]) == [None] * 10 + ["x"] + [None] * 10
    assert (await broker.channels())[0].points == 3


async def test_history_and_read_after_come_in_pages(broker: Any) -> None:
    sent = []
    for i in range(40):
        times = [NOW + i * 10 + k for k in range(5)]
        sent += times
        await broker.publish("c", batch(times))
    full = await broker.history("c", None, None)
    page = await broker.history("c", NOW + 3, None, max_bytes=1)  # one chunk a page
    got = []
    pages = 0
    while True:
        pages += 1
        assert page.head == full.head
        got += [x for x, _ in points(page.chunks)]
        if not page.more:
            break
        page = await broker.history("c", NOW + 3, None, after=page.chunks[-1].pos, until=full.head, max_bytes=1)
    assert got == [t for t in sent if t >= NOW + 3] and pages == 40
    # A page stops at ``until`` even when more was published since.
    head = full.head
    await broker.publish("c", batch([NOW + 1000]))
    last = await broker.history("c", None, None, after=full.chunks[-2].pos, until=head, max_bytes=1 << 20)
    assert [c.pos for c in last.chunks] == [head] and not last.more
    # read_after: pages of about max_bytes up to ``until``.
    epoch = broker.epoch_of("c")
    after = full.chunks[9].pos
    page = await broker.read_after("c", epoch, after, max_bytes=1, until=head)
    seen = []
    while True:
        seen += [c.pos for c in page.chunks]
        if not page.more:
            break
        page = await broker.read_after("c", epoch, page.chunks[-1].pos, max_bytes=1, until=head)
    assert seen == [c.pos for c in full.chunks[10:]]


async def test_retention_by_bytes(make_broker: BrokerMaker) -> None:
    b = await make_broker(retention_bytes=20_000, prefix=f"bytes{next(_names)}:")
    for i in range(50):
        await b.publish("c", batch([NOW + i], s=["x" * 1000]))
    h = await b.history("c", None, None)
    kept = len(points(h.chunks))
    if type(b).__name__ == "DiskBroker":  # history on disk: --retention-bytes bounds memory, not the data dir
        assert kept == 50, kept
    else:
        assert 5 <= kept <= 25, kept  # at most 20 kB (as each broker counts bytes), and the newest
    assert points(h.chunks)[-1][0] == NOW + 49


async def test_channels_listing(broker: Any) -> None:
    await broker.publish("x/one", batch([NOW - 10, NOW - 5]))
    await broker.publish("x/two", batch([NOW - 7], w=[1.0]))
    await broker.publish("x/two", batch([NOW - 2, NOW - 1]))
    infos = {i.name: i for i in await broker.channels()}
    assert set(infos) == {"x/one", "x/two"}
    assert infos["x/one"].points == 2 and infos["x/one"].last_time == NOW - 5
    assert infos["x/two"].points == 4 and infos["x/two"].last_time == NOW - 1  # values: 1 row x 2 + 2 rows x 1
    assert [f.key for f in infos["x/two"].fields] == ["v", "w"]
    assert 0.2 <= infos["x/two"].points_per_s <= 0.3  # 3 points within the last 10 s


async def test_last_time_counts_late_points_as_not_newer(broker: Any) -> None:
    assert await broker.last_time("c") is None
    await broker.publish("c", batch([NOW + 100]))
    await broker.publish("c", batch([NOW + 50]))
    assert await broker.last_time("c") == NOW + 100
    await broker.publish("c", batch([NOW + 150, NOW + 120]))
    assert await broker.last_time("c") == NOW + 150


async def test_lease(broker: Any) -> None:
    name = f"gen{next(_names)}"
    assert await broker.lease(name, "a", 0.3)
    assert await broker.lease(name, "a", 0.3)  # renew
    if type(broker).__name__ in ("MemoryBroker", "DiskBroker"):
        assert await broker.lease(name, "b", 0.3)  # one process (a data directory is locked): always ours
        return
    assert not await broker.lease(name, "b", 0.3)
    await asyncio.sleep(0.2)
    assert await broker.lease(name, "a", 0.3)  # renewed: still a's after the first ttl
    await asyncio.sleep(0.2)
    assert not await broker.lease(name, "b", 0.3)
    await asyncio.sleep(0.4)
    assert await broker.lease(name, "b", 0.3)  # a stopped renewing: b takes over
    assert not await broker.lease(name, "a", 0.3)


# --- every point exactly once, in order, across random publish/subscribe/resume ------------------


class Consumer:
    """What the hub does with a broker: subscribe, read up to a head, then take live chunks after it."""

    def __init__(self, broker: Any, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self.got: list[Chunk] = []
        self.epoch: str | None = None
        self.after: Pos | None = None
        self.unsubscribe: Callable[[], None] | None = None
        self.buffer: list[Chunk] | None = None

    def _live(self, channel: str, chunk: Chunk, new: list[FieldDef]) -> None:
        if self.buffer is not None:
            self.buffer.append(chunk)
        elif self.after is None or chunk.pos > self.after:
            self.epoch = self.epoch or self.broker.epoch_of(channel)  # as the hub's feed does
            self.got.append(chunk)
            self.after = chunk.pos

    async def connect(self) -> None:
        self.buffer = []
        self.unsubscribe = self.broker.subscribe(self.channel, self._live, None)
        if self.after is None:
            h = await self.broker.history(self.channel, None, None)
        else:
            h = await self.broker.read_after(self.channel, self.epoch or "", self.after)
            assert h.lost is None
        self.epoch = h.epoch or self.epoch
        self.got.extend(h.chunks)
        if h.head is not None:
            self.after = h.head
        buffered, self.buffer = self.buffer, None
        for c in buffered:
            self._live(self.channel, c, [])

    def disconnect(self) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None


steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.integers(-30, 30), min_size=1, max_size=4)),
        st.tuples(st.just("connect"), st.integers(0, 2)),
        st.tuples(st.just("disconnect"), st.integers(0, 2)),
        st.tuples(st.just("settle"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=steps)
async def test_every_point_exactly_once_in_order(broker: Any, steps: list[tuple[str, Any]]) -> None:
    channel = f"prop{next(_names)}"
    consumers = [Consumer(broker, channel) for _ in range(3)]
    published: list[Pos] = []
    now = NOW

    async def settle() -> None:
        head = published[-1] if published else None
        await until(lambda: all(c.unsubscribe is None or c.after == head for c in consumers))

    for op, arg in steps:
        if op == "publish":
            now += 100
            published.append(await broker.publish(channel, batch([now + o for o in arg])))
        elif op == "connect" and consumers[arg].unsubscribe is None:
            await consumers[arg].connect()
        elif op == "disconnect":
            consumers[arg].disconnect()
        elif op == "settle":
            await settle()
    for c in consumers:
        if c.unsubscribe is None:
            await c.connect()
    await settle()
    for c in consumers:
        c.disconnect()
        assert [x.pos for x in c.got] == published, "every chunk exactly once, in log order"


async def test_rollups_equal_the_raw_points_late_ones_included(broker: Any) -> None:
    import random

    from livedata.core.rollup import aggregate, regroup

    rng = random.Random(7)
    base = (NOW - 300_000) // 600_000 * 600_000  # a 10 min bucket start, within every tier's retention
    for i in range(40):
        n = rng.randint(1, 30)
        start = base + i * 4000 + rng.randint(-30_000, 2000)  # some batches reach back: late points
        times = sorted(start + rng.randint(0, 5000) for _ in range(n))
        vals = [rng.choice([None, rng.uniform(-5, 5), rng.randint(-9, 9)]) for _ in range(n)]
        if all(v is None for v in vals):
            vals[0] = 1.5
        await broker.publish("c", batch(times, vals, s=["x"] * n))
    h = await broker.history("c", None, None)
    pts = sorted(((t, k, v) for k, c in enumerate(h.chunks) for t, v in zip(c.times, c.columns["v"], strict=True)),
                 key=lambda p: (p[0], p[1]))
    times = [p[0] for p in pts]
    values = [p[2] for p in pts]
    for tier in broker.tiers:
        r = await broker.rollups("c", tier.width_ms, None, None)
        assert r.epoch == broker.epoch_of("c") and r.head == h.head
        want = aggregate(times, {"v": values}, ["v"], tier.width_ms)
        assert r.buckets.starts == want.starts, tier
        assert "s" not in r.buckets.aggs, "strings have no rollups"
        for got, exp in zip(r.buckets.aggs["v"], want.aggs["v"], strict=True):
            assert got is not None and exp is not None
            assert got[:1] + got[2:] == exp[:1] + exp[2:], tier
            assert abs(got[1] - exp[1]) < 1e-9
        if len(want.starts) >= 3:
            part = await broker.rollups("c", tier.width_ms, want.starts[1], want.starts[2])
            assert part.buckets.starts == want.starts[1:3]
    coarse = regroup((await broker.rollups("c", 1000, None, None)).buckets, 60_000)
    direct = (await broker.rollups("c", 60_000, None, None)).buckets
    assert coarse.starts == direct.starts
    for a, b in zip(coarse.aggs["v"], direct.aggs["v"], strict=True):
        assert a is not None and b is not None
        assert a[:1] + a[2:] == b[:1] + b[2:] and abs(a[1] - b[1]) < 1e-9
    assert (await broker.rollups("missing", 1000, None, None)).buckets.starts == []
    with pytest.raises(ValueError, match="no tier"):
        await broker.rollups("c", 1234, None, None)
