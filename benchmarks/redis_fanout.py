"""Fan-out latency through the cluster, for ``benchmarks.redis_scale`` (see its docstring).

One publisher process pushes numbered points; raw-socket WebSocket subscribers in worker
processes check that every point arrives once, in order, and bin its latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import time
from collections import Counter
from typing import Any

import msgspec

from benchmarks.common import (
    HOST,
    hist_percentile,
    now_ms,
    raise_fd_limit,
)
from benchmarks.loadgen import ws_frame, ws_handshake
from benchmarks.redis_load import Cluster, Options, cpu_pct

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
        transport.write(ws_handshake("/api/ws", self.port))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = now_ms()
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
            self.transport.write(ws_frame(msgspec.json.encode(
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
                self.transport.write(ws_frame(payload, 0xA))
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
            t = int(now_ms())
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
            "lat_p50_ms": hist_percentile(hist, 50),
            "lat_p99_ms": hist_percentile(hist, 99),
            "lat_max_ms": max(hist) / 10 if hist else None,
            "push_p50_ms": pub_res.get("push_p50_ms"),
            "push_p99_ms": pub_res.get("push_p99_ms"),
            "cpu_pct": cpu_pct(c0, c1, w1 - w0)[0],
            "box_busy_pct": cpu_pct(c0, c1, w1 - w0)[1],
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
