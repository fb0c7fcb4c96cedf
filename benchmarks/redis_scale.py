"""Scaling out through Redis: push throughput, fan-out latency and server CPU with 1..3 servers.

    python -m benchmarks.redis_scale [--quick] [--runs N] [--servers 1,2,3] [--aof everysec]

For the memory broker (one ``livedata serve``, the baseline) and for ``--broker redis://...``
with 1, 2 and 3 ``livedata serve`` processes sharing one ``redis-server`` (started here on a free
loopback port with a temp dir):

1. **Push throughput.** Client processes (multiprocessing, aiohttp, ``--conc`` requests in flight
   each) push 5,000-point batches, spread over every server and over a few channels (one per
   in-flight slot, so no point is late): Influx line protocol
   (``bench,host=h{i%10} v=...,n={i}i {ts}``, ``precision=ms``) and JSON columnar
   (``{"time":[...],"v":[...],"n":[...]}``). Points/s = points answered ``204`` in the window.
   Through Redis the channels' point counters are checked against the acknowledged points.
2. **Fan-out latency.** One publisher pushes 10 points every 10 ms (``time`` = wall-clock ms) to
   server A; ``--subs`` WebSocket subscribers per server (raw sockets, several processes) subscribe
   with no ``from``. Every subscriber must receive every point published in the window, once, in
   order; latency = receipt time - point time, over every point.
3. **Server CPU** per process (and ``redis-server``'s) from ``/proc/PID/stat`` over each window.

Writes ``benchmarks/results/redis_latest.{json,md}`` (and ``redis_reference.md`` after a full
run). Everything talks to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import queue
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from tests.redis_server import REDIS_SERVER, RedisServer

from benchmarks.common import (
    RESULTS,
    ServerProc,
    cpu_seconds,
    livedata_server,
    machine_facts,
    raise_fd_limit,
    system_busy,
)

HOST = "127.0.0.1"
LP_TARGET = 100_000.0
"""Points/s of line protocol through Redis."""
LAT_RATIO_TARGET = 2.0
"""Fan-out p99 through Redis at most this many times the memory broker's."""


@dataclass
class Options:
    servers: list[int] = field(default_factory=lambda: [1, 2, 3])
    runs: int = 1
    duration: float = 8.0
    """Seconds measured per throughput window and per latency window."""
    warmup: float = 1.5
    batch: int = 5000
    clients: int = 4
    """Push client processes."""
    conc: int = 2
    """Requests in flight per push client."""
    subs: int = 100
    """WebSocket subscribers per server."""
    sub_workers: int = 2
    pub_points: int = 10
    pub_every_ms: float = 10.0
    aof: str = "no"
    """``no``, ``everysec`` or ``always`` (the redis-server's appendfsync)."""
    memory: bool = True
    quick: bool = False


# --- small helpers -----------------------------------------------------------------------------------


def _now_ms() -> float:
    return time.time() * 1000.0


def _pct(hist: Counter[int], q: float, scale: float = 10.0) -> float | None:
    """Percentile ``q`` of a histogram of values binned by 1/scale."""
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


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _post(url: str, body: bytes, ctype: str, timeout: float = 10.0) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _redis_cmd(port: int, *args: str) -> Any:
    """One command over a raw socket (no client library in the parent); bulk/int/array replies."""
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection((HOST, port), timeout=5) as s:
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


def _redis_version() -> str:
    try:
        out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return "-"
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()[:40]


# --- the cluster -------------------------------------------------------------------------------------


