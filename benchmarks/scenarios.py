"""The bench scenarios. Each returns a flat dict of figures; targets are declared next to them.

Point = one value of one series at one time (a reference line, or one cell of a frame), so
"1 hour of 20 Hz x 10 series" is 720,000 points.
"""

from __future__ import annotations

import asyncio
import http.client
import math
import multiprocessing as mp
import random
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks import mqtt_bench
from benchmarks.common import HOST, ServerProc, cpu_seconds, floor_server, http_json, livedata_server, rss_bytes
from benchmarks.history import history_24h, ingest_lp_disk, restart_kill9
from benchmarks.loadgen import LoadSpec, run_readers
from benchmarks.scenario import Options, Scenario, Target, profile_during, stream_figures
from benchmarks.stalled import stalled_reader
from benchmarks.wsclient import WsClient, read_rows, rows_in, wait_data

# --- streaming to many readers ----------------------------------------------------------------------


def _with_floor(opts: Options, name: str, spec_for: Callable[[int], LoadSpec], floor_args: list[str],
                ld: dict[str, Any], series: int, ticks_per_s: float) -> dict[str, Any]:
    """Run the same load against the floor server and add livedata/floor ratios."""
    with floor_server(*floor_args) as fl:
        r = run_readers(spec_for(fl.port), fl.pid, opts.warmup, opts.duration)
    f = stream_figures(r, ld["expected_points_per_s"], series, ticks_per_s)
    out = dict(ld)
    out["floor_points_per_s"] = f["points_per_s"]
    out["floor_server_cpu_pct"] = f["server_cpu_pct"]
    out["floor_lat_p99_ms"] = f["lat_p99_ms"]
    out["floor_rss_per_conn_kib"] = f["rss_per_conn_kib"]
    out["throughput_vs_floor_pct"] = round(100 * ld["points_per_s"] / max(1.0, f["points_per_s"]), 1)
    out["cpu_vs_floor_x"] = round(ld["server_cpu"] / max(1e-6, f["server_cpu"]), 2)
    # points per CPU-second, livedata over floor: the "at equal CPU" figure
    eff_ld = ld["points_per_s"] / max(1e-6, ld["server_cpu"])
    eff_fl = f["points_per_s"] / max(1e-6, f["server_cpu"])
    out["efficiency_vs_floor_pct"] = round(100 * eff_ld / eff_fl, 1)
    out["floor_msgs_per_s"] = f["msgs_per_s"]
    out["floor_other_cpu_pct"] = f["other_cpu_pct"]
    # messages per CPU-second: livedata may coalesce a lagging reader's packets, the floor never does
    msg_ld = ld["msgs_per_s"] / max(1e-6, ld["server_cpu"])
    msg_fl = f["msgs_per_s"] / max(1e-6, f["server_cpu"])
    out["msg_efficiency_vs_floor_pct"] = round(100 * msg_ld / max(1e-6, msg_fl), 1)
    return out


def reference(num_series: int, readers: int, floor: bool = False) -> Callable[[Options], dict[str, Any]]:
    def run(opts: Options) -> dict[str, Any]:
        n = opts.n(readers)

        def spec(port: int) -> LoadSpec:
            return LoadSpec("ref", n, port, f"/?numSeries={num_series}", series=num_series, msgs_per_s=20)

        with livedata_server() as srv:
            r = run_readers(spec(srv.port), srv.pid, opts.warmup, opts.duration,
                            during=profile_during(opts, f"ref-{num_series}x{readers}", srv.pid))
        out = stream_figures(r, n * num_series * 20, num_series, 20)
        if floor:
            out = _with_floor(opts, "ref", spec, ["--interval", "50"], out, num_series, 20)
        return out

    return run


