"""The original reference stream, wire-compatible: ``GET /?numSeries=N``.

One shared ticker (a deadline schedule on the loop's monotonic clock) serves every client: each
tick it encodes one chunk per distinct ``numSeries`` and writes the same bytes to every client
that asked for it, one chunk per tick. The ticker task runs only while someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from aiohttp import web

from livedata.core.clock import wall_ms as _wall_ms
from livedata.core.sources import ParamError, TickSchedule, parse_num_series, reference_lines
from livedata.core.wire import chunked
from livedata.server.conn import Conn
from livedata.server.connections import Connections
from livedata.server.http import json_error
from livedata.tasks import cancel_and_wait

_Entry = tuple[Conn, Callable[[], int], Callable[[bytes], object], int]


class ReferenceTicker:
    """Shared tick source of the reference stream."""

    def __init__(
        self,
        interval_s: float,
        *,
        rng: random.Random | None = None,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.interval_s = interval_s
        self.rng = rng or random.Random()
        self.wall_ms = wall_ms
        self.groups: dict[int, dict[Conn, _Entry]] = {}
        """numSeries -> its listeners, each with the bound transport calls the tick needs and the
        connection's cap (``FlowPolicy.cap``: the reference stream has nothing to hold, so it writes
        or closes)."""
        self._snaps: dict[int, list[_Entry]] = {}
        self.task: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def listeners(self) -> int:
        return sum(map(len, self.groups.values()))

    def add(self, conn: Conn, num_series: int) -> None:
        transport = conn.transport
        self.groups.setdefault(num_series, {})[conn] = (
            conn, transport.get_write_buffer_size, transport.write, conn.flow.cap)
        self._snaps.pop(num_series, None)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="reference-ticker")

    def remove(self, conn: Conn, num_series: int) -> None:
        group = self.groups.get(num_series)
        if group is not None:
            group.pop(conn, None)
            self._snaps.pop(num_series, None)
            if not group:
                del self.groups[num_series]
        if not self.groups and self.task is not None:
            self.task.cancel()
            self.task = None

    async def stop(self) -> None:
        task, self.task = self.task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        schedule = TickSchedule(loop.time(), self.interval_s)
        while self.groups:
            await asyncio.sleep(max(0.0, schedule.next_deadline(loop.time()) - loop.time()))
            self.tick()

    def tick(self) -> None:
        """Write one tick to every listener: one encode per distinct ``numSeries``.

        The hot loop (2,000 listeners x 20 ticks/s is 40,000 writes/s) is :meth:`Conn.send_parts`
        inlined over prebuilt tuples: the close reason, the queue against the cap, one
        ``transport.write`` of the shared bytes.
        """
        self.ticks += 1
        ts = self.wall_ms()
        for n, conns in list(self.groups.items()):
            data = chunked(reference_lines(ts, n, self.rng))
            size = len(data)
            snap = self._snaps.get(n)
            if snap is None:
                snap = self._snaps[n] = list(conns.values())
            for conn, queued, write, cap in snap:
                if conn.close_reason:
                    continue
                if queued() > cap:
                    conn.close("slow")
                    continue
                try:
                    write(data)
                except RuntimeError:  # the transport closed under us: its handler finishes it
                    continue
                conn.bytes_out += size


async def reference_stream(request: web.Request, ticker: ReferenceTicker,
                           connections: Connections) -> web.StreamResponse:
    """Serve ``GET /?numSeries=N`` until the client goes away (or the server stops)."""
    try:
        n = parse_num_series(request.query.get("numSeries"))
    except ParamError as exc:
        return json_error(400, str(exc))
    resp = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    conn = connections.open(request)
    ticker.add(conn, n)
    try:
        await conn.closed
    finally:
        ticker.remove(conn, n)
        reason = conn.close_reason
        conn.close("gone")
    if reason == "slow":
        conn.abort()
    else:
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
    return resp
