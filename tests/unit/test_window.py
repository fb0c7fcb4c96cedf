"""The reorder window's release rule (pure): what is due goes, with every held point not newer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from livedata.core.frames import Batch, FieldDef
from livedata.core.window import Held, held_bytes, release

V = {"v": FieldDef.of("v", "number")}
S = {"s": FieldDef.of("s", "string")}


class Window:
    """Entries as a broker keeps them, and :func:`release` applied the way both brokers apply it."""

    def __init__(self) -> None:
        self.entries: list[Held] = []
        self.seq = 0

    def add(self, points: list[tuple[int, object]], due: float, fields: dict[str, FieldDef] = V) -> None:
        key = next(iter(fields))
        batch = Batch([t for t, _ in points], {key: [v for _, v in points]}, fields).sorted()  # type: ignore[misc]
        self.seq += 1
        self.entries.append(Held(self.seq, due, batch, held_bytes(batch)))

    def pop(self, now: float, everything: bool = False) -> list[tuple[int, object]]:
        out = release(self.entries, now, everything)
        if out is None:
            return []
        kept = {e.id: e for e in out.kept}
        self.entries = [kept.get(e.id, e) for e in self.entries if e.id not in out.gone]
        key = next(iter(out.batch.columns))
        return list(zip(out.batch.times, out.batch.columns[key], strict=True))

    def next_due(self) -> float | None:
        return min((e.due for e in self.entries), default=None)


def test_holds_until_due_then_releases_sorted() -> None:
    w = Window()
    w.add([(30, 3), (10, 1)], 100)
    w.add([(20, 2)], 150)
    assert w.next_due() == 100
    assert w.pop(99) == []
    # 10 and 30 are due; 20 is not, but it is older than 30, so it goes now too (else it would be late)
    assert w.pop(100) == [(10, 1), (20, 2), (30, 3)]
    assert w.entries == [] and w.next_due() is None


def test_newer_points_not_yet_due_stay() -> None:
    w = Window()
    w.add([(10, 1)], 100)
    w.add([(40, 4), (5, 0)], 160)
    assert w.pop(100) == [(5, 0), (10, 1)]
    assert len(w.entries) == 1 and w.entries[0].batch.times == [40] and w.next_due() == 160
    assert w.entries[0].size == held_bytes(w.entries[0].batch) < held_bytes(Batch([40, 5], {"v": [4, 0]}, V))
    assert w.pop(160) == [(40, 4)]


def test_equal_times_keep_arrival_order_and_everything_goes_at_once() -> None:
    w = Window()
    w.add([(5, "x"), (5, "y")], 10, S)
    w.add([(1, "z")], 50, S)
    assert w.pop(0, everything=True) == [(1, "z"), (5, "x"), (5, "y")]
    assert w.pop(1e9) == []


def test_fields_of_several_pushes_meet_in_one_batch() -> None:
    w = Window()
    w.add([(2, 2.0)], 10)
    w.add([(1, "a")], 10, S)
    out = release(w.entries, 10)
    assert out is not None and out.gone == [1, 2] and out.kept == []
    assert out.batch.times == [1, 2] and out.batch.columns == {"v": [None, 2.0], "s": ["a", None]}
    assert set(out.batch.fields) == {"v", "s"}


def test_held_bytes_grows_with_points_and_strings() -> None:
    small = held_bytes(Batch([1], {"v": [1.0]}, V))
    assert held_bytes(Batch(list(range(100)), {"v": [1.0] * 100}, V)) > 20 * small
    assert held_bytes(Batch([1], {"s": ["x" * 10_000]}, S)) > 10_000


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200), st.integers(0, 100)), max_size=60),
       st.integers(1, 50))
def test_every_point_once_sorted_per_release_never_held_past_its_window(
        arrivals: list[tuple[int, int, int]], step: int) -> None:
    """Arrivals (point time, arrival offset, window); the flusher polls every ``step`` ms."""
    w = Window()
    events = sorted(((at, t, hold, i) for i, (t, at, hold) in enumerate(arrivals)))
    deadline: dict[int, float] = {}
    out: list[tuple[int, object]] = []
    k = 0
    now = 0
    while k < len(events) or w.entries:
        while k < len(events) and events[k][0] <= now:
            at, t, hold, i = events[k]
            w.add([(t, i)], at + hold)
            deadline[i] = at + hold
            k += 1
        released = w.pop(now)
        assert [t for t, _ in released] == sorted(t for t, _ in released)
        held = [v for e in w.entries for v in e.batch.columns["v"]]
        assert all(deadline[i] > now for i in held), "a due point was kept"  # type: ignore[index]
        out.extend(released)
        now += step
    assert sorted(i for _, i in out) == list(range(len(arrivals)))  # type: ignore[type-var]