def ws_fanout(readers: int, floor: bool = False, carrier: str = "ws") -> Callable[[Options], dict[str, Any]]:
    sub = {"type": "subscribe", "id": "A", "channel": "random-walk", "interval": 100}

    def run(opts: Options) -> dict[str, Any]:
        n = opts.n(readers)

        def spec(port: int) -> LoadSpec:
            if carrier == "ws":
                return LoadSpec("ws", n, port, "/api/ws", sub, series=1, msgs_per_s=10)
            return LoadSpec("ndjson", n, port, "/api/stream?channel=random-walk&interval=100", series=1,
                            msgs_per_s=10)

        with livedata_server() as srv:
            primer = WsClient(srv.port)  # starts the generator (and its 1 h history) before the baseline
            primer.send({**sub, "id": "primer"})
            wait_data(primer)  # the generator has filled its hour of history: not in the baseline
            r = run_readers(spec(srv.port), srv.pid, opts.warmup, opts.duration,
                            during=profile_during(opts, f"{carrier}-{readers}", srv.pid))
            primer.close()
        out = stream_figures(r, n * 20, 1, 20)
        out["batch_ms"] = 100
        if floor:
            out = _with_floor(opts, carrier, spec, ["--batch", "100", "--rows", "2", "--series", "1"], out, 1, 20)
        return out

    return run


def ws_idle(readers: int) -> Callable[[Options], dict[str, Any]]:
    """Idle readers: connected and subscribed (live) to a pushed channel that publishes nothing."""
    sub = {"type": "subscribe", "id": "A", "channel": "bench/idle"}

    def run(opts: Options) -> dict[str, Any]:
        n = opts.n(readers)
        with livedata_server() as srv:
            http_json(srv.url + "/api/push/bench/idle", msgspec.json.encode({"time": [1], "v": [1.0]}))
            primer = WsClient(srv.port)
            primer.send(sub)
            wait_data(primer)
            r = run_readers(LoadSpec("ws", n, srv.port, "/api/ws", sub, series=1, msgs_per_s=0.01), srv.pid,
                            1.0, min(opts.duration, 5.0))
            primer.close()
        return {
            "readers": n, "connected": r["connected"], "connect_s": r["connect_s"], "lost": r["lost"],
            "server_cpu_pct": round(100 * r["server_cpu"], 2),
            "rss_before_mib": round(r["rss_before"] / (1 << 20), 1),
            "rss_mib": round(r["rss_connected"] / (1 << 20), 1),
            "rss_per_conn_kib": round(r["rss_per_conn"] / 1024, 2),
        }

    return run


# --- backfill ------------------------------------------------------------------------------------------


def _columnar_hour(rows: int, series: int, step: int, end_ms: int) -> tuple[bytes, int]:
    rng = random.Random(7)
    t0 = end_ms - (rows - 1) * step
    body: dict[str, list[Any]] = {"time": list(range(t0, end_ms + 1, step))}
    for s in range(series):
        v = rng.uniform(0, 100)
        col = []
        for _ in range(rows):
            v += rng.gauss(0, 1)
            col.append(round(v, 3))
        body[f"series{s}"] = col
    return msgspec.json.encode(body), t0


def backfill(opts: Options) -> dict[str, Any]:
    rows, series = (72_000, 10) if opts.scale >= 1 else (max(100, int(72_000 * opts.scale)), 10)
    # retention 2 h: history is kept (and served) by point time, so with the default hour the
    # first points would age out between the push and the read
    with livedata_server("--retention-points", "1000000", "--retention", "7200",
                         "--max-body-bytes", str(64 << 20)) as srv:
        body, t0 = _columnar_hour(rows, series, 50, int(time.time() * 1000))
        tp = time.perf_counter()
        status, text = http_json(srv.url + "/api/push/bench/backfill", body)
        push_s = time.perf_counter() - tp
        if status != 204:
            raise RuntimeError(f"push failed: {status} {text[:200]!r}")
        sub = {"type": "subscribe", "id": "B", "channel": "bench/backfill", "from": t0}
        # 1) to the last byte: count rows on the bytes, no parse
        c = WsClient(srv.port)
        c.recv()  # hello
        cpu0 = cpu_seconds(srv.pid)
        c.send(sub)
        got, wire_s = read_rows(c, rows, 30)
        cpu1 = cpu_seconds(srv.pid)
        wire_bytes = c.bytes_in
        c.close()
        # 2) parsed into columns by a Python reader
        parsed_rows, parse_s, how = _parse_backfill(srv.port, sub, rows, series)
    return {
        "points": rows * series, "rows": rows, "rows_received": got, "push_s": round(push_s, 3),
        "body_mib": round(len(body) / (1 << 20), 2), "wire_mib": round(wire_bytes / (1 << 20), 2),
        "last_byte_s": round(wire_s, 3), "parsed_s": round(parse_s, 3), "parsed_rows": parsed_rows,
        "parser": how, "server_cpu_s": round(cpu1 - cpu0, 3),
        "points_per_s_wire": round(rows * series / max(1e-9, wire_s)),
    }


