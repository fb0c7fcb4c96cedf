"""Load generator: many readers spread over several processes (one Python process is client-bound).

(About 600 lines, one module on purpose: the per-message reader loop, its statistics and the
window that aggregates them are tuned together; splitting them would add calls on the hot path
or scatter one measurement's definition over files.)

Each worker process runs uvloop and raw readers (non-blocking sockets, ``loop.add_reader`` and
``recvmsg``; no client library: the fewest Python calls per message), over one of three carriers:

* ``ref``    — the original stream ``GET /?numSeries=N`` (HTTP chunked NDJSON, one chunk per tick)
* ``ws``     — ``GET /api/ws``, then one ``subscribe`` message (docs/protocol.md)
* ``ndjson`` — ``GET /api/stream?channel=...`` (one JSON message per line)

Every message is counted. A point counts as delivered when its *timestamp* falls in the
measurement window (so a point that arrives a little after the window still counts; one that
never arrives within the grace period is missing). Latency is receipt time minus the point's
timestamp, for every point of every ``sample_every``-th message (the maximum is over all messages),
with two receipt times:

* **kernel receipt** — the kernel's receive timestamp of the bytes (``SO_TIMESTAMPNS``, read with
  ``recvmsg``). On loopback the kernel stamps a segment when the *server's* ``send()`` hands it to
  the loopback device, so this is the server's latency, whatever the reader processes are doing.
  When one read returns several segments the stamp is the newest one's (an upper bound for the
  older messages in that read). These are the ``lat_*`` figures.
* **app receipt** — the time this process handled the bytes (``time.time()`` in the read
  callback): the kernel receipt plus however late this reader process got to run. On a 2-core
  machine shared by the server and 2 to 4 reader processes that adds up at 10,000 readers. These are
  the ``lat_app_*`` figures (the only definition before; kept so the two can be compared), and
  ``app_delay_*`` is the difference per read.

The parent sets the window only once every reader is connected and subscribed, then samples the
server's (and the workers') CPU from /proc at the window's edges.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import queue
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from benchmarks.common import HOST, CpuMark, cpu_share, mark, percentile, raise_fd_limit, rss_bytes, system_busy

TICK = b'{"series":0,"timestamp":'
LINGER0 = struct.pack("ii", 1, 0)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
ANCILLARY = socket.CMSG_SPACE(16)  # one struct timespec
RECV_BYTES = 1 << 16


@dataclass
class LoadSpec:
    kind: str
    """``ref``, ``ws`` or ``ndjson``."""
    readers: int
    port: int
    path: str = "/"
    subscribe: dict[str, Any] | None = None
    """The WebSocket subscribe message (ws only)."""
    series: int = 1
    """Points per timestamp in a data message (numSeries for ``ref``; fields for ws/ndjson)."""
    workers: int = 0
    """Reader processes; 0 picks one per 2,500 readers, 2 to 4."""
    msgs_per_s: float = 20.0
    """Expected messages per second per reader (only to size the latency sampling)."""
    connect_concurrency: int = 64
    report_every: float = 0.0
    channels: int = 1
    """ws only: readers spread over this many channels, ``subscribe["channel"]`` has ``{i}``."""
    connect_budget: float = 150.0
    """Seconds a worker may spend connecting its readers."""
    nice: int = 0
    """Reader processes' niceness (0: as the server). On a shared 2-core machine the readers compete
    with the server for CPU; a positive value lets the server go first (the kernel-receipt latency is
    the server's either way; the readers' own lateness then shows in the app-receipt figures)."""
    """Soak mode: send a bucket of stats every this many seconds until told to stop."""


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame with a zero mask (XOR with zero leaves the payload as it is)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def ws_handshake(path: str, port: int) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def http_get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: */*\r\n\r\n".encode()


# --- the per-process statistics -------------------------------------------------------------------


@dataclass(slots=True)  # read for every message: slots make the attribute reads cheaper
class Stats:
    win_start: float = math.inf
    """Window in epoch ms (receipt time and point time)."""
    win_end: float = math.inf
    stride: int = 1
    points: int = 0
    msgs: int = 0
    bytes: int = 0
    samples: list[float] = field(default_factory=list)
    """Latency by kernel receipt (SO_TIMESTAMPNS)."""
    app_samples: list[float] = field(default_factory=list)
    """Latency by app receipt (when this process handled the bytes)."""
    delays: list[float] = field(default_factory=list)
    """App receipt minus kernel receipt, one per sampled read."""
    lat_max: float = 0.0
    app_lat_max: float = 0.0
    reads: int = 0
    stamped: int = 0
    """Reads that carried a kernel timestamp (all of them on Linux)."""
    times: set[int] = field(default_factory=set)
    lost: int = 0
    newest: float = 0.0
    closing: bool = False
    # soak buckets (app receipt, as soak.py always measured)
    b_msgs: int = 0
    b_points: int = 0
    b_samples: list[float] = field(default_factory=list)

    def account(self, times: Sequence[int], per_time: int, now: float, kt: float) -> None:
        """One data message: point ``times``; ``now`` app receipt, ``kt`` kernel receipt (epoch ms)."""
        ws, we = self.win_start, self.win_end
        if ws <= now < we:
            self.msgs += 1
            first = times[0]
            if kt - first > self.lat_max:
                self.lat_max = kt - first
            if now - first > self.app_lat_max:
                self.app_lat_max = now - first
            if self.msgs % self.stride == 0:
                self.samples.extend([kt - t for t in times])
                self.app_samples.extend([now - t for t in times])
                self.delays.append(now - kt)
        if times[-1] >= ws and times[0] < we:
            for t in times:
                if ws <= t < we:
                    self.points += per_time
                    if t > self.newest:
                        self.newest = t
                        self.times.add(t)
                    elif t not in self.times:
                        self.times.add(t)
        self.b_msgs += 1
        self.b_points += len(times) * per_time
        if self.b_msgs % self.stride == 0:
            self.b_samples.append(now - times[-1])


ST = Stats()


class Reader:
    """One reader on a raw non-blocking socket, read with ``recvmsg`` for the kernel timestamp.

    (asyncio transports do not expose ancillary data, so this is ``loop.add_reader`` + ``recvmsg``:
    per read, about the cost of a uvloop protocol's ``data_received``.)
    """

    __slots__ = ("buf", "hdr", "kind", "loop", "ready", "request", "series", "sock", "sub")

    def __init__(self, kind: str, sock: socket.socket, request: bytes, sub: bytes | None, series: int,
                 ready: asyncio.Future[None]) -> None:
        self.kind = kind
        self.sock = sock
        self.request = request
        self.sub = sub
        self.series = series
        self.ready = ready
        self.loop = ready.get_loop()
        self.hdr: bytes | None = b""
        self.buf = b""

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.on_readable)
        self.write(self.request)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a few bytes to an empty socket buffer: never partial here
            self.sock.send(data)

    def close(self, abort: bool = False) -> None:
        sock = self.sock
        if sock.fileno() < 0:
            return
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock.fileno())
        if abort:  # RST instead of FIN: no TIME_WAIT piling up between runs
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        sock.close()

    def _lost(self, exc: BaseException | None) -> None:
        self.close()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))
        elif not ST.closing:
            ST.lost += 1

    def on_readable(self) -> None:
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(RECV_BYTES, ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        now = time.time() * 1000.0
        if not data:
            self._lost(None)
            return
        kt = now
        if anc:
            sec, nsec = struct.unpack_from("qq", anc[0][2])
            kt = sec * 1000.0 + nsec / 1e6
            ST.stamped += 1
        ST.reads += 1
        if ST.win_start <= now < ST.win_end:
            ST.bytes += len(data)
        if self.hdr is not None:
            hdr = self.hdr + data
            i = hdr.find(b"\r\n\r\n")
            if i < 0:
                self.hdr = hdr
                return
            self.hdr = None
            status = hdr[9:12]
            data = hdr[i + 4:]
            want = b"101" if self.kind == "ws" else b"200"
            if status != want:
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"HTTP {status.decode()}: {data[:200]!r}"))
                self.close()
                return
            if self.kind == "ws" and self.sub is not None:
                self.write(self.sub)
            if self.kind == "ref" and not self.ready.done():
                self.ready.set_result(None)
            if not data:
                return
        kind = self.kind
        if kind == "ref":
            self._ref(data, now, kt)
        elif kind == "ws":
            self._ws(data, now, kt)
        else:
            self._lines(data, now, kt)

    # --- carriers ----------------------------------------------------------------------------

    def _ref(self, data: bytes, now: float, kt: float) -> None:
        if self.buf:
            data = self.buf + data
        cut = data.rfind(b"\n") + 1
        self.buf = data[cut:]
        pos = data.find(TICK, 0, cut)
        n = len(TICK)
        while pos >= 0:
            nxt = data.find(TICK, pos + n, cut)
            comma = data.index(b",", pos + n)
            ts = int(data[pos + n:comma])
            lines = data.count(b"}\n", pos, nxt if nxt >= 0 else cut)
            ST.account((ts,), lines, now, kt)
            pos = nxt

    def _lines(self, data: bytes, now: float, kt: float) -> None:
        if self.buf:
            data = self.buf + data
        parts = data.split(b"\n")
        self.buf = parts.pop()
        for line in parts:
            if line[:1] == b"{":
                self._msg(line, now, kt)

    def _ws(self, data: bytes, now: float, kt: float) -> None:
        if not self.buf and len(data) > 3 and data[0] == 0x81:  # the usual read: one whole small text frame
            ln = data[1]
            if ln < 126 and len(data) == ln + 2:
                self._msg(data[2:], now, kt)
                return
            if ln == 126 and len(data) == int.from_bytes(data[2:4], "big") + 4:
                self._msg(data[4:], now, kt)
                return
        buf = self.buf + data if self.buf else data
        i, n = 0, len(buf)
        while n - i >= 2:
            ln = buf[i + 1] & 0x7F
            h = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln = int.from_bytes(buf[i + 2:i + 4], "big")
                h = 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln = int.from_bytes(buf[i + 2:i + 10], "big")
                h = 10
            if n - i < h + ln:
                break
            op = buf[i] & 0x0F
            if op == 1:
                self._msg(buf[i + h:i + h + ln], now, kt)
            elif op == 9:  # ping: answer, or aiohttp's heartbeat drops us
                self.write(ws_frame(buf[i + h:i + h + ln], 0xA))
            elif op == 8:
                self._lost(None)
                return
            i += h + ln
        self.buf = buf[i:]

    def _msg(self, payload: bytes, now: float, kt: float) -> None:
        if not payload.startswith(b'{"type":"data"'):
            if payload.startswith(b'{"type":"error"') and not self.ready.done():
                self.ready.set_exception(ConnectionError(payload[:200].decode(errors="replace")))
            return
        i = payload.find(b'"values":[[')
        if i < 0:
            return
        i += 11
        j = payload.find(b"]", i)
        if not self.ready.done():
            self.ready.set_result(None)
        if j <= i:
            return
        times = [int(t) for t in payload[i:j].split(b",")]
        ST.account(times, self.series, now, kt)


# --- the worker process ------------------------------------------------------------------------


def _worker(spec: LoadSpec, index: int, count: int, q: Any, ctrl: Any) -> None:
    raise_fd_limit()
    if spec.nice:
        os.nice(spec.nice)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(_worker_main(spec, index, count, q, ctrl))
    except Exception as exc:  # tell the parent rather than hang it
        q.put(("error", index, repr(exc)))


async def _open(spec: LoadSpec, request: bytes, sub: bytes | None, sem: asyncio.Semaphore,
                out: list[Reader], errors: list[str]) -> None:
    loop = asyncio.get_running_loop()
    async with sem:
        for attempt in range(3):
            ready: asyncio.Future[None] = loop.create_future()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            reader: Reader | None = None
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                await asyncio.wait_for(loop.sock_connect(sock, (HOST, spec.port)), 30)
                reader = Reader(spec.kind, sock, request, sub, spec.series, ready)
                reader.start()
                await asyncio.wait_for(ready, 30)
                out.append(reader)
                return
            except (OSError, TimeoutError, ConnectionError) as exc:
                if reader is not None:  # never leave a half-open reader behind
                    reader.close(abort=True)
                else:
                    sock.close()
                if attempt == 2:
                    errors.append(repr(exc)[:200])
                else:
                    await asyncio.sleep(0.2 * (attempt + 1))


async def _worker_main(spec: LoadSpec, index: int, count: int, q: Any, ctrl: Any) -> None:
    request = ws_handshake(spec.path, spec.port) if spec.kind == "ws" else http_get(spec.path, spec.port)

    def sub_for(i: int) -> bytes | None:
        if spec.kind != "ws":
            return None
        obj = dict(spec.subscribe or {})
        if spec.channels > 1:  # spread readers over channels named with "{i}"
            obj["channel"] = str(obj["channel"]).format(i=(index + i * 7919) % spec.channels)
        return ws_frame(msgspec.json.encode(obj))

    readers: list[Reader] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(spec.connect_concurrency)
    opening = asyncio.gather(*(_open(spec, request, sub_for(i), sem, readers, errors) for i in range(count)))
    try:  # a bounded connect phase: report what we have rather than hang the parent
        await asyncio.wait_for(asyncio.shield(opening), spec.connect_budget)
    except TimeoutError:
        errors.append(f"connect phase over {spec.connect_budget:.0f} s: {len(readers)}/{count} ready")
        opening.cancel()
    q.put(("ready", index, len(readers), errors[:5], len(errors)))
    # wait for the window (or the stop flag) from the parent
    deadline = time.monotonic() + 600
    while ctrl[0] == 0.0 and ctrl[2] == 0.0 and time.monotonic() < deadline:  # noqa: ASYNC110 - shared memory
        await asyncio.sleep(0.02)
    ST.win_start, ST.win_end = ctrl[0] * 1000.0, ctrl[1] * 1000.0
    per_s = max(1.0, spec.msgs_per_s * max(1, len(readers)))
    window_s = max(1.0, ctrl[1] - ctrl[0]) if ctrl[0] else 60.0
    ST.stride = max(1, int(per_s * window_s / 100_000))
    if spec.report_every > 0:
        last = time.monotonic()
        while ctrl[2] == 0.0 and time.monotonic() < deadline + 7200:
            await asyncio.sleep(0.1)
            if time.monotonic() - last >= spec.report_every:
                last = time.monotonic()
                q.put(("bucket", index, {"msgs": ST.b_msgs, "points": ST.b_points, "samples": ST.b_samples,
                                         "lost": ST.lost}))
                ST.b_msgs, ST.b_points, ST.b_samples = 0, 0, []
    else:
        while time.time() < ctrl[1] + ctrl[3] and ctrl[2] == 0.0:  # noqa: ASYNC110 - shared memory
            await asyncio.sleep(0.05)
    q.put(("result", index, {
        "points": ST.points, "msgs": ST.msgs, "bytes": ST.bytes, "samples": ST.samples,
        "app_samples": ST.app_samples, "delays": ST.delays, "lat_max": ST.lat_max,
        "app_lat_max": ST.app_lat_max, "reads": ST.reads, "stamped": ST.stamped,
        "times": sorted(ST.times), "lost": ST.lost, "connected": len(readers),
    }))
    ST.closing = True
    for r in readers:
        r.close(abort=True)
    await asyncio.sleep(0.1)


# --- the parent ----------------------------------------------------------------------------------


@dataclass
class Load:
    """A running set of reader processes."""

    spec: LoadSpec
    procs: list[Any] = field(default_factory=list)
    q: Any = None
    ctrl: Any = None
    connected: int = 0
    connect_errors: list[str] = field(default_factory=list)
    failed: int = 0
    connect_s: float = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]


def start_load(spec: LoadSpec, timeout: float | None = None) -> Load:
    """Start the workers and wait until every reader is connected and subscribed."""
    raise_fd_limit()
    ctx = mp.get_context("fork")
    workers = spec.workers or max(2, min(4, math.ceil(spec.readers / 2500)))
    workers = max(1, min(workers, spec.readers))
    load = Load(spec, q=ctx.Queue(), ctrl=ctx.Array("d", [0.0, 0.0, 0.0, 2.0]))
    base, extra = divmod(spec.readers, workers)
    t0 = time.monotonic()
    for i in range(workers):
        n = base + (1 if i < extra else 0)
        p = ctx.Process(target=_worker, args=(spec, i, n, load.q, load.ctrl), daemon=True)
        p.start()
        load.procs.append(p)
    pending = set(range(workers))
    deadline = time.monotonic() + (timeout or spec.connect_budget + 60)
    while pending and time.monotonic() < deadline:
        try:
            msg = load.q.get(timeout=1.0)
        except queue.Empty:
            if not any(p.is_alive() for p in load.procs):
                break
            continue
        if msg[0] == "ready":
            pending.discard(msg[1])
            load.connected += msg[2]
            load.connect_errors += msg[3]
            load.failed += msg[4]
        elif msg[0] == "error":
            pending.discard(msg[1])
            load.connect_errors.append(msg[2])
    load.connect_s = time.monotonic() - t0
    return load


def measure(load: Load, server_pid: int, warmup: float, duration: float, grace: float = 2.0,
            during: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one measurement window on a started load; returns the aggregated figures."""
    now = time.time()
    start = math.ceil(now + warmup)  # whole seconds: generated times are on a grid
    end = start + duration
    load.ctrl[3] = grace
    load.ctrl[1] = end
    load.ctrl[0] = start
    time.sleep(max(0.0, start - time.time()))
    m0, w0, b0 = mark([server_pid]), mark(load.pids), system_busy()
    if during is not None:
        during()
    time.sleep(max(0.0, end - time.time()))
    m1, w1, b1 = mark([server_pid]), mark(load.pids), system_busy()
    rss = rss_bytes(server_pid)
    results = _collect(load, "result", end + grace + 60)
    out = _aggregate(load, results, duration, m0, m1, w0, w1, rss)
    busy = (b1 - b0) / max(1e-9, m1.wall - m0.wall)
    out["other_cpu"] = max(0.0, busy - out["server_cpu"] - out["client_cpu"])
    return out


def _collect(load: Load, kind: str, until: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    want = len(load.procs)
    while len(out) < want and time.time() < until:
        try:
            msg = load.q.get(timeout=1.0)
        except queue.Empty:
            if not any(p.is_alive() for p in load.procs):
                break
            continue
        if msg[0] == kind:
            out.append(msg[2])
        elif msg[0] == "error":
            want -= 1
    return out


def _aggregate(load: Load, results: list[dict[str, Any]], duration: float, m0: CpuMark, m1: CpuMark,
               w0: CpuMark, w1: CpuMark, rss: int) -> dict[str, Any]:
    samples: list[float] = []
    app_samples: list[float] = []
    delays: list[float] = []
    times: set[int] = set()
    for r in results:
        samples += r["samples"]
        app_samples += r["app_samples"]
        delays += r["delays"]
        times.update(r["times"])
    reads = sum(r["reads"] for r in results)
    points = sum(r["points"] for r in results)
    return {
        "readers": load.spec.readers,
        "connected": load.connected,
        "connect_failed": load.failed,
        "connect_errors": load.connect_errors[:3],
        "connect_s": round(load.connect_s, 2),
        "lost": sum(r["lost"] for r in results),
        "points": points,
        "msgs": sum(r["msgs"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "distinct_times": len(times),
        "points_per_s": points / duration,
        "msgs_per_s": sum(r["msgs"] for r in results) / duration,
        # latency by kernel receipt (the server's latency) ...
        "lat_p50_ms": percentile(samples, 50),
        "lat_p99_ms": percentile(samples, 99),
        "lat_max_ms": max((r["lat_max"] for r in results), default=None),
        "lat_samples": len(samples),
        # ... and by app receipt (plus the reader processes' own delay: the old definition)
        "lat_app_p50_ms": percentile(app_samples, 50),
        "lat_app_p99_ms": percentile(app_samples, 99),
        "lat_app_max_ms": max((r["app_lat_max"] for r in results), default=None),
        "app_delay_p50_ms": percentile(delays, 50),
        "app_delay_p99_ms": percentile(delays, 99),
        "app_delay_max_ms": max(delays, default=None),
        "kernel_stamped_pct": round(100 * sum(r["stamped"] for r in results) / max(1, reads), 2),
        "server_cpu": cpu_share(m0, m1),
        "client_cpu": cpu_share(w0, w1),
        "server_rss": rss,
        "duration_s": duration,
    }


def stop_load(load: Load) -> None:
    load.ctrl[2] = 1.0
    for p in load.procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join(5)
    with contextlib.suppress(Exception):
        load.q.close()


def run_readers(spec: LoadSpec, server_pid: int, warmup: float, duration: float,
                during: Callable[[], None] | None = None) -> dict[str, Any]:
    """Connect ``spec.readers`` readers, measure one window, disconnect. Adds ``rss_before``."""
    rss0 = rss_bytes(server_pid)
    load = start_load(spec)
    try:
        rss_connected = rss_bytes(server_pid)
        out = measure(load, server_pid, warmup, duration, during=during)
    finally:
        stop_load(load)
    out["rss_before"] = rss0
    out["rss_connected"] = rss_connected
    out["rss_per_conn"] = (rss_connected - rss0) / max(1, out["connected"])
    return out


def sockets_open() -> int:
    return len(os.listdir("/proc/self/fd"))
