"""Size limits on names, the same for every way in (JSON, line protocol, WebSocket, OTLP).

One place for them, so that the carriers cannot drift apart and so that a later change to what
the server will hold per client (the resource limits) edits numbers here, not checks everywhere.
Lengths count characters (code points), not bytes.
"""

from __future__ import annotations

from typing import Final

MAX_CHANNEL_CHARS: Final = 256
"""A channel name, with its ``/`` separators (``telegraf/cpu``)."""

MAX_FIELD_CHARS: Final = 256
"""A field name (a JSON key, a line-protocol field key, an OTLP metric name) and, each, a label's
key and value (line-protocol tags, OTLP attributes)."""

MAX_LABELS: Final = 64
"""Labels on one field: line-protocol tags of one line, OTLP resource + point attributes."""
