"""The clocks the package reads: wall time in epoch milliseconds, and a monotonic one in ms.

One definition each, so a test (or a fake clock) has one thing to replace and every module
rounds the same way.
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Now, as integer milliseconds since the Unix epoch (the time unit of every point)."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> float:
    """A monotonic clock in milliseconds (any origin): for deadlines, never for point times."""
    return time.monotonic() * 1000.0
