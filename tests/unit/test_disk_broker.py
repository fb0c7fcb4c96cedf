"""The disk broker's own promises: a restart keeps epochs, positions, history and rollups;
compaction changes nothing a reader sees; a failed write stores nothing and numbering goes on
from what is on disk; one process per data directory.

(The Broker contract itself runs on the disk broker in ``tests/redis/test_broker_contract.py``.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from livedata.brokers.base import BrokerError, BrokerStartError, Key, KeyConflict
from livedata.brokers.disk import DiskBroker
from livedata.brokers.disk_store import Store
from livedata.core.frames import Batch, Chunk, FieldDef, SchemaError

V = FieldDef.of("v", "number")
S = FieldDef.of("s", "string")
NOW = int(time.time() * 1000) // 60_000 * 60_000 - 120_000


def batch(times: list[int], values: list[Any] | None = None) -> Batch:
    return Batch(times, {"v": values if values is not None else [t % 1000 / 10 for t in times]}, {"v": V})


def rows(chunks: list[Chunk]) -> list[tuple[int, Any, int]]:
    return [(t, v, c.pos.a) for c in chunks for t, v in zip(c.times, c.columns["v"], strict=True)]


async def test_a_restart_keeps_epochs_positions_history_schema_and_rollups(tmp_path: Path) -> None:
    b = DiskBroker(str(tmp_path))
    await b.start()
    positions = [await b.publish("c", batch([NOW + i * 100 + k for k in range(3)])) for i in range(20)]
    await b.publish("c", Batch([NOW + 5000], {"v": [1.0], "s": ["x"]}, {"v": V, "s": S}))
    await b.publish("c", batch([NOW + 50]))  # late
    epoch = b.epoch_of("c")
    before = await b.history("c", None, None)
    tiers = [await b.rollups("c", t.width_ms, None, None) for t in b.tiers]
    await b.close()

    b = DiskBroker(str(tmp_path))
    await b.start()
    assert b.epoch_of("c") == epoch
    after = await b.history("c", None, None)
    assert after.head == before.head and after.fields == before.fields == [V, S]
    assert rows(after.chunks) == rows(before.chunks) and not after.sorted
    assert [c.hwm for c in after.chunks] == [c.hwm for c in before.chunks]
    for pos in positions:
        h = await b.read_after("c", epoch or "", pos)
        assert h.lost is None and h.chunks[0].pos.a == pos.a + 1
    assert [await b.rollups("c", t.width_ms, None, None) for t in b.tiers] == tiers
    nxt = await b.publish("c", batch([NOW + 6000]))
    assert nxt.a == after.head.a + 1 and nxt.count == after.head.count + 1  # type: ignore[union-attr]
    assert await b.last_time("c") == NOW + 6000
    await b.close()


async def test_compaction_changes_nothing_a_reader_sees(tmp_path: Path) -> None:
    b = DiskBroker(str(tmp_path), retention_s=10**6, retention_points=10**9, compact_after_s=0.0)
    await b.start()
    positions = []
    for i in range(300):  # a generator-like channel: one row of ten series per publish
        t = NOW + i * 50
        fields = {f"s{k}": FieldDef.of(f"s{k}", "number") for k in range(10)}
        cols: dict[str, list[Any]] = {f"s{k}": [round(k * 10 + (i % 17) * 0.25, 6)] for k in range(10)}
        if i % 7 == 0:
            cols["s3"] = [None]
        positions.append(await b.publish("g", Batch([t], cols, fields)))
    before = await b.history("g", None, None)
    epoch = b.epoch_of("g") or ""
    afters = [await b.read_after("g", epoch, p) for p in positions[::37]]
    for _ in range(200):  # the writer compacts when idle
        sizes = await b.sizes()
        if not sizes.get("raw_hot_values"):
            break
        await asyncio.sleep(0.02)
    assert sizes.get("raw_hot_values", 0) == 0 and sizes["raw_columnar_values"] == 3000
    assert sizes["raw_columnar_bytes"] / 3000 < 1.0, "ten steady series compress well below a byte a value"
    now = await b.history("g", None, None)
    assert [(c.pos, c.times, c.columns, c.hwm) for c in now.chunks] == \
        [(c.pos, c.times, c.columns, c.hwm) for c in before.chunks]
    for p, old in zip(positions[::37], afters, strict=True):
        new = await b.read_after("g", epoch, p)
        assert [(c.pos, c.columns) for c in new.chunks] == [(c.pos, c.columns) for c in old.chunks]
    windowed = await b.history("g", NOW + 1000, NOW + 2000)
    assert [t for c in windowed.chunks for t in c.times] == list(range(NOW + 1000, NOW + 2001, 50))
    await b.close()


class FailingStore(Store):
    fail_next = False

    def w_group(self, ops: Any) -> dict[int, int]:
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        return super().w_group(ops)


async def test_a_failed_write_stores_nothing_and_numbering_goes_on_from_disk(tmp_path: Path) -> None:
    b = DiskBroker(str(tmp_path))
    failing = FailingStore(b.store.path, "interval", b.tiers, b.retention_ms, b.retention_points)
    b.store = failing
    await b.start()
    p1 = await b.publish("c", batch([NOW]))
    failing.fail_next = True
    with pytest.raises(BrokerError, match=r"cannot be written.*No space left.*nothing was stored"):
        await b.publish("c", Batch([NOW + 1], {"v": [1.0], "s": ["x"]}, {"v": V, "s": S}))
    assert await b.fields("c") == [V], "the field of the failed write is gone too"
    p2 = await b.publish("c", batch([NOW + 2]))
    assert (p2.a, p2.count) == (p1.a + 1, p1.count + 1)
    h = await b.history("c", None, None)
    assert [t for c in h.chunks for t in c.times] == [NOW, NOW + 2]
    await b.close()
    b = DiskBroker(str(tmp_path))
    await b.start()
    assert (await b.history("c", None, None)).head == p2
    await b.close()


async def test_held_points_and_keys_survive_a_restart_and_are_released_once(tmp_path: Path) -> None:
    b = DiskBroker(str(tmp_path))
    await b.start()
    await b.hold("c", Batch([NOW + 3, NOW + 1], {"v": [3.0, 1.0], "s": ["x", None]}, {"v": V, "s": S}), 60_000,
                 Key("h1", "d"))
    await b.publish("c", batch([NOW + 2]), Key("p1", "d"))
    held = b.held_bytes
    await b.close()  # not released: the 204 of the hold is on disk

    b = DiskBroker(str(tmp_path))
    await b.start()
    assert b.held_bytes == held > 0
    with pytest.raises(SchemaError):  # its fields are still reserved
        await b.publish("c", Batch([NOW + 4], {"s": [1.0]}, {"s": FieldDef.of("s", "number")}))
    again, other = Key("h1", "d"), Key("p1", "d")
    await b.hold("c", batch([NOW + 9]), 60_000, again)
    await b.publish("c", batch([NOW + 9]), other)
    assert again.replayed and other.replayed
    with pytest.raises(KeyConflict):
        await b.publish("c", batch([NOW + 9]), Key("p1", "other request"))
    assert await b.release(everything=True) is None
    assert await b.release(everything=True) is None
    assert b.held_bytes == 0
    h = await b.history("c", None, None)
    assert [t for c in h.chunks for t in c.times] == [NOW + 2, NOW + 1, NOW + 3]
    await b.close()

    b = DiskBroker(str(tmp_path))  # what was released is gone from the window on disk too
    await b.start()
    assert b.held_bytes == 0 and await b.release(everything=True) is None
    assert [t for c in (await b.history("c", None, None)).chunks for t in c.times] == [NOW + 2, NOW + 1, NOW + 3]
    await b.close()


async def test_a_failed_release_keeps_the_points_held(tmp_path: Path) -> None:
    b = DiskBroker(str(tmp_path))
    failing = FailingStore(b.store.path, "interval", b.tiers, b.retention_ms, b.retention_points)
    b.store = failing
    await b.start()
    await b.hold("c", batch([NOW + 1]), 0)
    failing.fail_next = True
    with pytest.raises(BrokerError):
        await b.release(everything=True)
    assert b.held_bytes > 0
    assert await b.release(everything=True) is None
    assert [t for c in (await b.history("c", None, None)).chunks for t in c.times] == [NOW + 1]
    await b.close()


async def test_one_process_per_data_directory(tmp_path: Path) -> None:
    a = DiskBroker(str(tmp_path))
    await a.start()
    b = DiskBroker(str(tmp_path))
    with pytest.raises(BrokerStartError, match="in use by another livedata"):
        await b.start()
    await a.close()
    await b.start()  # free again
    await b.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BrokerStartError, match="cannot use the data directory"):
        await DiskBroker(str(tmp_path / "file" / "sub")).start()
    with pytest.raises(ValueError, match="fsync"):
        DiskBroker(str(tmp_path), fsync="sometimes")


async def test_always_fsync_and_many_concurrent_publishes_group_into_few_commits(tmp_path: Path) -> None:
    b = DiskBroker(str(tmp_path), fsync="always")
    await b.start()
    got = await asyncio.gather(*(b.publish(f"c{i % 3}", batch([NOW + i])) for i in range(300)))
    assert sorted((p.a, p.count) for p in got if p) == sorted((i // 3 + 1, i // 3 + 1) for i in range(300))
    for i in range(3):
        h = await b.history(f"c{i}", None, None)
        assert [t for c in h.chunks for t in c.times] == [NOW + k for k in range(i, 300, 3)]
    await b.close()
