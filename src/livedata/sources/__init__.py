"""Sources: MQTT brokers and upstream streams whose messages become points on channels.

The decoding is pure (:mod:`livedata.core.payloads`, :mod:`livedata.core.topics`,
:mod:`livedata.core.upstream`); this package owns the connections (:mod:`.mqtt`, :mod:`.stream`),
batching and publishing through the server's ingest path (:mod:`.base`), and running each source
once per cluster with its status shared and its readers notified (:mod:`.service`).
"""

from livedata.sources.base import PublishError, Sink, Source, SourceStatus
from livedata.sources.service import STATUS_PREFIX, Sources

__all__ = ["STATUS_PREFIX", "PublishError", "Sink", "Source", "SourceStatus", "Sources"]
