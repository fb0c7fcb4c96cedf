"""``--data-dir`` against ``kill -9``: 10 times in a row, a server is killed at a random moment
while a client pushes numbered points and a reader follows the channel; after each restart every
point of every push that got a ``204`` is there (the default ``--fsync interval`` keeps whatever
was committed across a process crash; only a power loss could cost its last second), nothing is
there twice, and the reader's last position resumes exactly: same epoch, no ``lost`` notice, the
very next point.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import LiveServer, free_port

T0 = time.time_ns() // 1_000_000 - 600_000


def seqs(m: dict[str, Any]) -> list[Any]:
    """The ``seq`` column of a data message (none in a schema packet of a channel with no fields yet)."""
    values = m["frame"]["data"]["values"]
    return values[1] if len(values) > 1 else []


async def pusher(url: str, acked: list[int], sent: list[int], stop: asyncio.Event) -> None:
    """Pushes of 1..50 numbered points, one after another, until the server goes away."""
    rng = random.Random()
    n = max(sent, default=-1) + 1
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            k = rng.randint(1, 50)
            seqs = list(range(n, n + k))
            n += k
            sent.extend(seqs)
            try:
                async with s.post(f"{url}/api/push/crash/seq",
                                  json={"time": [T0 + q for q in seqs], "seq": seqs}) as r:
                    if r.status != 204:
                        return
                    acked.extend(seqs)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                return


async def follow(url: str, since: str | None, got: list[int], positions: list[tuple[str, int]], notices: list[Any],
                 stop: asyncio.Event) -> None:
    """An NDJSON reader of the channel: its points, its positions (with how many points it had
    then) and notices, until the server goes away."""
    params = {"channel": "crash/seq", **({"since": since} if since else {"from": "0"})}
    try:
        async with aiohttp.ClientSession(read_bufsize=1 << 24) as s, s.get(f"{url}/api/stream", params=params) as r:
            async for line in r.content:
                if stop.is_set():
                    return
                m = json.loads(line)
                if m["type"] == "notice":
                    notices.append(m)
                elif m["type"] == "data":
                    got.extend(int(v) for v in seqs(m))
                    if m.get("position"):
                        positions.append((m["position"], len(got)))
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        return


async def stored(url: str) -> tuple[list[int], str | None]:
    async with aiohttp.ClientSession(read_bufsize=1 << 24) as s, s.get(f"{url}/api/stream", params={
            "channel": "crash/seq", "from": "0", "to": "now"}) as r:
        values: list[int] = []
        position = None
        async for line in r.content:
            m = json.loads(line)
            if m["type"] == "data":
                values.extend(int(v) for v in seqs(m))
                position = m.get("position") or position
            if m["type"] == "complete":
                break
    return values, position


@pytest.mark.timeout(240)
def test_kill_9_at_random_moments_loses_no_acknowledged_point_and_positions_resume(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    rng = random.Random()
    acked: list[int] = []
    sent: list[int] = []
    reader_last: str | None = None
    reader_got: list[int] = []
    epoch: str | None = None

    async def cycle(server: LiveServer, stored_now: list[int]) -> None:
        nonlocal reader_last, epoch
        stop = asyncio.Event()
        got: list[int] = []
        positions: list[tuple[str, int]] = []
        notices: list[Any] = []
        first_new = max(sent, default=-1) + 1
        reader = asyncio.create_task(follow(server.url, reader_last, got, positions, notices, stop))
        push = asyncio.create_task(pusher(server.url, acked, sent, stop))
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        server.stop(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(reader, push), 10)
        assert not notices, f"a resume after kill -9 got a notice: {notices}"
        if reader_last is not None and got:
            following = [v for v in stored_now if v > reader_got[-1]] + [first_new]
            assert got[0] == following[0], "the position did not resume at the very next point"
        if positions:
            reader_last, upto = positions[-1]
            reader_got.extend(got[:upto])  # what the reader has up to the position it would resume from
            e = reader_last.split(":")[0]
            assert epoch in (None, e), "the epoch changed across a restart"
            epoch = e

    for i in range(10):
        server = LiveServer(["--data-dir", data]).start()
        try:
            values: list[int] = []
            if i:
                values, _ = asyncio.run(stored(server.url))
                missing = sorted(set(acked) - set(values))
                assert not missing, f"cycle {i}: {len(missing)} acknowledged points lost, first {missing[:5]}"
                assert len(values) == len(set(values)), "a point stored twice"
                assert set(values) <= set(sent)
                assert values == sorted(values), "history out of order"
            asyncio.run(cycle(server, values))
        finally:
            server.kill()
    server = LiveServer(["--data-dir", data]).start()
    try:
        values, _ = asyncio.run(stored(server.url))
        assert set(acked) <= set(values) and len(values) == len(set(values))
        assert reader_got == values[:len(reader_got)], "the reader saw exactly the stored points, in order"
        assert len(acked) > 100, "the pusher got few pushes in: the test proved little"
    finally:
        server.stop()


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_every_fsync_mode_survives_a_clean_restart(tmp_path: Path, fsync: str) -> None:
    data = str(tmp_path / "data")
    server = LiveServer(["--data-dir", data, "--fsync", fsync]).start()
    acked: list[int] = []

    async def push() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(pusher(server.url, acked, [], stop))
        await asyncio.sleep(0.5)
        stop.set()
        await task

    try:
        asyncio.run(push())
    finally:
        server.stop()
    server = LiveServer(["--data-dir", data, "--fsync", fsync]).start()
    try:
        values, _ = asyncio.run(stored(server.url))
        assert set(acked) <= set(values) and acked
    finally:
        server.stop()


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = str(tmp_path / "data")
    server = LiveServer(["--data-dir", data]).start()
    try:
        other = subprocess.run([sys.executable, "-m", "livedata.cli", "serve", "--port", str(free_port()),
                                "--data-dir", data],
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 1
        assert "is in use by another livedata" in other.stderr and "Traceback" not in other.stderr
    finally:
        server.stop()
