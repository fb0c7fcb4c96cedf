"""Delivery: subscriptions, encode-once fan-out in rounds, and the backfill-to-live seam.

Modules (each may import only those above it in this list, plus ``livedata.core`` and the
``Broker`` protocol of ``livedata.brokers.base``; see docs/architecture.md):

``flow``      the slow-reader policy (write, hold, close thresholds)
``settings``  delivery's tunables
``stats``     what delivery counts, as a protocol (the server injects its metrics)
``sink``      what delivery needs of a connection (``Sink``, and its fast path, the ``Lane``)
``encode``    chunks to packet bodies (pure)
``feed``      ``Subscription`` and ``Feed``: delivery rounds and the fast path
``seam``      backfill, then join the feed with no gap and no duplicate
``hub``       the registry of subscriptions, taps and feeds
"""

from livedata.delivery.feed import Feed, Subscription
from livedata.delivery.flow import FlowPolicy
from livedata.delivery.hub import Advisor, Hub, Producers
from livedata.delivery.settings import Settings
from livedata.delivery.sink import Lane, Outlet, Sink
from livedata.delivery.stats import NullStats, Stats

__all__ = ["Advisor", "Feed", "FlowPolicy", "Hub", "Lane", "NullStats", "Outlet", "Producers", "Settings", "Sink",
           "Stats", "Subscription"]
