"""One subscription of a :class:`~livedata.client.Client`: an async iterator of frames and notices.

It keeps what a resume needs (the last position: every data message carries one, and it is safe
to resume from any of them) so the client can resubscribe after a reconnect and the consumer still
sees every point exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from livedata.client.types import Field, Frame, LivedataError, Notice, NoticeCallback, Value
from livedata.core.frames import decode_entities

log = logging.getLogger("livedata.client")


class Owner(Protocol):
    """What a subscription needs of its client."""

    async def _unsubscribe(self, sub: Subscription) -> None: ...


class _End:
    __slots__ = ("error",)

    def __init__(self, error: LivedataError | None = None) -> None:
        self.error = error



class Subscription:
    """An async iterator of :class:`Frame` (and :class:`Notice`, unless a callback takes them).

    Ends after the server's ``complete``; raises :class:`LivedataError` on the server's ``error``.
    ``await sub.close()`` (or leaving ``async with``) unsubscribes.
    """

    def __init__(self, client: Owner, sid: str, channel: str, params: Mapping[str, Any] | None,
                 from_: int | None, to: int | None, fields: Sequence[str] | None, interval: float,
                 since: str | None, on_notice: NoticeCallback | None, queue_size: int,
                 max_points: int | None = None, resolution_ms: int | None = None) -> None:
        self.client = client
        self.id = sid
        self.channel = channel
        self.params = dict(params) if params else None
        self.from_ms = from_
        self.to_ms = to
        self.fields = list(fields) if fields is not None else None
        self.interval = interval
        self.position = since
        self.max_points = max_points
        self.resolution_ms = resolution_ms
        self.bucket_ms = 0
        """The bucket width the server chose (aggregated subscriptions), once known."""
        self._raw = False
        """Data came without buckets (the server sends raw points when nothing can be aggregated)."""
        self.rows: dict[int, dict[str, Value]] = {}
        """Aggregated subscriptions: the rows so far by time (see :meth:`buckets`)."""
        self.on_notice = on_notice
        self.schema: list[Field] = []
        self.done = False
        self.started_ms: int | None = None
        """Server time when first subscribed: a live-only subscription resumes from here."""
        self._queue: asyncio.Queue[Frame | Notice | _End] = asyncio.Queue(queue_size)
        self._resuming = False
        self._newest: int | None = None
        """The newest time delivered so far: a late frame's rows older than it are the late ones."""
        self._ended = False

    # The message we (re)send.
    def request(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "subscribe", "id": self.id, "channel": self.channel}
        if self.params:
            msg["params"] = self.params
        if self.fields is not None:
            msg["fields"] = self.fields
        if self.interval:
            msg["interval"] = self.interval
        if self.bucket_ms:  # a resume keeps the width it had, whatever the range has become
            msg["resolution_ms"] = self.bucket_ms
        elif self.position is None or not self._raw:  # once raw points came, a resume asks for them
            if self.max_points is not None:
                msg["max_points"] = self.max_points
            if self.resolution_ms is not None:
                msg["resolution_ms"] = self.resolution_ms
        if self.to_ms is not None:
            msg["to"] = self.to_ms
        if self.position is not None:
            msg["since"] = self.position
            if self.bucket_ms and self.from_ms is not None:
                msg["from"] = self.from_ms  # buckets: the range to send again if the position is lost
        elif self.from_ms is not None:
            msg["from"] = self.from_ms
        elif self._resuming and self.started_ms is not None:
            msg["from"] = self.started_ms
        return msg

    def _resume(self) -> None:
        self._resuming = True

    async def _deliver(self, msg: dict[str, Any]) -> None:
        frame = msg.get("frame") or {}
        position = msg.get("position")
        schema_msg = frame.get("schema")
        changed = False
        if schema_msg is not None:
            schema = [Field(f["name"], f.get("type", "number"), f.get("labels") or {})
                      for f in schema_msg.get("fields", [])[1:]]
            changed = schema != self.schema or not self._resuming
            self.schema = schema
        data = frame.get("data") or {}
        values = data.get("values") or [[]]
        if data.get("entities"):
            values = decode_entities(values, data["entities"])
        times: list[int] = values[0] if values else []
        cols: dict[str, list[Value]] = {f.name: (values[i + 1] if i + 1 < len(values) else [None] * len(times))
                for i, f in enumerate(self.schema)}
        self._resuming = False
        if position is not None:  # every data message's position is a safe place to resume from
            self.position = position
        bucket = msg.get("bucket_ms")
        if not bucket:
            self._raw = True
        if isinstance(bucket, int) and bucket > 0:
            self.bucket_ms = bucket
            names = list(cols)
            for i, t in enumerate(times):
                self.rows[t] = {k: cols[k][i] for k in names}
        if not times and not changed:
            return
        newest = self._newest
        if times and (newest is None or times[-1] > newest):
            self._newest = times[-1]
        await self._queue.put(Frame(self.channel, self.id, position, bool(msg.get("late")), times, cols,
                                    self.schema, changed, self.bucket_ms, newest))

    async def _notice(self, msg: dict[str, Any]) -> None:
        notice = Notice(self.channel, self.id, str(msg.get("level", "info")), str(msg.get("text", "")),
                        msg.get("lost"))
        if notice.lost is not None:
            log.warning("%s: %s", self.channel, notice.text)
        if self.on_notice is not None:
            try:
                self.on_notice(notice)
            except Exception:
                log.exception("notice callback failed")
        else:
            await self._queue.put(notice)

    def _end(self, error: LivedataError | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self.done = True
        end = _End(error)
        try:
            self._queue.put_nowait(end)
        except asyncio.QueueFull:  # the consumer is behind: the end waits for room
            asyncio.get_running_loop().create_task(self._queue.put(end))

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frame | Notice:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # iterating again ends again
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    def buckets(self) -> tuple[list[int], dict[str, list[Value]]]:
        """An aggregated subscription's table so far, sorted by time: ``(times, {field: column})``
        with every row replaced by its latest version (what a chart should draw)."""
        times = sorted(self.rows)
        names = [f.name for f in self.schema]
        return times, {n: [self.rows[t].get(n) for t in times] for n in names}

    async def frames(self) -> AsyncIterator[Frame]:
        """Only the frames (notices still reach ``on_notice`` when given, else are skipped)."""
        async for item in self:
            if isinstance(item, Frame):
                yield item

    async def close(self) -> None:
        """Unsubscribe (no-op once complete)."""
        if not self.done:
            await self.client._unsubscribe(self)
        self._end()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- push buffers ---------------------------------------------------------------------------------