class Cluster:
    """``k`` ``livedata serve`` processes on the memory broker (k = 1) or one shared Redis."""

    def __init__(self, broker: str, k: int, redis: RedisServer | None) -> None:
        self.broker = broker
        self.redis = redis
        self.prefix = f"rs{os.getpid()}x{time.time_ns() % 10**9}:"
        args: list[str] = ["--retention-points", "200000"]
        if broker == "redis":
            assert redis is not None
            args += ["--broker", redis.url, "--redis-prefix", self.prefix]
        self.servers: list[ServerProc] = [livedata_server(*args) for _ in range(k)]

    def __enter__(self) -> Cluster:
        try:
            for s in self.servers:
                s.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        if self.redis is not None and self.broker == "redis":
            with contextlib.suppress(OSError, ValueError):
                _redis_cmd(self.redis.port, "FLUSHALL")

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    def cpu(self) -> list[float]:
        """CPU seconds of each server (then redis-server's), then the whole box's busy seconds."""
        return [*self._procs_cpu(), system_busy()]

    def _procs_cpu(self) -> list[float]:
        pids = self.pids + ([self.redis.proc.pid] if self.redis is not None and self.redis.proc and
                            self.broker == "redis" else [])
        return [cpu_seconds(p) for p in pids]

    def redis_points(self, channel: str) -> int:
        assert self.redis is not None
        raw = _redis_cmd(self.redis.port, "HGET", f"{self.prefix}m:{channel}", "n")
        return int(raw) if raw else 0


def _cpu_pct(c0: list[float], c1: list[float], wall: float) -> tuple[list[float], float]:
    """(% of a core per process, % of a core the whole box was busy) between two ``Cluster.cpu()``."""
    pct = [round(100 * (b - a) / max(1e-9, wall), 1) for a, b in zip(c0, c1, strict=True)]
    return pct[:-1], pct[-1]


# --- push throughput -----------------------------------------------------------------------------------


def _lp_body(n: int, ts0: int, seq0: int) -> bytes:
    # 10 points per ms, so a batch spans n/10 ms.
    return "\n".join(
        f"bench,host=h{i % 10} v={(seq0 + i) % 1000 / 10},n={seq0 + i}i {ts0 + i // 10}" for i in range(n)
    ).encode()


