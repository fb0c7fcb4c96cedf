"""The package's task helpers: stopping owned tasks, and waiting on an event with a deadline."""

from __future__ import annotations

import asyncio

import pytest

from livedata.tasks import cancel_and_wait, wait_event


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 10) is True


async def test_a_loop_waiting_on_an_event_stops_even_when_the_event_races_the_cancel() -> None:
    """The race 3.11's ``wait_for`` loses: the event is set in the same loop step as the cancel.
    Every such loop must still end (``wait_for`` would return normally and the loop go on)."""
    async def loop(event: asyncio.Event) -> None:
        while True:
            await wait_event(event, 10)
            event.clear()

    for _ in range(200):
        event = asyncio.Event()
        task = asyncio.create_task(loop(event))
        await asyncio.sleep(0)  # the loop is waiting
        event.set()
        task.cancel()
        await asyncio.wait_for(cancel_and_wait(task), 5)
        assert task.cancelled()


async def test_cancel_and_wait_passes_on_what_a_task_raised() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task, None)
