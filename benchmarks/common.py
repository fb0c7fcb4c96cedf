"""Shared bench plumbing: server processes, /proc sampling, fd limits, percentiles, machine facts.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (children inherit it). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- /proc ----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def system_busy() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat", "rb") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return 0.0
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK_TCK


@dataclass
class CpuMark:
    wall: float
    cpu: float


def mark(pids: Sequence[int]) -> CpuMark:
    return CpuMark(time.monotonic(), sum(cpu_seconds(p) for p in pids))


def cpu_share(a: CpuMark, b: CpuMark) -> float:
    """CPU seconds per wall second between two marks (1.0 = one full core)."""
    return (b.cpu - a.cpu) / max(1e-9, b.wall - a.wall)


# --- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return float(s[k])


def hist_percentile(hist: Mapping[int, int], q: float, scale: float = 10.0) -> float | None:
    """Percentile ``q`` of a histogram of values binned by ``1/scale`` (bin -> count)."""
    total = sum(hist.values())
    if not total:
        return None
    want = q / 100 * (total - 1)
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen > want:
            return k / scale
    return max(hist) / scale


def now_ms() -> float:
    """Wall clock in (fractional) epoch milliseconds: latency is receipt time minus point time."""
    return time.time() * 1000.0


def median(values: Sequence[float | None]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


# --- server processes -----------------------------------------------------------------------------


class ServerProc:
    """A server subprocess (``livedata serve`` or the floor) on a free loopback port."""

    def __init__(self, argv: Sequence[str], port: int, name: str, health: str = "/api/health") -> None:
        self.argv = list(argv)
        self.port = port
        self.name = name
        self.health = health
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{name}-{port}-{time.time_ns()}.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> ServerProc:
        raise_fd_limit()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not come up: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> ServerProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def livedata_server(*args: str, interval_ms: float | None = None) -> ServerProc:
    port = free_port()
    argv = [sys.executable, "-m", "livedata.cli", "serve", "--host", HOST, "--port", str(port),
            "--log-level", "warning", "--max-connections-per-ip", "1000000", "--cors-origin", "*", *args]
    if interval_ms is not None:
        argv += ["--interval", str(interval_ms)]
    return ServerProc(argv, port, "livedata")


def floor_server(*args: str) -> ServerProc:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.floor", "--port", str(port), *args]
    return ServerProc(argv, port, "floor", health="/health")


def http_json(url: str, body: bytes | None = None, content_type: str = "application/json",
              timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- machine facts -------------------------------------------------------------------------------


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_facts() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem / (1 << 30), 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "packages": {p: _version(p) for p in ("livedata", "aiohttp", "msgspec", "uvloop", "psutil", "matplotlib")},
    }
