"""The push side of the client for plain scripts, without asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from livedata.client.client import Client, connect
from livedata.client.types import LivedataError, Value

T = TypeVar("T")


class SyncClient:
    """Push from plain scripts: the same batching and retries, on a loop in a background thread.

    .. code-block:: python

        with SyncClient("http://localhost:8080") as c:
            c.push_point("sensors/kitchen", temp=21.5)
    """

    def __init__(self, url: str, token: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="livedata-sync-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return await connect(url, token, **kwargs)

        self.client = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise LivedataError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def push(self, channel: str, points: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        self._call(self.client.push(channel, points))

    def push_point(self, channel: str, time: int | str | None = None, **fields: Value) -> None:
        self._call(self.client.push_point(channel, time, **fields))

    def send(self, channel: str, points: Any) -> None:
        self._call(self.client.send(channel, points))

    def flush(self) -> None:
        self._call(self.client.flush())

    def close(self) -> None:
        """Flush, close, and stop the background thread."""
        if self._closed:
            return
        try:
            self._call(self.client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
