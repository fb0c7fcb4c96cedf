"""A real ``redis-server`` subprocess for tests: start, stop, kill -9 and restart on one port and dir."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        self.port = port or _free_port()
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
