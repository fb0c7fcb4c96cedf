"""The Broker contract for writing exactly once, on every broker (memory and a real Redis):
idempotency keys decided with the write, reorder windows held in the broker and released once,
and positions that cut inside a chunk."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from livedata.brokers.base import FieldLimitError, HeldLimitError, Key, KeyConflict
from livedata.core.frames import Batch, FieldDef, Pos, SchemaError
from livedata.core.window import held_bytes
from tests.conftest import BrokerMaker
from tests.redis.test_broker_contract import NOW, V, batch, points

_names = itertools.count()


def key(name: str, digest: str = "d1") -> Key:
    return Key(name, digest)


async def test_a_key_stores_once_and_a_replay_changes_nothing(broker: Any) -> None:
    k = key("k1")
    p1 = await broker.publish("c", batch([NOW, NOW + 1]), k)
    assert not k.replayed and p1.count == 2
    again = key("k1")
    p2 = await broker.publish("c", batch([NOW + 5]), again)  # a retry re-parsed: other times, same request
    assert again.replayed and p2 == p1 and p2.count == 2
    h = await broker.history("c", None, None)
    assert [t for t, _ in points(h.chunks)] == [NOW, NOW + 1]


async def test_a_key_reused_for_another_request_is_refused_and_stores_nothing(broker: Any) -> None:
    await broker.publish("c", batch([NOW]), key("k", "first"))
    with pytest.raises(KeyConflict, match="already used on channel 'c' for a different request"):
        await broker.publish("c", batch([NOW + 1]), key("k", "second"))
    with pytest.raises(KeyConflict):
        await broker.hold("c", batch([NOW + 2]), 1000, key("k", "second"))
    assert [t for t, _ in points((await broker.history("c", None, None)).chunks)] == [NOW]
    assert await broker.release(everything=True) is None


async def test_keys_are_per_channel(broker: Any) -> None:
    await broker.publish("a", batch([NOW]), key("same", "x"))
    other = key("same", "y")
    await broker.publish("b", batch([NOW]), other)
    assert not other.replayed
    assert len((await broker.history("b", None, None)).chunks) == 1


async def test_a_refused_write_does_not_use_up_its_key(broker: Any) -> None:
    await broker.publish("c", batch([NOW], w=[1.0]))
    k = key("k")
    with pytest.raises(SchemaError):
        await broker.publish("c", batch([NOW + 1], w=["text"]), k)
    k2 = key("k")
    await broker.publish("c", batch([NOW + 1], w=[2.0]), k2)
    assert not k2.replayed and (await broker.history("c", None, None)).head.count == 2  # type: ignore[union-attr]


async def test_keys_expire_after_their_time_to_live(make_broker: BrokerMaker) -> None:
    b = await make_broker(key_ttl_s=0.3, prefix=f"ttl{next(_names)}:")
    await b.publish("c", batch([NOW]), key("k"))
    replay = key("k")
    await b.publish("c", batch([NOW]), replay)
    assert replay.replayed
    await asyncio.sleep(0.5)
    late = key("k")
    await b.publish("c", batch([NOW + 1]), late)
    assert not late.replayed and (await b.history("c", None, None)).head.count == 2


async def test_a_key_may_carry_its_own_time_to_live(broker: Any) -> None:
    """Sources' keys (livedata.sources.base.KEY_TTL_S) are kept shorter than pushes' keys."""
    await broker.publish("c", batch([NOW]), Key("short", "d", ttl_s=0.3))
    await broker.publish("c", batch([NOW + 1]), Key("long", "d"))
    await asyncio.sleep(0.6)
    short, long = Key("short", "d", ttl_s=0.3), Key("long", "d")
    await broker.publish("c", batch([NOW + 2]), short)
    await broker.publish("c", batch([NOW + 3]), long)
    assert not short.replayed and long.replayed
    assert [t for t, _ in points((await broker.history("c", None, None)).chunks)] == [NOW, NOW + 1, NOW + 2]


async def test_held_points_are_stored_and_published_when_due_exactly_once(broker: Any) -> None:
    now = int(time.time() * 1000)
    live: list[Any] = []
    broker.subscribe("c", lambda ch, c, new: live.append(c), None)
    await asyncio.sleep(0.05)
    await broker.publish("c", batch([NOW]))
    await broker.hold("c", batch([NOW + 30, NOW + 10]), 300, key("h1"))
    await broker.hold("c", batch([NOW + 20]), 5_000)
    assert [t for t, _ in points((await broker.history("c", None, None)).chunks)] == [NOW]
    nxt = await broker.release(now)
    assert nxt is not None and now + 250 <= nxt <= now + 400  # the first window is not due yet
    assert await broker.release(now + 1000) is None  # nothing left held
    # due: NOW+10 and NOW+30, and NOW+20 with them (older than the newest due point), one batch
    assert [t for t, _ in points((await broker.history("c", None, None)).chunks)] == [NOW, NOW + 10, NOW + 20, NOW + 30]
    h = await broker.history("c", None, None)
    assert len(h.chunks) == 2 and h.chunks[1].times == [NOW + 10, NOW + 20, NOW + 30]
    assert await broker.release(now + 10_000) is None  # nothing held: every later call is a no-op
    await asyncio.sleep(0.1)
    assert [c.times for c in live if c.times[0] > NOW] == [[NOW + 10, NOW + 20, NOW + 30]]
    replay = key("h1")
    await broker.hold("c", batch([NOW + 30, NOW + 10]), 300, replay)  # a retry of the held push
    assert replay.replayed and await broker.release(everything=True) is None


async def test_concurrent_releases_publish_once(make_broker: BrokerMaker, broker: Any) -> None:
    # Redis: the same keys, as another server; memory: its own process; disk: its own data
    # directory (one process per directory: it is locked), so the races are the same broker's
    other = await make_broker(**({"prefix": "other"} if type(broker).__name__ == "DiskBroker" else {}))
    for i in range(20):
        await broker.hold("c", batch([NOW + 20 - i]), 0)
    await asyncio.gather(*(b.release(everything=i % 2 == 0) for i, b in enumerate([broker, other] * 4)))
    h = await broker.history("c", None, None)
    assert sorted(t for t, _ in points(h.chunks)) == [NOW + 1 + i for i in range(20)]
    assert len(points(h.chunks)) == 20


async def test_held_fields_are_reserved(broker: Any) -> None:
    await broker.hold("c", batch([NOW], w=["text"]), 5_000)
    with pytest.raises(SchemaError):
        await broker.publish("c", batch([NOW + 1], w=[1.0]))
    with pytest.raises(SchemaError):
        await broker.hold("c", batch([NOW + 1], w=[1.0]), 5_000)
    await broker.publish("c", batch([NOW + 2], w=["fine"]))  # the same type goes in, and makes it part of the schema
    await broker.release(everything=True)
    assert [f.key for f in await broker.fields("c")] == ["v", "w"]
    assert [t for t, _ in points((await broker.history("c", None, None)).chunks)] == [NOW + 2, NOW]


async def test_a_new_field_of_held_points_reaches_subscribers_with_them(broker: Any) -> None:
    got: list[tuple[list[int], list[str]]] = []
    broker.subscribe("c", lambda ch, c, new: got.append((c.times, [f.key for f in new])), None)
    await asyncio.sleep(0.05)
    await broker.publish("c", batch([NOW]))
    await broker.hold("c", batch([NOW + 1], extra=[5.0]), 0)
    await broker.release()
    await asyncio.sleep(0.1)
    for _ in range(50):
        if len(got) == 2:
            break
        await asyncio.sleep(0.05)
    assert got[-1] == ([NOW + 1], ["extra"])


async def test_held_points_have_a_bound_in_bytes(make_broker: BrokerMaker) -> None:
    one = batch([NOW + i for i in range(100)])
    size = held_bytes(one)
    b = await make_broker(max_held_bytes=size * 2 + 10, prefix=f"bound{next(_names)}:")
    await b.hold("c", one, 60_000)
    await b.hold("c", batch([NOW + 1000 + i for i in range(100)]), 60_000)
    with pytest.raises(HeldLimitError, match="retry in a moment") as full:
        await b.hold("c", batch([NOW + 2000 + i for i in range(100)]), 60_000, key("k"))
    assert full.value.used == 2 * size and full.value.size == size
    with pytest.raises(HeldLimitError, match="more than the bound"):
        await b.hold("c", batch([NOW + i for i in range(300)]), 60_000)
    await b.release(everything=True)
    assert len(points((await b.history("c", None, None)).chunks)) == 200
    k = key("k")
    await b.hold("c", batch([NOW + 2000 + i for i in range(100)]), 0, k)  # room again; the refused key was not used
    assert not k.replayed


async def test_deleting_a_channel_drops_its_held_points_and_frees_their_room(make_broker: BrokerMaker) -> None:
    one = batch([NOW + i for i in range(100)])
    b = await make_broker(max_held_bytes=held_bytes(one) + 10, prefix=f"del{next(_names)}:")
    await b.hold("c", one, 60_000)
    assert await b.delete("c")
    assert await b.release(everything=True) is None
    await b.hold("d", one, 60_000)  # the room is back
    await b.release(everything=True)
    assert (await b.history("c", None, None)).chunks == []
    assert len(points((await b.history("d", None, None)).chunks)) == 100


async def test_read_after_a_position_inside_a_chunk_gets_the_rest_of_it(broker: Any) -> None:
    p1 = await broker.publish("c", batch([NOW + 3, NOW + 1, NOW + 2]))
    p2 = await broker.publish("c", batch([NOW + 4]))
    epoch = broker.epoch_of("c")
    inside = Pos(p1.a, p1.b, 1)  # the first point (in time order) of the first chunk was delivered
    h = await broker.read_after("c", epoch, inside)
    assert h.lost is None and [t for t, _ in points(h.chunks)] == [NOW + 2, NOW + 3, NOW + 4]
    assert [c.end for c in h.chunks] == [p1, p2] and h.chunks[0].count_before == 1
    h = await broker.read_after("c", epoch, Pos(p1.a, p1.b, 3))
    assert [t for t, _ in points(h.chunks)] == [NOW + 4]
    h = await broker.read_after("c", epoch, Pos(0, 0, 0))  # before everything
    assert len(points(h.chunks)) == 4 and h.lost is None


async def test_history_from_the_future_is_the_head_only(broker: Any) -> None:
    p = await broker.publish("c", batch([NOW]))
    h = await broker.history("c", 1 << 62, None)
    assert h.chunks == [] and h.head == p and h.fields == [V] and h.epoch == broker.epoch_of("c")


async def test_empty_hold_creates_the_channel(broker: Any) -> None:
    await broker.hold("c", Batch([], {"v": []}, {"v": V}), 100)
    assert await broker.fields("c") == [V]
    s = FieldDef.of("s", "string")
    await broker.hold("c", Batch([NOW], {"s": ["x"]}, {"s": s}), 0)
    await broker.release()
    assert [f.key for f in await broker.fields("c")] == ["v", "s"]


async def test_released_points_are_in_the_rollup_tiers(broker: Any) -> None:
    await broker.hold("c", batch([NOW + 2, NOW + 1], [5.0, 7.0]), 0)
    assert await broker.release() is None
    finest = broker.tiers[0].width_ms
    got = await broker.rollups("c", finest, NOW - finest, NOW + 10)
    assert sum(int(a[0]) for col in got.buckets.aggs.values() for a in col if a is not None) == 2


async def test_held_points_count_in_the_field_limit(make_broker: BrokerMaker) -> None:
    b = await make_broker(max_fields=2, prefix=f"fl{next(_names)}:")
    await b.hold("c", batch([NOW], w=[1.0]), 60_000)
    with pytest.raises(FieldLimitError):  # v and w are held: x would be a third field
        await b.publish("c", batch([NOW], x=[1.0]))
    await b.publish("c", batch([NOW], w=[2.0]))  # a held field may be published
    assert await b.release(everything=True) is None