class _Values(msgspec.Struct):
    values: list[list[Any]]


class _Frame(msgspec.Struct):
    data: _Values


class _Data(msgspec.Struct):
    type: str
    frame: _Frame | None = None


def _parse_backfill(port: int, sub: dict[str, Any], rows: int, series: int) -> tuple[int, float, str]:
    """Subscribe again and build the columns in Python: with ``livedata.client`` when it exists."""
    try:
        from livedata.client import Client, Frame
    except ImportError:
        return (*_parse_msgspec(port, sub, rows, series), "msgspec (livedata.client not available)")

    async def go() -> tuple[int, float]:
        async with Client(f"http://{HOST}:{port}") as c:
            await c.open()
            t0 = time.perf_counter()
            got = 0
            s = await c.subscribe(sub["channel"], from_=sub["from"])
            try:
                async with asyncio.timeout(30):  # rows that never come must not hang the bench
                    async for item in s:
                        if isinstance(item, Frame):
                            got += len(item)
                            if got >= rows:
                                break
            except TimeoutError:
                pass
            return got, time.perf_counter() - t0

    got, dt = asyncio.run(go())
    return got, dt, "livedata.client (Frame columns)"


def _parse_msgspec(port: int, sub: dict[str, Any], rows: int, series: int) -> tuple[int, float]:
    decode = msgspec.json.Decoder(_Data).decode
    c = WsClient(port)
    c.recv()
    t0 = time.perf_counter()
    c.send(sub)
    cols: list[list[Any]] = [[] for _ in range(series + 1)]
    got = 0
    while got < rows and time.perf_counter() - t0 < 30:
        raw = c.recv()
        if not raw.startswith(b'{"type":"data"'):
            continue
        msg = decode(raw)
        if msg.frame is None:
            continue
        values = msg.frame.data.values
        if values and values[0]:
            for col, new in zip(cols, values, strict=False):
                col.extend(new)
            got += len(values[0])
    dt = time.perf_counter() - t0
    c.close()
    return got, dt


# --- ingest ---------------------------------------------------------------------------------------------


def _lp_body(k: int, proc: int, lines: int) -> bytes:
    base_ns = (1_700_000_000_000 + (k * lines + proc * 10**9)) * 1_000_000
    return "".join([f"m,host=h{i % 10} value={(i * 7) % 1000 / 10} {base_ns + i * 1_000_000}\n"
                    for i in range(lines)]).encode()


def _json_body(k: int, proc: int, lines: int) -> bytes:
    rows = lines // 10
    t0 = 1_700_000_000_000 + k * rows + proc * 10**9
    body: dict[str, Any] = {"time": list(range(t0, t0 + rows))}
    for s in range(10):
        body[f"s{s}"] = [((i * 7 + s) % 1000) / 10 for i in range(rows)]
    return msgspec.json.encode(body)


