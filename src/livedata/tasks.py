"""Owned asyncio tasks: the one way this package stops them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task given (``None`` is skipped), then wait for each to finish.

    A task's own ``CancelledError`` ends here; whatever else it raised propagates.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it is set.

    ``asyncio.timeout``, not ``asyncio.wait_for``: in Python 3.11 ``wait_for`` can swallow a
    cancellation that races the wait's own completion, and a loop that waits this way then outlives
    the ``cancel_and_wait`` meant to stop it.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
