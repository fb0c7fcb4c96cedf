"""``make soak``: 1,000 WebSocket readers + 10,000 points/s ingest for ``--minutes`` (default 10).

Every 10 s it samples the server's RSS and CPU and the readers' latency (newest point of each
message: receipt time minus the point's time, which the pusher sets to the moment it pushes), then
plots them to ``benchmarks/results/soak.png`` and reports the trend: the median of the last third
against the first third (the first minute is warm-up and left out). The check is one-sided:
memory must not *rise* by more than 5 % (falling is fine). CPU and latency trends are reported
as information only (a few % of a small CPU share or of a 10 ms p99 is noise on a shared machine).

Ingest: 10 channels ``soak/c0..c9``, each gets 2 pushes/s of 50 rows x 10 series (JSON columnar),
so 10,000 points/s in all. Readers: 1,000 WebSocket subscriptions spread over the 10 channels.
The server keeps 2,000 rows per channel (``--retention-points``), so its history is full within
the warm-up and any growth after it is a leak, not retention filling up.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import queue
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.common import (
    HOST,
    RESULTS,
    cpu_seconds,
    livedata_server,
    machine_facts,
    median,
    percentile,
    rss_bytes,
)
from benchmarks.loadgen import LoadSpec, start_load, stop_load

CHANNELS = 10
SERIES = 10


def pusher(port: int, seconds: float, points_per_s: int, stop: Any) -> None:
    """Push ``points_per_s`` points/s (JSON columnar) for ``seconds``, on a deadline schedule."""
    pushes_per_s = 2 * CHANNELS
    rows = max(1, points_per_s // (pushes_per_s * SERIES))
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    period = 1.0 / pushes_per_s
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds and not stop.value:
        k += 1
        time.sleep(max(0.0, start + k * period - time.monotonic()))
        now = int(time.time() * 1000)
        step = max(1, 500 // rows)
        body = {"time": [now - (rows - 1 - i) * step for i in range(rows)]}
        for s in range(SERIES):
            body[f"s{s}"] = [float((k + i + s) % 100) for i in range(rows)]
        try:
            conn.request("POST", f"/api/push/soak/c{k % CHANNELS}", body=msgspec.json.encode(body),
                         headers={"Content-Type": "application/json"})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)


def trend(values: list[float]) -> float | None:
    """Median of the last third over the median of the first third, in % change.

    Medians, so that one 10 s sample disturbed by another process on the machine is not a trend.
    """
    if len(values) < 3:
        return None
    third = max(1, len(values) // 3)
    first = median(values[:third])
    last = median(values[-third:])
    return None if not first or last is None else 100 * (last - first) / first


RISE_LIMIT_PCT = 5.0
"""Memory passes when it rose by at most this much (median of the last third vs the first third)."""


def direction(pct: float | None) -> str:
    """Words for a trend: ``rising``, ``falling`` or ``flat`` (within the 5 % band)."""
    if pct is None:
        return "-"
    if pct > RISE_LIMIT_PCT:
        return "rising"
    if pct < -RISE_LIMIT_PCT:
        return "falling"
    return "flat"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--readers", type=int, default=1000)
    p.add_argument("--points-per-s", type=int, default=10_000)
    p.add_argument("--every", type=float, default=10.0, help="sampling period, s")
    p.add_argument("--warmup", type=float, default=300.0,
                   help="seconds left out of the trend (retention fills in the first ~250 s)")
    p.add_argument("--retention-points", type=int, default=2_000,
                   help="per channel; small so retention is full before the trend window (a fill is not a leak)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--from-json", help="re-render the report and plot from a soak.json, without running")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.from_json:
        old = json.loads(Path(a.from_json).read_text())
        report(out, old["samples"], old["machine"], old["minutes"], old["readers"], old["connected"],
               old["points_per_s"], a.warmup)
        return 0
    seconds = a.minutes * 60
    samples: list[dict[str, Any]] = []
    with livedata_server("--retention-points", str(a.retention_points)) as srv:
        ctx = mp.get_context("fork")
        stop = ctx.Value("b", 0)
        push = ctx.Process(target=pusher, args=(srv.port, seconds + 30, a.points_per_s, stop), daemon=True)
        push.start()
        time.sleep(1.0)  # the channels exist before readers subscribe
        spec = LoadSpec("ws", a.readers, srv.port, "/api/ws",
                        {"type": "subscribe", "id": "A", "channel": "soak/c{i}"}, series=SERIES,
                        msgs_per_s=2, report_every=a.every, channels=CHANNELS)
        load = start_load(spec)
        print(f"soak: {load.connected}/{a.readers} readers connected in {load.connect_s:.1f} s; "
              f"{a.minutes:g} min", file=sys.stderr)
        load.ctrl[1] = time.time() + seconds
        load.ctrl[0] = time.time()
        t0 = time.monotonic()
        cpu_last, t_last = cpu_seconds(srv.pid), t0
        buckets: dict[int, dict[str, Any]] = {}
        try:
            while time.monotonic() - t0 < seconds:
                try:
                    msg = load.q.get(timeout=1.0)
                except queue.Empty:
                    msg = None
                if msg is not None and msg[0] == "bucket":
                    b = buckets.setdefault(len(samples), {"msgs": 0, "points": 0, "lat": [], "lost": 0, "n": 0})
                    b["msgs"] += msg[2]["msgs"]
                    b["points"] += msg[2]["points"]
                    b["lat"] += msg[2]["samples"]
                    b["lost"] = max(b["lost"], msg[2]["lost"])
                    b["n"] += 1
                now = time.monotonic()
                if now - t_last >= a.every:
                    cpu = cpu_seconds(srv.pid)
                    b = buckets.pop(len(samples), {"msgs": 0, "points": 0, "lat": [], "lost": 0})
                    s = {"t": round(now - t0, 1), "rss_mib": round(rss_bytes(srv.pid) / (1 << 20), 2),
                         "cpu_pct": round(100 * (cpu - cpu_last) / (now - t_last), 1),
                         "msgs_per_s": round(b["msgs"] / (now - t_last)),
                         "points_per_s": round(b["points"] / (now - t_last)),
                         "lat_p50_ms": percentile(b["lat"], 50), "lat_p99_ms": percentile(b["lat"], 99),
                         "lost": b["lost"]}
                    samples.append(s)
                    print("  " + json.dumps(s), file=sys.stderr)
                    cpu_last, t_last = cpu, now
        finally:
            stop.value = 1
            stop_load(load)
            push.join(10)
    report(out, samples, machine_facts(), a.minutes, a.readers, load.connected, a.points_per_s, a.warmup)
    return 0


def report(out: Path, samples: list[dict[str, Any]], machine: dict[str, Any], minutes: float, readers: int,
           connected: int, points_per_s: int, warmup: float) -> None:
    steady = [s for s in samples if s["t"] > warmup] or samples
    trends = {
        "rss_pct": trend([s["rss_mib"] for s in steady]),
        "cpu_pct": trend([s["cpu_pct"] for s in steady]),
        "lat_p99_pct": trend([s["lat_p99_ms"] for s in steady if s["lat_p99_ms"] is not None]),
    }
    # the requirement: memory stays flat = no upward trend beyond 5 %; a fall never fails
    rss = trends["rss_pct"]
    checks = {"rss_no_rise": rss is not None and rss <= RISE_LIMIT_PCT}
    doc = {"machine": machine, "minutes": minutes, "readers": readers, "connected": connected,
           "points_per_s": points_per_s, "samples": samples, "trend_pct": trends,
           "direction": {k: direction(v) for k, v in trends.items()}, "checks": checks}
    (out / "soak.json").write_text(json.dumps(doc, indent=1))
    plot(samples, out / "soak.png", warmup)
    lines = [f"# soak: {readers} WS readers + {points_per_s:,} points/s ingest, {minutes:g} min", "",
             f"{machine['date']}, {machine['cores']} cores, {connected} readers connected, "
             f"{len(samples)} samples; the first {warmup:g} s are warm-up, left out of the trend.", "",
             "Memory must stay flat: the check fails only on an upward trend beyond "
             f"{RISE_LIMIT_PCT:g} % (median of the last third vs the first third). CPU and latency trends "
             "are information.", "",
             "| figure | first (after warm-up) | last | median | max | trend: median of last third vs first "
             f"third | check: no rise > {RISE_LIMIT_PCT:g} % |", "|---|---:|---:|---:|---:|---:|---|"]
    for key, label, tk in (("rss_mib", "server RSS MiB", "rss_pct"), ("cpu_pct", "server CPU %", "cpu_pct"),
                           ("lat_p99_ms", "p99 latency ms", "lat_p99_pct"), ("lat_p50_ms", "p50 latency ms", "")):
        vals = [s[key] for s in steady if s[key] is not None]
        if not vals:
            continue
        tv = trends.get(tk) if tk else trend(vals)
        rss_verdict = "PASS" if checks["rss_no_rise"] else "FAIL"
        verdict = rss_verdict if key == "rss_mib" else f"info ({direction(tv)})"
        lines.append(f"| {label} | {vals[0]:.1f} | {vals[-1]:.1f} | {median(vals):.1f} | {max(vals):.1f} | "
                     f"{'-' if tv is None else f'{tv:+.1f} %'} | {verdict} |")
    md = "\n".join(lines) + "\n"
    (out / "soak.md").write_text(md)
    print(md)


def plot(samples: list[dict[str, Any]], path: Path, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].plot(t, [s["rss_mib"] for s in samples], marker=".")
    axes[0].set_ylabel("server RSS, MiB")
    axes[1].plot(t, [s["cpu_pct"] for s in samples], marker=".")
    axes[1].set_ylabel("server CPU, %")
    axes[2].plot(t, [s["lat_p50_ms"] for s in samples], marker=".", label="p50")
    axes[2].plot(t, [s["lat_p99_ms"] for s in samples], marker=".", label="p99")
    axes[2].set_ylabel("latency, ms")
    axes[2].legend()
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.axvline(warmup / 60, color="grey", lw=0.8, ls="--")
        ax.set_ylim(bottom=0)
    fig.suptitle("soak: RSS, CPU and latency over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