def _otlp_body(k: int, proc: int, lines: int) -> bytes:
    """An OTLP/HTTP protobuf export: 10 gauges x lines/10 data points (distinct times), 2 attributes each."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    per = lines // 10
    base_ns = (1_700_000_000_000 + (k * per + proc * 10**9)) * 1_000_000
    metrics = []
    for s in range(10):
        points = [m.NumberDataPoint(time_unix_nano=base_ns + i * 1_000_000, as_double=((i * 7 + s) % 1000) / 10,
                                    attributes=[KeyValue(key="host", value=AnyValue(string_value=f"h{s}"))])
                  for i in range(per)]
        metrics.append(m.Metric(name=f"bench.m{s}", gauge=m.Gauge(data_points=points)))
    rm = m.ResourceMetrics(scope_metrics=[m.ScopeMetrics(metrics=metrics)])
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=f"bench-{proc}")))
    return ExportMetricsServiceRequest(resource_metrics=[rm]).SerializeToString()


# Per kind: the body maker, the request path for pusher ``proc``, the Content-Type, the success status.
INGEST_KINDS: dict[str, tuple[Callable[[int, int, int], bytes], Callable[[int], str], str, int]] = {
    "lp": (lambda k, p, n: _lp_body(k, p, n), lambda p: f"/api/push/bench/lp-{p}?precision=ns", "text/plain", 204),
    "json": (lambda k, p, n: _json_body(k, p, n), lambda p: f"/api/push/bench/json-{p}", "application/json", 204),
    "influx": (lambda k, p, n: _lp_body(k, p, n), lambda p: f"/api/v2/write?bucket=bench-influx-{p}&org=o&precision=ns",
               "text/plain; charset=utf-8", 204),
    "otlp": (lambda k, p, n: _otlp_body(k, p, n), lambda p: "/v1/metrics", "application/x-protobuf", 200),
}

LP_BODY_CAP = 400
"""Line-protocol bodies a pusher builds before the window (5,000 lines each, ~225 KB): enough for
400,000 points/s per pusher for 5 s; past that its bodies repeat (their times too)."""


def _pusher(port: int, kind: str, proc: int, seconds: float, lines: int, q: Any, go: Any) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    make, path_of, ctype, ok = INGEST_KINDS[kind]
    path = path_of(proc)
    points = requests = errors = 0
    last_error = ""
    # Bodies are built before the window, so the client costs next to no CPU in it (it shares the
    # machine with the server). Line protocol bodies carry strictly increasing times.
    count = min(LP_BODY_CAP, max(8, int(seconds * 400_000 / lines))) if kind in ("lp", "influx") else 8
    bodies = [make(k, proc, lines) for k in range(count)]
    q.put(("ready", proc))
    go.wait()
    t_end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < t_end:
        body = bodies[k % len(bodies)]
        k += 1
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        data = resp.read()
        requests += 1
        if resp.status == ok:
            points += lines
        else:
            errors += 1
            last_error = f"{resp.status} {data[:200]!r}"
            if errors > 3:
                break
    conn.close()
    q.put((points, requests, errors, last_error, k > len(bodies)))


def ingest(kind: str, *server_args: str) -> Callable[[Options], dict[str, Any]]:
    def run(opts: Options) -> dict[str, Any]:
        lines = 5000
        procs = 2
        seconds = max(2.0, opts.duration * 0.8)
        with livedata_server("--retention-points", "200000", *server_args) as srv:
            if kind == "lp":
                probe = b"probe,host=a value=1 1700000000000000000\n"
                status, text = http_json(srv.url + "/api/push/bench/probe", probe, "text/plain")
                if status != 204:
                    return {"skipped": f"line protocol push answers {status}: {text[:160].decode(errors='replace')}"}
            ctx = mp.get_context("fork")
            q = ctx.Queue()
            go = ctx.Event()
            ps = [ctx.Process(target=_pusher, args=(srv.port, kind, i, seconds, lines, q, go), daemon=True)
                  for i in range(procs)]
            for p in ps:
                p.start()
            for _ in ps:  # every pusher has its bodies built: nothing of that is in the window
                q.get(timeout=120)
            cpu0, t0 = cpu_seconds(srv.pid), time.monotonic()
            go.set()
            prof = profile_during(opts, f"ingest-{kind}", srv.pid)
            if prof is not None:
                prof()
            results = [q.get(timeout=seconds + 60) for _ in ps]
            wall = time.monotonic() - t0
            cpu1 = cpu_seconds(srv.pid)
            for p in ps:
                p.join(5)
            rss = rss_bytes(srv.pid)
        points = sum(r[0] for r in results)
        errors = sum(r[2] for r in results)
        out: dict[str, Any] = {
            "batch": lines, "clients": procs, "requests": sum(r[1] for r in results), "errors": errors,
            "points": points, "points_per_s": round(points / wall),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "cpu_s_per_100k_points": round((cpu1 - cpu0) / max(1, points) * 100_000, 4),
            "rss_mib": round(rss / (1 << 20), 1),
        }
        if errors:
            out["last_error"] = next(r[3] for r in results if r[3])
        if kind in ("lp", "influx"):
            out["unit"] = "1 line = 1 field = 1 point"
            out["bodies_repeated"] = any(r[4] for r in results)
        elif kind == "otlp":
            out["unit"] = "10 gauges x 500 data points = 5,000 points per request (protobuf)"
        else:
            out["unit"] = "500 rows x 10 series = 5,000 points per request"
        return out

    return run


# --- why streaming ------------------------------------------------------------------------------------


def why_streaming(opts: Options) -> dict[str, Any]:
    """One 10-series 20 Hz panel showing the last hour, kept live for 10 minutes.

    Time-compressed: each mode runs ``T`` seconds and is scaled to 600 s. Streaming = one backfill
    of the hour, then live messages. Polling = re-query the whole hour every 5 s (120 queries).
    CPU is net of the generator's own cost, measured first with no reader.
    """
    T = 10.0 if opts.quick or opts.scale < 1 else 30.0
    horizon = 600.0
    params = {"series": 10}
    # retention counts values: keep the whole hour of 20 Hz x 10 series (720,000)
    with livedata_server("--retention-points", "1000000") as srv:
        primer = WsClient(srv.port)
        primer.recv()
        primer.send({"type": "subscribe", "id": "p", "channel": "random-walk", "params": params})
        wait_data(primer)  # the generator's hour of history is filled
        primer.close()  # the generator keeps running (and keeps its hour) after its last reader
        time.sleep(3.0)

        def idle_rate() -> float:
            c0, w0 = cpu_seconds(srv.pid), time.monotonic()
            time.sleep(min(5.0, T / 2))
            return (cpu_seconds(srv.pid) - c0) / (time.monotonic() - w0)

        base_before = idle_rate()
        # streaming
        c = WsClient(srv.port)
        c.recv()
        cpu0 = cpu_seconds(srv.pid)
        t0 = time.monotonic()
        c.send({"type": "subscribe", "id": "A", "channel": "random-walk", "params": params, "from": "now-1h"})
        backfill_rows, _ = read_rows(c, 71_900, 30)
        t1 = time.monotonic()
        cpu1 = cpu_seconds(srv.pid)
        bytes_backfill = c.bytes_in
        live_rows = 0
        while time.monotonic() - t1 < T:
            msg = c.recv()
            if msg.startswith(b'{"type":"data"'):
                live_rows += rows_in(msg)
        t2 = time.monotonic()
        cpu2 = cpu_seconds(srv.pid)
        bytes_live = c.bytes_in - bytes_backfill
        c.close()
        stream_bytes = bytes_backfill + bytes_live / (t2 - t1) * horizon
        # polling
        queries = 0
        poll_bytes = 0
        cpu3, t3 = cpu_seconds(srv.pid), time.monotonic()
        next_q = t3
        path = "/api/stream?channel=random-walk&series=10&from=now-1h&to=now"
        while next_q < t3 + T:
            time.sleep(max(0.0, next_q - time.monotonic()))
            conn = http.client.HTTPConnection(HOST, srv.port, timeout=30)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            poll_bytes += len(body) + sum(len(k) + len(v) + 4 for k, v in resp.getheaders()) + 17
            conn.close()
            queries += 1
            next_q += 5.0
        t4 = time.monotonic()
        cpu4 = cpu_seconds(srv.pid)
        time.sleep(1.0)
        base_rate = (base_before + idle_rate()) / 2  # the generator alone, before and after
        stream_cpu_backfill = (cpu1 - cpu0) - base_rate * (t1 - t0)
        stream_cpu_live_rate = max(0.0, (cpu2 - cpu1) / (t2 - t1) - base_rate)
        stream_cpu = stream_cpu_backfill + stream_cpu_live_rate * horizon
        poll_cpu_net = (cpu4 - cpu3) - base_rate * (t4 - t3)
        per_query_bytes = poll_bytes / queries
        per_query_cpu = poll_cpu_net / queries
        poll_total_bytes = per_query_bytes * horizon / 5
        poll_total_cpu = per_query_cpu * horizon / 5
    gross_stream = (cpu1 - cpu0) + (cpu2 - cpu1) / (t2 - t1) * horizon
    gross_poll = (cpu4 - cpu3) / queries * horizon / 5
    net = stream_cpu > 0.005 and poll_total_cpu > 0
    return {
        "measured_s": T, "scaled_to_s": horizon, "backfill_rows": backfill_rows, "live_rows": live_rows,
        "queries_measured": queries,
        "stream_mib": round(stream_bytes / (1 << 20), 2), "poll_mib": round(poll_total_bytes / (1 << 20), 1),
        "stream_cpu_s": round(stream_cpu, 3), "poll_cpu_s": round(poll_total_cpu, 2),
        "stream_cpu_gross_s": round(gross_stream, 2), "poll_cpu_gross_s": round(gross_poll, 2),
        "poll_query_mib": round(per_query_bytes / (1 << 20), 2), "poll_query_cpu_s": round(per_query_cpu, 3),
        "bytes_ratio_x": round(poll_total_bytes / max(1.0, stream_bytes), 1),
        # net of the generator when both nets are measurable; else gross (generator included in both)
        "cpu_ratio_x": round(poll_total_cpu / stream_cpu if net else gross_poll / max(1e-3, gross_stream), 1),
        "cpu_ratio_basis": "net of generator" if net else "gross (generator included)",
        "generator_cpu_pct": round(100 * base_rate, 2),
    }


# --- the table of scenarios --------------------------------------------------------------------------

P99 = "p99 latency"
SCENARIOS: list[Scenario] = [
    Scenario("ref-10x1000", "original stream, numSeries=10, 1,000 readers", reference(10, 1000),
             (Target("100 % delivered", "all_delivered", ">=", 100.0, "%"),
              Target(P99, "lat_p99_ms", "<=", 100.0, "ms"))),
    Scenario("ref-10x2000", "original stream, numSeries=10, 2,000 readers (+ floor)", reference(10, 2000, floor=True),
             (Target("100 % delivered", "all_delivered", ">=", 100.0, "%"),
              Target(P99, "lat_p99_ms", "<=", 100.0, "ms"),
              Target(">= 70 % of floor at equal CPU", "efficiency_vs_floor_pct", ">=", 70.0, "%")), heavy=True),
    Scenario("ref-1x2000", "original stream, numSeries=1, 2,000 readers (+ floor)", reference(1, 2000, floor=True),
             (Target("server CPU", "server_cpu_pct", "<=", 25.0, "% of a core"),)),
    Scenario("ws-1k", "WebSocket, random-walk interval=100, 1,000 readers", ws_fanout(1000),
             (Target("100 % delivered", "all_delivered", ">=", 100.0, "%"),
              Target(P99 + " (batch 100 + 100)", "lat_p99_ms", "<=", 200.0, "ms"))),
    Scenario("ws-10k", "WebSocket, random-walk interval=100, 10,000 readers (+ floor)", ws_fanout(10_000, floor=True),
             (Target("100 % delivered", "all_delivered", ">=", 100.0, "%"),
              Target(P99 + " (batch 100 + 100)", "lat_p99_ms", "<=", 200.0, "ms"),
              Target("server CPU", "server_cpu_pct", "<=", 100.0, "% of a core"),
              Target(">= 70 % of floor at equal CPU", "efficiency_vs_floor_pct", ">=", 70.0, "%")), heavy=True),
    Scenario("stream-2k", "HTTP stream /api/stream NDJSON, random-walk interval=100, 2,000 readers",
             ws_fanout(2000, carrier="ndjson"),
             (Target("100 % delivered", "all_delivered", ">=", 100.0, "%"),
              Target(P99 + " (batch 100 + 100)", "lat_p99_ms", "<=", 200.0, "ms"))),
    Scenario("stalled-500", "WebSocket, one stalled reader among 500: the others' p99 with and without it",
             stalled_reader(500),
             (Target("p99 added by one stalled reader", "p99_delta_ms", "<=", 10.0, "ms"),
              Target("100 % delivered (healthy readers)", "all_delivered", ">=", 100.0, "%"),
              Target("stalled reader closed as slow", "slow_closed", ">=", 1.0),
              Target("stalled reader's queue <= buffer cap", "stalled_queue_max_kib", "<=", 1024.0, "KiB"))),
    Scenario("ws-idle-10k", "10,000 idle WebSocket readers (subscribed, no data)", ws_idle(10_000),
             (Target("RSS per connection", "rss_per_conn_kib", "<=", 16.0, "KiB"),)),
    Scenario("backfill", "backfill 1 h x 20 Hz x 10 series (720,000 points) to one WS reader", backfill,
             (Target("to the last byte", "last_byte_s", "<=", 1.0, "s"),
              Target("parsed by a Python reader", "parsed_s", "<=", 2.0, "s"))),
    Scenario("ingest-lp", "ingest: line protocol over HTTP, 5,000-line batches", ingest("lp"),
             (Target("ingest rate", "points_per_s", ">=", 300_000, "points/s"),)),
    Scenario("ingest-json", "ingest: JSON columnar over HTTP, 5,000-point batches", ingest("json"),
             (Target("ingest rate", "points_per_s", ">=", 500_000, "points/s"),)),
    Scenario("ingest-influx", "ingest: InfluxDB v2 write API (/api/v2/write), 5,000-line batches",
             ingest("influx"), (Target("ingest rate", "points_per_s", ">=", 300_000, "points/s"),)),
    Scenario("ingest-otlp", "ingest: OTLP/HTTP protobuf metrics (/v1/metrics), 5,000-point exports",
             ingest("otlp"), (Target("ingest rate", "points_per_s", ">=", 50_000, "points/s"),)),
    Scenario("mqtt-100", "MQTT source: one source, 100 topics, local mosquitto, QoS 0 burst", mqtt_bench.throughput,
             (Target("into channels", "messages_per_s", ">=", 50_000, "messages/s"),
              Target("none lost", "lost", "<=", 0))),
    Scenario("mqtt-latency", "MQTT source: 5,000 messages/s on 100 topics to one WebSocket reader",
             mqtt_bench.latency(5000),
             (Target("publish to reader p99", "lat_p99_ms", "<=", 50.0, "ms"),
              Target("none lost", "lost", "<=", 0))),
    Scenario("why-streaming", "why streaming: 10-series panel, last hour, live 10 min (time-compressed)",
             why_streaming, ()),
    Scenario("history-24h", "24 h of 20 Hz x 10 series (17.3 M values), memory and --data-dir: backfill at "
             "max_points=1000 next to raw; disk per value", history_24h,
             (Target("max_points=1000 backfill, last byte", "max_points_last_byte_ms", "<=", 300.0, "ms"),
              Target("raw tier on disk, per value", "raw_columnar_bytes_per_value", "<=", 4.0, "B")), heavy=True),
    Scenario("ingest-lp-disk", "ingest-lp: memory broker, then --data-dir (fsync interval)", ingest_lp_disk(ingest),
             (Target("--data-dir vs memory", "disk_vs_memory_pct", ">=", 70.0, "%"),)),
    Scenario("restart-kill9", "kill -9 of a --data-dir server mid-ingest, restart: every 204ed point there",
             restart_kill9,
             (Target("acknowledged points lost", "lost_acked_points", "<=", 0.0),
              Target("points stored twice", "duplicates", "<=", 0.0))),
]


def by_name(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; have: {', '.join(s.name for s in SCENARIOS)}")


def check_server(srv: ServerProc) -> bool:
    try:
        with urllib.request.urlopen(srv.url + "/api/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


__all__ = ["SCENARIOS", "Options", "Scenario", "Target", "by_name", "math"]
