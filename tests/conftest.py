"""Shared fixtures: a real ``livedata serve`` on a free port."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEEP_OLD = ("--retention", "1000000000000")
"""Flags for a server whose tests push fixed timestamps long past (1970, 2023, line protocol's
earliest -2^63 ns) and read them back (retention 31,700 years):
retention is by point time, so the default hour would serve none of them."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A ``livedata serve`` subprocess. ``url`` is its base URL, without a trailing slash."""

    def __init__(self, args: Sequence[str] = (), port: int | None = None, env: dict[str, str] | None = None,
                 scheme: str = "http"):
        self.scheme = scheme
        self.port = port or free_port()
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"livedata-{self.port}-{time.time_ns()}.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> LiveServer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livedata.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livedata serve exited with {self.proc.returncode}: {self.log()}")
            try:
                ctx = ssl._create_unverified_context() if self.scheme == "https" else None  # readiness only
                with urllib.request.urlopen(self.url + "/api/health", timeout=1, context=ctx) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"livedata serve did not come up: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Stop the server; returns the seconds it took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()


async def gauge(s: Any, url: str, name: str) -> float:
    """The value of one sample on the server's ``/metrics`` (``name`` may carry labels); it must be there."""
    async with s.get(f"{url}/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


# --- brokers: every broker test runs on the memory broker and on a real Redis ----------------------

from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.redis_server import RedisServer  # noqa: E402

_prefixes = iter(range(1, 1 << 30))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One ``redis-server`` for the session (tests keep apart by key prefix)."""
    server = RedisServer().start()
    yield server
    server.close()


BrokerMaker = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["memory", "redis", "disk"])
async def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """A started broker: ``MemoryBroker``, ``RedisBroker`` under a key prefix of its own, or
    ``DiskBroker`` in a fresh data directory."""
    made: list[Any] = []
    prefix = f"t{os.getpid()}-{next(_prefixes)}:"
    dirs: dict[str, str] = {}

    async def make(**kwargs: Any) -> Any:
        if request.param == "memory":
            from livedata.brokers.memory import MemoryBroker

            kwargs.pop("prefix", None)
            b: Any = MemoryBroker(**kwargs)
        elif request.param == "disk":
            from livedata.brokers.disk import DiskBroker

            # a key prefix of its own in Redis is a data directory of its own here
            where = kwargs.pop("prefix", "")
            if where not in dirs:
                dirs[where] = str(tmp_path_factory.mktemp("data"))
            b = DiskBroker(kwargs.pop("data_dir", dirs[where]), **kwargs)
        else:
            from livedata.brokers.redis import RedisBroker

            server: RedisServer = request.getfixturevalue("redis_server")
            kwargs.setdefault("prefix", prefix)
            b = RedisBroker(server.url, **kwargs)
        await b.start()
        made.append(b)
        return b

    request.node.make_broker = make
    yield await make()
    for b in made:
        await b.close()


@pytest.fixture
def make_broker(broker: Any, request: pytest.FixtureRequest) -> BrokerMaker:
    """More brokers of the kind ``broker`` is (same Redis and key prefix unless ``prefix=`` is given)."""
    maker: BrokerMaker = request.node.make_broker
    return maker
