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
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    machine_facts,
    median,
    raise_fd_limit,
)
from benchmarks.redis_fanout import run_latency
from benchmarks.redis_load import Cluster, Options, run_push
from benchmarks.redis_server import RedisServer, redis_version

LP_TARGET = 100_000.0
"""Points/s of line protocol through Redis."""
LAT_RATIO_TARGET = 2.0
"""Fan-out p99 through Redis at most this many times the memory broker's."""


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
                agg[key] = median(vals)
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
    machine["redis_server"] = redis_version()
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
