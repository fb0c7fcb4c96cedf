"""The cluster under test and its push load, for ``benchmarks.redis_scale`` (see its docstring).

``Cluster``: ``k`` ``livedata serve`` processes on the memory broker (k = 1) or one shared Redis.
``run_push``: push client processes measure points/s of line protocol or JSON columnar.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from benchmarks.common import (
    ServerProc,
    cpu_seconds,
    livedata_server,
    now_ms,
    system_busy,
)
from benchmarks.redis_server import RedisServer, command


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
                command(self.redis.port, "FLUSHALL")

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
        raw = command(self.redis.port, "HGET", f"{self.prefix}m:{channel}", "n")
        return int(raw) if raw else 0


def cpu_pct(c0: list[float], c1: list[float], wall: float) -> tuple[list[float], float]:
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
            ts = int(now_ms()) - 60_000
            seq = 0
            while time.time() < t_end and stats["requests"] < max_requests:
                ts = max(ts, int(now_ms()) - 60_000)
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
    out["cpu_pct"], out["box_busy_pct"] = cpu_pct(c0, c1, w1 - w0)
    if cluster.broker == "redis":
        stored = {ch: cluster.redis_points(ch) for ch in acked}
        # Every acknowledged point is in Redis (a request that timed out may be stored unacknowledged).
        out["stored_check"] = all(stored[ch] >= acked[ch] for ch in acked) and bool(acked)
        out["acked_total"] = sum(acked.values())
        out["stored_total"] = sum(stored.values())
    return out
