"""A real ``redis-server`` subprocess: start, stop, kill -9 and restart on one port and dir.

Used by the test suite (the ``redis_server`` fixture, fault tests) and by ``redis_scale``. It lives
here, not under ``tests/``, because benchmarks never import tests (they must run without the test
tree) while tests may use bench tooling (``test_bench_smoke`` already does). Standard library
only: no Redis client is needed to start, probe or query a server.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_version() -> str:
    """``redis-server --version``'s ``v=`` part, or ``-`` when it cannot be run."""
    try:
        out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return "-"
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()[:40]


def command(port: int, *args: str) -> Any:
    """One command over a raw socket (no client library needed); bulk, int and array replies."""
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(out)
        f = s.makefile("rb")

        def read() -> Any:
            line = f.readline()
            kind, rest = line[:1], line[1:-2]
            if kind in (b"+", b"-"):
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data.decode(errors="replace")
            if kind == b"*":
                return [read() for _ in range(int(rest))]
            raise ValueError(f"bad reply {line!r}")

        return read()


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server --port <free> --dir <tmpdir> --save ''`` (optionally with AOF on every write)."""

    def __init__(self, appendonly: bool = False, fsync: str = "always", port: int | None = None,
                 directory: str | None = None) -> None:
        self.port = port or free_port()
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="livedata-redis-")
        self.dir = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.appendonly = appendonly
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", self.fsync]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            if _ping(self.port):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING: {self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-3000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM: with AOF on, everything written is on disk)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def pause(self) -> None:
        """SIGSTOP: the process freezes; connections stay open, commands wait unanswered."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`: it answers everything that waited."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill9(self) -> None:
        """Kill with SIGKILL: no shutdown, only what was fsynced survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop if running, then start again on the same port and dir."""
        self.stop()
        deadline = time.monotonic() + timeout
        while _ping(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.start(timeout)

    def close(self) -> None:
        self.kill9()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
