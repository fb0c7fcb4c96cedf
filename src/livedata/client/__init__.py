"""A Python client for ``livedata serve``: subscribe over one WebSocket, push over HTTP.

.. code-block:: python

    async with Client("http://localhost:8080") as c:
        await c.push_point("sensors/kitchen", temp=21.5)      # batched, flushed within 100 ms
        async for item in c.subscribe("sensors/kitchen", from_="now-5m"):
            if isinstance(item, Frame):
                for point in item.points():
                    print(point)

Every subscription of a :class:`Client` shares one WebSocket. When the connection drops (server
restart, network, a ``slow`` close) the client reconnects with exponential backoff and jitter and
resubscribes each subscription with ``since`` = the last position it received, so the consumer
sees every point exactly once. If the server cannot give back what was missed (a restarted memory
broker, or points past retention), a :class:`Notice` says how many points were lost.

Pushes are buffered per channel and sent as one ``POST /api/push/{channel}`` per batch, each
with its own ``Idempotency-Key``: a batch is retried on connection errors and ``503`` without
ever being stored twice. :class:`SyncClient` offers the push side to scripts without asyncio.
"""

from livedata.client.client import Client, connect
from livedata.client.push import to_columns
from livedata.client.subscription import Subscription
from livedata.client.sync import SyncClient
from livedata.client.types import Field, Frame, LivedataError, Notice, NoticeCallback, Value

__all__ = [
    "Client",
    "Field",
    "Frame",
    "LivedataError",
    "Notice",
    "NoticeCallback",
    "Subscription",
    "SyncClient",
    "Value",
    "connect",
    "to_columns",
]
