"""What a line-protocol push holds while it is parsed is what its reservation counts.

The memory budget's share for a push (kind ``ingest``) is the largest of 8 bytes per body byte and
:func:`line_cost` (per line and per ``=``), plus a share per column the parse makes. Measured here
with tracemalloc on bodies of every shape that costs more than its bytes suggest; the figures are
in :mod:`livedata.server.ingest.parse`.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from livedata.core.budget import Budget, Reservation
from livedata.server.ingest import parse as p

T0 = 1_700_000_000_000_000_000
SHAPES: dict[str, Callable[[int], str]] = {
    "one field (ingest-lp)": lambda i: f"m,host=h{i % 10} value={(i * 7) % 1000 / 10} {T0 + i * 1_000_000}\n",
    "short": lambda i: f"m v={i % 10} {i}\n",
    "no timestamp": lambda i: "m v=1\n",
    "eight short fields": lambda i: f"m a={i % 7},b=2,c=3,d=4,e=5,f=6,g=7,h=8 {i}\n",
    "a new tag set per line": lambda i: f"m{i % 50},a={i},b={i % 3} v=1 {i}\n",
    "a new field key per line": lambda i: f"m{i % 50} k{i}=1 {i}\n",
    "telegraf cpu": lambda i: (f"cpu,cpu=cpu{i % 4},host=server01 usage_guest=0,usage_idle=97.{i % 10},"
                               f"usage_system=1.0{i % 7},usage_user=1.{i % 9},usage_irq=0i {T0 + (i // 4) * 10**9}\n"),
    "strings": lambda i: f'syslog,host=a msg="hello world {i}",code={i}i {i}\n',
    "booleans": lambda i: f"m a=t,b=f,c=T,d=F {i}\n",
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_push_holds_at_most_what_it_reserved(shape: str) -> None:
    body = "".join(map(SHAPES[shape], range(10_000))).encode()
    reservation = Reservation(Budget(1 << 40), "ingest")
    tracemalloc.start()
    try:
        out = await p.line_batches("c", body, "ns", 10**7, reservation)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out
    held = peak + len(body)  # the body was read before
    ratio = reservation.n / len(body)
    assert held <= reservation.n, f"{shape}: held {held / len(body):.1f}x the body, reserved {ratio:.1f}x"
    assert reservation.n <= 3 * held, f"{shape}: reserved {reservation.n / held:.1f}x what it held"


async def test_a_push_that_makes_a_column_per_line_is_refused_as_it_parses() -> None:
    """A new tag set per line costs about 1.4 KB a line: 10 MiB of them held about 480 MB while the
    budget counted 80 MB. The push is now refused (413) once its columns pass the budget's share."""
    body = "".join(f"m{i % 400},t={i} v=1 {i}\n" for i in range(200_000)).encode()
    budget = Budget(256 << 20)
    reservation = Reservation(budget, "ingest")
    with pytest.raises(p.IngestError) as info:
        await p.line_batches("c", body, "ns", 10**7, reservation)
    assert info.value.status == 413 and "columns (a column per tag set and field)" in info.value.message
    assert reservation.n <= budget.caps["ingest"]
