"""Sparse data costs what it carries: sparse columns in batches, chunks, packets and history pages."""

from __future__ import annotations

import sys
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from livedata.core.frames import (
    Batch,
    Chunk,
    FieldDef,
    Pos,
    Rows,
    Sparse,
    col_slice,
    col_take,
    column,
    compact,
    dense,
    last_value,
)
from livedata.core.lineprotocol import parse_tables
from livedata.core.protocol import points_to_batch, tables_to_batches
from livedata.delivery.encode import gather, pieces

NOW = 1_700_000_000_000


def test_column_picks_the_cheaper_layout() -> None:
    assert column(3, [0, 1, 2], [1, 2, 3]) == [1, 2, 3]
    assert column(10, [0, 2, 4, 6, 8], [1, 2, 3, 4, 5]) == [1, None, 2, None, 3, None, 4, None, 5, None]
    sparse = column(100, [7, 50], ["a", "b"])
    assert isinstance(sparse, Sparse) and dense(sparse)[7] == "a" and dense(sparse)[50] == "b"
    assert compact([None] * 99 + [1.0]) == Sparse(100, [99], [1.0])
    assert compact([1.0, None]) == [1.0, None]


@given(st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=40), st.data())
def test_sparse_operations_match_dense_ones(values: list[int | None], data: st.DataObject) -> None:
    n = len(values)
    rows = [i for i, v in enumerate(values) if v is not None]
    sparse = Sparse(n, rows, [values[i] for i in rows])
    assert dense(sparse) == values
    lo = data.draw(st.integers(0, n))
    hi = data.draw(st.integers(lo, n))
    assert dense(col_slice(sparse, lo, hi)) == values[lo:hi]
    order = data.draw(st.permutations(range(n)))
    assert dense(col_take(sparse, order)) == [values[i] for i in order]
    assert last_value(sparse) == (values[-1] if values else None)
    packet = Rows()
    packet.extend([1] * n, {"a": sparse})
    assert packet.columns.get("a", [None] * n) == values


def test_json_points_with_distinct_keys_cost_what_they_carry() -> None:
    points = [{"time": NOW + i, f"k{i}": float(i)} for i in range(8000)]
    tracemalloc.start()
    batch = points_to_batch(points, NOW, 10**6)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(batch.columns) == 8000 and batch.cells == 8000
    assert all(isinstance(c, Sparse) and c.rows == [i] for i, c in enumerate(batch.columns.values()))
    assert peak < 16 << 20  # was 64 million cells (512 MB of pointers)


def test_line_protocol_with_distinct_tag_sets_costs_what_it_carries() -> None:
    body = "\n".join(f"m,host=h{i} v={i} {(NOW + i) * 1_000_000}" for i in range(8000))
    (batch,) = tables_to_batches(parse_tables(body), "x", NOW).values()
    assert len(batch.columns) == 8000 and batch.cells == 8000
    assert sum(sys.getsizeof(c.rows) + sys.getsizeof(c.values) for c in batch.columns.values()
               if isinstance(c, Sparse)) < 8000 * 300


def test_a_sorted_sparse_batch_stays_sparse() -> None:
    batch = Batch([3, 1, 2], {"a": Sparse(3, [0], ["x"]), "b": [1.0, 2.0, 3.0]},
                  {"a": FieldDef.of("a", "string"), "b": FieldDef.of("b", "number")})
    s = batch.sorted()
    assert s.times == [1, 2, 3] and s.columns["a"] == Sparse(3, [2], ["x"]) and s.columns["b"] == [2.0, 3.0, 1.0]


def _chunk(a: int, times: list[int], cols: dict[str, list[float | None] | Sparse], hwm: int | None = None) -> Chunk:
    c = Chunk(Pos(a, 0, a * 10), times, dict(cols), hwm)
    c.nbytes = 100 * len(times)
    return c


def test_gather_lays_out_a_sparse_chunk_and_marks_rows_older_than_the_floor_late() -> None:
    c = _chunk(1, [1, 2, 5, 6], {"a": Sparse(4, [1, 3], [10.0, 20.0])}, hwm=4)
    rows, late = gather([c], ["a"], floor=4)
    assert late and rows.times == [1, 2, 5, 6] and rows.columns == {"a": [None, 10.0, None, 20.0]}
    rows, late = gather([c], ["a"], floor=None)
    assert not late


def test_gather_keeps_time_order_across_chunks_with_sparse_columns() -> None:
    chunks = [_chunk(1, [10, 20], {"v": [1.0, 2.0]}), _chunk(2, [5, 30], {"v": [0.5, 3.0]}, hwm=20),
              _chunk(3, [40], {"w": Sparse(1, [0], [4.0])})]
    rows, late = gather(chunks, ["v", "w"], floor=None)
    assert rows.times == [5, 10, 20, 30, 40] and not late
    assert rows.columns == {"v": [0.5, 1.0, 2.0, 3.0, None], "w": [None, None, None, None, 4.0]}


def test_pieces_are_cut_by_bytes_not_by_rows() -> None:
    chunks = [_chunk(i, [i * 100 + r for r in range(100)], {"v": [1.0] * 100}) for i in range(1, 11)]
    runs = list(pieces(chunks, ["v"], 1 << 30, 1, target=10_000))  # 100 bytes a row: 100 rows each
    assert [sum(map(len, r)) for r in runs] == [100] * 10
    assert [t for r in runs for c in r for t in c.times] == [t for c in chunks for t in c.times]


def test_pieces_cut_big_chunks_and_each_ends_at_a_position() -> None:
    chunks = [_chunk(1, list(range(50)), {"v": [1.0] * 50}), _chunk(2, list(range(50, 60)), {"v": [1.0] * 10})]
    runs = list(pieces(chunks, ["v"], 1 << 30, 1, target=2000))  # 20 rows a piece
    assert [sum(map(len, r)) for r in runs] == [20, 20, 20]
    assert [t for r in runs for c in r for t in c.times] == list(range(60))
    whole = Chunk(Pos(1, 0, 50), list(range(50)), {"v": [1.0] * 50}, None)
    whole.nbytes = 100 * 50
    ends = [r[-1].end for r in pieces([whole], ["v"], 1 << 30, 1, target=2000)]
    assert [e.count for e in ends] == [20, 40, 50]  # cut inside the chunk: each end is a position in it