def _json_body(n: int, ts0: int, seq0: int) -> bytes:
    return msgspec.json.encode({
        "time": [ts0 + i // 10 for i in range(n)],
        "v": [(seq0 + i) % 1000 / 10 for i in range(n)],
        "n": list(range(seq0, seq0 + n)),
    })


def _channel_of(kind: str, cid: int, slot: int) -> tuple[str, str]:
    """(URL channel, stored channel): line protocol stores into ``{url}/{measurement}``."""
    base = f"tp-{kind}-c{cid}s{slot}"
    return base, (f"{base}/bench" if kind == "lp" else base)


def _push_worker(urls: list[str], cid: int, kind: str, batch: int, conc: int, t_begin: float, t_measure: float,
                 t_end: float, q: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        res = asyncio.run(_push_main(urls, cid, kind, batch, conc, t_begin, t_measure, t_end))
    except Exception as exc:  # report, never hang the parent
        res = {"error": f"{type(exc).__name__}: {exc}"}
    q.put(res)


async def _push_main(urls: list[str], cid: int, kind: str, batch: int, conc: int, t_begin: float,
                     t_measure: float, t_end: float) -> dict[str, Any]:
    import aiohttp

    make = _lp_body if kind == "lp" else _json_body
    ctype = "text/plain" if kind == "lp" else "application/json"
    query = "?precision=ms" if kind == "lp" else ""
    stats = {"points": 0, "requests": 0, "errors": 0, "acked_total": 0, "sent_total": 0}
    lat: list[float] = []
    samples: list[str] = []
    acked: dict[str, int] = {}
    max_requests = 100_000
    await asyncio.sleep(max(0.0, t_begin - time.time()))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def slot(s: int) -> None:
            g = cid * conc + s
            url_ch, stored = _channel_of(kind, cid, s)
            url = f"{urls[g % len(urls)]}/api/push/{url_ch}{query}"
            ts = int(_now_ms()) - 60_000
            seq = 0
            while time.time() < t_end and stats["requests"] < max_requests:
                ts = max(ts, int(_now_ms()) - 60_000)
                body = make(batch, ts, seq)
                ts += batch // 10 + 1
                seq += batch
                t0 = time.time()
                stats["sent_total"] += batch
                try:
                    async with session.post(url, data=body, headers={"Content-Type": ctype}) as r:
                        status = r.status
                        text = await r.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, text = -1, str(exc).encode()
                t1 = time.time()
                stats["requests"] += 1
                if status == 204:
                    # Redis counts rows: the line protocol body's 10 hosts per ms share a row.
                    acked[stored] = acked.get(stored, 0) + (-(-batch // 10) if kind == "lp" else batch)
                    stats["acked_total"] += batch
                    if t_measure <= t1 <= t_end:
                        stats["points"] += batch
                        lat.append((t1 - t0) * 1000)
                else:
                    stats["errors"] += 1
                    if len(samples) < 3:
                        samples.append(f"{status}: {text[:200]!r}")
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(slot(s) for s in range(conc)))
    return {**stats, "req_ms": lat, "error_samples": samples, "acked": acked}


def run_push(cluster: Cluster, kind: str, opts: Options) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    t_begin = time.time() + 1.5  # spawn time
    t_measure = t_begin + opts.warmup
    t_end = t_measure + opts.duration
    procs = [ctx.Process(target=_push_worker, args=(cluster.urls, c, kind, opts.batch, opts.conc, t_begin,
                                                    t_measure, t_end, q), daemon=True)
             for c in range(opts.clients)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, t_measure - time.time()))
    c0, w0 = cluster.cpu(), time.monotonic()
    time.sleep(max(0.0, t_end - time.time()))
    c1, w1 = cluster.cpu(), time.monotonic()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(results) < len(procs) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            results.append(q.get(timeout=1.0))
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    points = sum(r["points"] for r in ok)
    lat = sorted(x for r in ok for x in r["req_ms"])
    acked: dict[str, int] = {}
    for r in ok:
        for ch, n in r["acked"].items():
            acked[ch] = acked.get(ch, 0) + n
    out: dict[str, Any] = {
        "kind": kind,
        "points_per_s": round(points / opts.duration, 1),
        "points": points,
        "requests": sum(r["requests"] for r in ok),
        "errors": sum(r["errors"] for r in ok) + len(errors) + (len(procs) - len(results)),
        "error_samples": [s for r in ok for s in r["error_samples"]][:3] + errors[:3],
        "req_p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
        "req_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
    }
    out["cpu_pct"], out["box_busy_pct"] = _cpu_pct(c0, c1, w1 - w0)
    if cluster.broker == "redis":
        stored = {ch: cluster.redis_points(ch) for ch in acked}
        # Every acknowledged point is in Redis (a request that timed out may be stored unacknowledged).
        out["stored_check"] = all(stored[ch] >= acked[ch] for ch in acked) and bool(acked)
        out["acked_total"] = sum(acked.values())
        out["stored_total"] = sum(stored.values())
    return out


# --- fan-out latency -------------------------------------------------------------------------------


def _ws_handshake(path: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def _ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


_decode_msg = msgspec.json.Decoder().decode


class Sub(asyncio.Protocol):
    """One raw WebSocket subscriber: counts every point, checks order and loss, bins latency."""

    def __init__(self, port: int, channel: str, hist: Counter[int], ready: Any) -> None:
        self.port = port
        self.channel = channel
        self.hist = hist
        self.ready_counter = ready
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.n_col: int | None = None
        self.got_warm = False
        self.next_n = 0
        self.received = 0
        self.dup = 0
        self.gaps = 0
        self.msgs = 0
        self.errors: list[str] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(_ws_handshake("/api/ws", self.port))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = _now_ms()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if buf[9:12] != b"101":
                self.errors.append(bytes(buf[:200]).decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_ws_frame(msgspec.json.encode(
                {"type": "subscribe", "id": "A", "channel": self.channel})))
            if not self.connected.done():
                self.connected.set_result(None)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, ln = buf[pos], buf[pos + 1] & 0x7F
            h = pos + 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                h = pos + 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                h = pos + 10
            if n - h < ln:
                break
            payload = bytes(buf[h:h + ln])
            pos = h + ln
            op = b0 & 0x0F
            if op == 0x1:
                self._message(payload, now)
            elif op == 0x9 and self.transport is not None:
                self.transport.write(_ws_frame(payload, 0xA))
            elif op == 0x8:
                self.errors.append(f"closed by the server: {payload[2:100]!r}")
                if self.transport is not None:
                    self.transport.close()
        if pos:
            del buf[:pos]

    def _message(self, payload: bytes, now: float) -> None:
        msg = _decode_msg(payload)
        kind = msg.get("type")
        if kind != "data":
            if kind in ("error", "notice", "complete") and len(self.errors) < 5:
                self.errors.append(payload[:200].decode(errors="replace"))
            return
        self.msgs += 1
        frame = msg.get("frame") or {}
        schema = frame.get("schema")
        if schema is not None:
            names = [f.get("name") for f in schema.get("fields", [])]
            self.n_col = names.index("n") if "n" in names else None
        values = (frame.get("data") or {}).get("values") or []
        if not values or not values[0] or self.n_col is None:
            return
        times, ns = values[0], values[self.n_col]
        hist = self.hist
        for t, k in zip(times, ns, strict=True):
            if k is None:
                continue
            if k < 0:
                if not self.got_warm:
                    self.got_warm = True
                    with self.ready_counter.get_lock():
                        self.ready_counter.value += 1
                continue
            k = int(k)
            if k == self.next_n:
                self.next_n += 1
                self.received += 1
            elif k < self.next_n:
                self.dup += 1
            else:
                self.gaps += 1
                self.received += 1
                self.next_n = k + 1
            hist[int((now - t) * 10)] += 1


def _sub_worker(targets: list[tuple[int, int]], channel: str, ready: Any, expected: Any, t_stop: Any,
                q: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    raise_fd_limit()
    try:
        res = asyncio.run(_sub_main(targets, channel, ready, expected, t_stop))
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    q.put({**res, "who": "sub"})


async def _sub_main(targets: list[tuple[int, int]], channel: str, ready: Any, expected: Any,
                    t_stop: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    hist: Counter[int] = Counter()
    subs: list[Sub] = []
    for port, count in targets:
        for _ in range(count):
            sub = Sub(port, channel, hist, ready)
            await loop.create_connection(lambda s=sub: s, HOST, port)  # type: ignore[misc]
            await asyncio.wait_for(sub.connected, 10)
            subs.append(sub)
    # Until the parent says how many points were published (or the hard stop), then until every
    # subscriber has them all (bounded by the stop time).
    hard = time.time() + 600
    while time.time() < min(hard, t_stop.value or hard):
        want = expected.value
        if want >= 0 and all(s.received + 0 >= want or s.closed for s in subs):
            break
        await asyncio.sleep(0.05)
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    want = expected.value
    return {
        "hist": dict(hist),
        "subs": len(subs),
        "received": [s.received for s in subs],
        "lost": sum(max(0, want - s.received) for s in subs) if want >= 0 else None,
        "dup": sum(s.dup for s in subs),
        "gaps": sum(s.gaps for s in subs),
        "msgs": sum(s.msgs for s in subs),
        "closed_early": sum(1 for s in subs if s.closed and s.received < want),
        "errors": [e for s in subs for e in s.errors][:5],
    }


def _pub_worker(url: str, channel: str, points: int, every_ms: float, go: Any, warm_ok: Any, t_limit: float,
                duration: float, q: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        res = asyncio.run(_pub_main(url, channel, points, every_ms, go, warm_ok, t_limit, duration))
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    q.put({**res, "who": "pub"})


async def _pub_main(url: str, channel: str, points: int, every_ms: float, go: Any, warm_ok: Any, t_limit: float,
                    duration: float) -> dict[str, Any]:
    import aiohttp

    push = f"{url}/api/push/{channel}"
    headers = {"Content-Type": "application/json"}
    every = every_ms / 1000
    seq = 0
    published = 0
    errors: list[str] = []
    req_ms: list[float] = []
    measuring = False
    t_stop = time.time() + 1e9
    nxt = time.time()
    batches = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.time() < t_limit and batches < 1_000_000:
            if not measuring and go.value:
                measuring = True
                t_stop = time.time() + duration
                nxt = time.time()
            if measuring and time.time() >= t_stop:
                break
            t = int(_now_ms())
            ns = list(range(seq, seq + points)) if measuring else [-1] * points
            body = msgspec.json.encode({"time": [t] * points, "n": ns})
            t0 = time.time()
            try:
                async with session.post(push, data=body, headers=headers) as r:
                    status = r.status
                    text = await r.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, text = -1, str(exc).encode()
            batches += 1
            if status == 204:
                warm_ok.value = 1
                if measuring:
                    seq += points
                    published += points
                    req_ms.append((time.time() - t0) * 1000)
            elif len(errors) < 5:
                errors.append(f"{status}: {text[:200]!r}")
            nxt += every
            await asyncio.sleep(max(0.0, nxt - time.time()))
    req_ms.sort()
    return {"published": published if measuring else -1, "errors": errors,
            "push_p50_ms": round(req_ms[len(req_ms) // 2], 2) if req_ms else None,
            "push_p99_ms": round(req_ms[min(len(req_ms) - 1, int(0.99 * len(req_ms)))], 2) if req_ms else None}


def run_latency(cluster: Cluster, opts: Options, per_server: int | None = None) -> dict[str, Any]:
    """Fan-out through ``cluster``: ``per_server`` (default ``opts.subs``) subscribers on each server."""
    per = per_server or opts.subs
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    ready = ctx.Value("i", 0)
    expected = ctx.Value("q", -1)
    t_stop = ctx.Value("d", 0.0)
    go = ctx.Value("i", 0)
    warm_ok = ctx.Value("i", 0)
    channel = f"lat-{time.time_ns() % 10**9}"
    t_limit = time.time() + 120 + opts.duration
    pub = ctx.Process(target=_pub_worker, args=(cluster.urls[0], channel, opts.pub_points, opts.pub_every_ms, go,
                                                warm_ok, t_limit, opts.duration, q), daemon=True)
    pub.start()
    procs: list[Any] = [pub]
    out: dict[str, Any] = {"subscribers": per * len(cluster.servers)}
    try:
        deadline = time.monotonic() + 30
        while not warm_ok.value and time.monotonic() < deadline:
            time.sleep(0.05)
        if not warm_ok.value:
            raise RuntimeError("the publisher could not push the warm-up points")
        # Subscribers: every server gets ``per``, spread over the worker processes.
        ports = [s.port for s in cluster.servers]
        workers = max(1, min(opts.sub_workers, per * len(ports)))
        plan: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
        for port in ports:
            for w in range(workers):
                n = per // workers + (1 if w < per % workers else 0)
                if n:
                    plan[w].append((port, n))
        subs_procs = [ctx.Process(target=_sub_worker, args=(plan[w], channel, ready, expected, t_stop, q),
                                  daemon=True) for w in range(workers)]
        for p in subs_procs:
            p.start()
        procs += subs_procs
        total = per * len(ports)
        deadline = time.monotonic() + 60
        while ready.value < total and time.monotonic() < deadline:
            time.sleep(0.05)
        if ready.value < total:
            raise RuntimeError(f"only {ready.value} of {total} subscribers received the warm-up points")
        c0, w0 = cluster.cpu(), time.monotonic()
        go.value = 1
        pub_res: dict[str, Any] | None = None
        others: list[dict[str, Any]] = []
        deadline = time.monotonic() + opts.duration + 30
        while pub_res is None and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                r = q.get(timeout=0.5)
                if r["who"] == "pub":
                    pub_res = r
                else:
                    others.append(r)
        c1, w1 = cluster.cpu(), time.monotonic()
        if pub_res is None or "published" not in pub_res:
            raise RuntimeError(f"the publisher failed: {pub_res}")
        t_stop.value = time.time() + 5.0
        expected.value = pub_res["published"]
        sub_res = others
        deadline = time.monotonic() + 20
        while len(sub_res) < len(subs_procs) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                sub_res.append(q.get(timeout=0.5))
        hist: Counter[int] = Counter()
        bad = [r["error"] for r in sub_res if "error" in r]
        good = [r for r in sub_res if "error" not in r]
        for r in good:
            hist.update({int(k): v for k, v in r["hist"].items()})
        received = [x for r in good for x in r["received"]]
        want = pub_res["published"]
        out.update({
            "published": want,
            "delivered": sum(received),
            "expected": want * total,
            "lost": sum(max(0, want - x) for x in received) + want * (total - len(received)),
            "dup": sum(r["dup"] for r in good),
            "gaps": sum(r["gaps"] for r in good),
            "msgs": sum(r["msgs"] for r in good),
            "lat_p50_ms": _pct(hist, 50),
            "lat_p99_ms": _pct(hist, 99),
            "lat_max_ms": max(hist) / 10 if hist else None,
            "push_p50_ms": pub_res.get("push_p50_ms"),
            "push_p99_ms": pub_res.get("push_p99_ms"),
            "cpu_pct": _cpu_pct(c0, c1, w1 - w0)[0],
            "box_busy_pct": _cpu_pct(c0, c1, w1 - w0)[1],
            "error_samples": (pub_res.get("errors") or []) + bad + [e for r in good for e in r["errors"]][:5],
        })
    finally:
        t_stop.value = time.time()
        for p in procs:
            p.join(3)
            if p.is_alive():
                p.kill()
                p.join(1)
    return out


# --- one configuration, all runs ---------------------------------------------------------------------


def run_config(broker: str, k: int, redis: RedisServer | None, opts: Options) -> dict[str, Any]:
    with Cluster(broker, k, redis) as cluster:
        out: dict[str, Any] = {"broker": broker, "servers": k}
        out["lp"] = run_push(cluster, "lp", opts)
        print(f"  {broker} x{k} line protocol: {out['lp']['points_per_s']:,.0f} points/s "
              f"cpu {out['lp']['cpu_pct']} errors {out['lp']['errors']}", flush=True)
        out["json"] = run_push(cluster, "json", opts)
        print(f"  {broker} x{k} JSON columnar: {out['json']['points_per_s']:,.0f} points/s "
              f"cpu {out['json']['cpu_pct']} errors {out['json']['errors']}", flush=True)
        out["latency"] = run_latency(cluster, opts)
        parts = ["latency"]
        if broker == "memory":
            # The same subscribers as each Redis configuration, all on the one memory server: the
            # like-for-like baseline (the clients do the same work).
            for n in sorted({m * opts.subs for m in opts.servers if m > 1}):
                out[f"latency@{n}"] = run_latency(cluster, opts, n)
                parts.append(f"latency@{n}")
        for part in parts:
            lat = out[part]
            print(f"  {broker} x{k} fan-out to {lat['subscribers']}: p50 {lat['lat_p50_ms']} ms p99 "
                  f"{lat['lat_p99_ms']} ms max {lat['lat_max_ms']} ms lost {lat['lost']} dup {lat['dup']} "
                  f"cpu {lat['cpu_pct']}", flush=True)
    return out


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure over the runs of one configuration (losses and errors: the sum)."""
    first = runs[0]
    out: dict[str, Any] = {"broker": first["broker"], "servers": first["servers"], "runs": len(runs)}
    for part in [p for p in first if p.startswith(("lp", "json", "latency"))]:
        keys = [k for k, v in first[part].items() if isinstance(v, int | float) and not isinstance(v, bool)]
        agg: dict[str, Any] = {}
        for key in keys:
            vals = [r[part].get(key) for r in runs]
            if key in ("lost", "dup", "gaps", "errors"):
                agg[key] = sum(v or 0 for v in vals)
            elif all(isinstance(v, int) for v in vals):
                agg[key] = statistics.median_low(vals)
            else:
                agg[key] = _median(vals)
        cpus = [r[part]["cpu_pct"] for r in runs]
        agg["cpu_pct"] = [round(statistics.median(c[i] for c in cpus), 1) for i in range(len(cpus[0]))]
        agg["error_samples"] = [e for r in runs for e in r[part].get("error_samples", [])][:5]
        if "stored_check" in first[part]:
            agg["stored_check"] = all(r[part]["stored_check"] for r in runs)
        out[part] = agg
    return out


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _cpu_text(cpu: list[float], broker: str) -> str:
    if broker == "redis":
        return " / ".join(f"{c:.0f}" for c in cpu[:-1]) + f" (redis {cpu[-1]:.0f})"
    return " / ".join(f"{c:.0f}" for c in cpu)


def _memory_latency(mem: dict[str, Any] | None, subscribers: int) -> dict[str, Any] | None:
    """The memory broker's fan-out with this many subscribers (all on its one server)."""
    if mem is None:
        return None
    for part, v in mem.items():
        if part.startswith("latency") and v.get("subscribers") == subscribers:
            return dict(v)
    return None


def targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    mem = next((s for s in summary if s["broker"] == "memory"), None)
    for s in summary:
        name = f"{s['broker']} x{s['servers']}"
        if s["broker"] == "redis":
            lp = s["lp"]["points_per_s"]
            rows.append({"what": f"line protocol through Redis, {name}", "figure": lp,
                         "target": f">= {LP_TARGET:,.0f} points/s", "pass": lp is not None and lp >= LP_TARGET})
            p99 = s["latency"]["lat_p99_ms"]
            subs = s["latency"]["subscribers"]
            base = _memory_latency(mem, subs)
            mem_p99 = base["lat_p99_ms"] if base else None
            if mem_p99 is not None and p99 is not None:
                lim = LAT_RATIO_TARGET * max(mem_p99, 1.0)
                rows.append({"what": f"fan-out p99 through Redis, {name} ({subs} subs)", "figure": p99,
                             "target": f"<= 2 x memory p99 with {subs} subs ({mem_p99:.1f} ms) = {lim:.1f} ms",
                             "pass": p99 <= lim})
            rows.append({"what": f"acknowledged points all in Redis, {name}",
                         "figure": "yes" if s["lp"].get("stored_check") and s["json"].get("stored_check") else "no",
                         "target": "yes", "pass": bool(s["lp"].get("stored_check") and s["json"].get("stored_check"))})
        lats = [v for p, v in s.items() if p.startswith("latency")]
        lost = sum(v["lost"] + v["dup"] + v["gaps"] for v in lats)
        errs = s["lp"]["errors"] + s["json"]["errors"]
        rows.append({"what": f"fan-out lost + duplicate + out-of-order points, {name}", "figure": lost,
                     "target": "0", "pass": lost == 0 and all(v.get("delivered", 0) > 0 for v in lats)})
        rows.append({"what": f"failed pushes, {name}", "figure": errs, "target": "0", "pass": errs == 0})
    return rows


def markdown(result: dict[str, Any]) -> str:
    opts = result["options"]
    m = result["machine"]
    lines = [
        "# Scaling out through Redis",
        "",
        f"{m['date']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"redis-server {m['redis_server']} (appendfsync: {opts['aof']}), {result['mode']} run, "
        f"{opts['runs']} run(s) per configuration (medians).",
        "",
        f"Push: {opts['clients']} client processes x {opts['conc']} requests in flight, {opts['batch']:,}-point "
        f"batches, {opts['duration']:g} s windows after {opts['warmup']:g} s warm-up. Fan-out: "
        f"{opts['pub_points']} points every {opts['pub_every_ms']:g} ms pushed to server A, {opts['subs']} "
        f"WebSocket subscribers per server. CPU: % of one core per server process (and redis-server); "
        f"box busy: % of one core the whole machine was busy (clients and anything else running included; "
        f"{m['cores']} cores = {100 * (m['cores'] or 1)} %).",
        "",
        "| broker | servers | LP points/s | JSON points/s | push p99 ms (LP/JSON) | CPU % during LP | "
        "subs | fan-out p50 / p99 / max ms | lost/dup/misordered | CPU % during fan-out | "
        "box busy % (LP/JSON/fan-out) |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for s in result["summary"]:
        lp, js, lat = s["lp"], s["json"], s["latency"]
        lines.append(
            f"| {s['broker']} | {s['servers']} | {_fmt(lp['points_per_s'], 0)} | {_fmt(js['points_per_s'], 0)} | "
            f"{_fmt(lp['req_p99_ms'])} / {_fmt(js['req_p99_ms'])} | {_cpu_text(lp['cpu_pct'], s['broker'])} | "
            f"{_fmt(lat['subscribers'])} | {_fmt(lat['lat_p50_ms'])} / {_fmt(lat['lat_p99_ms'])} / "
            f"{_fmt(lat['lat_max_ms'])} | {_fmt(lat['lost'])}/{_fmt(lat['dup'])}/{_fmt(lat['gaps'])} | "
            f"{_cpu_text(lat['cpu_pct'], s['broker'])} | {_fmt(lp['box_busy_pct'], 0)} / "
            f"{_fmt(js['box_busy_pct'], 0)} / {_fmt(lat['box_busy_pct'], 0)} |")
        for part in sorted((p for p in s if p.startswith("latency@")), key=lambda p: int(p[8:])):
            lat = s[part]
            lines.append(
                f"| {s['broker']} | {s['servers']} | (fan-out only) | | | | {_fmt(lat['subscribers'])} | "
                f"{_fmt(lat['lat_p50_ms'])} / {_fmt(lat['lat_p99_ms'])} / {_fmt(lat['lat_max_ms'])} | "
                f"{_fmt(lat['lost'])}/{_fmt(lat['dup'])}/{_fmt(lat['gaps'])} | "
                f"{_cpu_text(lat['cpu_pct'], s['broker'])} | - / - / {_fmt(lat['box_busy_pct'], 0)} |")
    lines += ["", "| target | figure | wanted | |", "|---|---:|---|---|"]
    for t in result["targets"]:
        fig = t["figure"]
        lines.append(f"| {t['what']} | {_fmt(fig, 1) if not isinstance(fig, str) else fig} | {t['target']} | "
                     f"{'PASS' if t['pass'] else 'FAIL'} |")
    lines.append("")
    return "\n".join(lines)


def run(opts: Options, out_dir: Path | None = RESULTS, reference: bool | None = None) -> dict[str, Any]:
    raise_fd_limit()
    mode = "quick" if opts.quick else "full"
    configs: list[tuple[str, int]] = ([("memory", 1)] if opts.memory else []) + [("redis", k) for k in opts.servers]
    redis = RedisServer(appendonly=opts.aof != "no", fsync=opts.aof if opts.aof != "no" else "everysec").start()
    by_config: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
    try:
        for run_no in range(opts.runs):
            for broker, k in configs:
                print(f"run {run_no + 1}/{opts.runs}: {broker} x{k}", flush=True)
                by_config[(broker, k)].append(run_config(broker, k, redis if broker == "redis" else None, opts))
    finally:
        redis.close()
    summary = [_summarise(by_config[c]) for c in configs]
    machine = machine_facts()
    machine["redis_server"] = _redis_version()
    result: dict[str, Any] = {
        "mode": mode, "options": asdict(opts), "machine": machine, "summary": summary,
        "targets": targets(summary), "runs": {f"{b}x{k}": v for (b, k), v in by_config.items()},
    }
    md = markdown(result)
    result["markdown"] = md
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "redis_latest.json").write_text(json.dumps(result, indent=1, default=str))
        (out_dir / "redis_latest.md").write_text(md)
        if reference if reference is not None else not opts.quick:
            (out_dir / "redis_reference.md").write_text(md)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.redis_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short windows, 50 subscribers per server")
    ap.add_argument("--runs", type=int, default=None, help="runs per configuration, medians reported (1)")
    ap.add_argument("--servers", default="1,2,3", help="server counts through Redis (1,2,3)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per window (8; quick 3)")
    ap.add_argument("--subs", type=int, default=None, help="subscribers per server (100; quick 50)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--conc", type=int, default=2)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--aof", choices=["no", "everysec", "always"], default="no")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory baseline")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ns = ap.parse_args(argv)
    opts = Options(
        servers=[int(x) for x in ns.servers.split(",") if x.strip()],
        runs=ns.runs or 1,
        duration=ns.duration or (3.0 if ns.quick else 8.0),
        warmup=1.0 if ns.quick else 1.5,
        subs=ns.subs or (50 if ns.quick else 100),
        clients=ns.clients, conc=ns.conc, batch=ns.batch, aof=ns.aof, memory=not ns.no_memory, quick=ns.quick,
    )
    result = run(opts, ns.out)
    print()
    print(result["markdown"])
    return 0 if all(t["pass"] for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
