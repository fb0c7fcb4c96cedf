"""``make bench``: run the scenarios, print a Markdown table, write results, compare with the reference.

    .venv/bin/python -m benchmarks.run                 # everything, 3 runs each, medians
    .venv/bin/python -m benchmarks.run --quick         # shorter windows, 1 run
    .venv/bin/python -m benchmarks.run --scenario ws-10k --runs 1 --profile

Writes ``benchmarks/results/latest.json``, ``latest.md`` and ``latest.png``; ``--save-reference``
also writes ``reference.json``/``reference.md``/``reference.png`` (commit those).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_facts, median, raise_fd_limit, system_busy
from benchmarks.scenarios import SCENARIOS, Options, Scenario, by_name

# figures shown in the table, per scenario, in this order (others stay in the JSON)
SHOWN = [
    ("connected", "readers", "{:.0f}"),
    ("points_per_s", "points/s", "{:,.0f}"),
    ("expected_points_per_s", "expected/s", "{:,.0f}"),
    ("all_delivered", "delivered %", "{:.2f}"),
    ("lat_p50_ms", "p50 ms", "{:.1f}"),
    ("lat_p99_ms", "p99 ms", "{:.1f}"),
    ("lat_max_ms", "max ms", "{:.1f}"),
    ("lat_app_p50_ms", "p50 ms, app receipt", "{:.1f}"),
    ("lat_app_p99_ms", "p99 ms, app receipt", "{:.1f}"),
    ("lat_app_max_ms", "max ms, app receipt", "{:.1f}"),
    ("app_delay_p99_ms", "reader delay p99 ms (app - kernel)", "{:.1f}"),
    ("floor_lat_p99_ms", "floor p99 ms (same readers)", "{:.1f}"),
    ("base_lat_p99_ms", "p99 ms without the stalled reader", "{:.1f}"),
    ("p99_delta_ms", "p99 added by the stalled reader, ms", "{:+.1f}"),
    ("slow_close_after_s", "stalled reader closed after, s", "{:.1f}"),
    ("close_frame", "stalled reader's close frame", "{}"),
    ("stalled_queue_max_kib", "stalled reader's queue max, KiB", "{:.0f}"),
    ("server_cpu_pct", "server CPU %", "{:.1f}"),
    ("client_cpu_pct", "loadgen CPU %", "{:.0f}"),
    ("other_cpu_pct", "other procs CPU %", "{:.0f}"),
    ("cpu_s_per_100k_points", "CPU s/100k pts", "{:.3f}"),
    ("rss_mib", "RSS MiB", "{:.1f}"),
    ("rss_per_conn_kib", "RSS/conn KiB", "{:.1f}"),
    ("throughput_vs_floor_pct", "throughput vs floor %", "{:.1f}"),
    ("cpu_vs_floor_x", "CPU vs floor x", "{:.2f}"),
    ("efficiency_vs_floor_pct", "pts per CPU-s vs floor %", "{:.1f}"),
    ("msg_efficiency_vs_floor_pct", "msgs per CPU-s vs floor %", "{:.1f}"),
    ("floor_server_cpu_pct", "floor CPU %", "{:.1f}"),
    ("floor_other_cpu_pct", "other procs CPU % (floor run)", "{:.0f}"),
    ("last_byte_s", "last byte s", "{:.3f}"),
    ("parsed_s", "parsed s", "{:.3f}"),
    ("wire_mib", "wire MiB", "{:.1f}"),
    ("parser", "parser", "{}"),
    ("requests", "requests", "{:.0f}"),
    ("unit", "unit", "{}"),
    ("stream_mib", "streaming MiB", "{:.2f}"),
    ("poll_mib", "polling MiB", "{:.1f}"),
    ("bytes_ratio_x", "bytes: polling/streaming x", "{:.1f}"),
    ("stream_cpu_s", "streaming CPU s", "{:.2f}"),
    ("poll_cpu_s", "polling CPU s", "{:.1f}"),
    ("cpu_ratio_x", "CPU: polling/streaming x", "{:.1f}"),
    ("cpu_ratio_basis", "CPU ratio basis", "{}"),
    ("measured_s", "measured s (scaled to 600)", "{:.0f}"),
    ("quiet_wait_s", "waited for a quiet machine, s", "{:.0f}"),
    ("lost", "conns lost", "{:.0f}"),
]


def fmt(value: Any, spec: str = "{}") -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure over the runs; other values from the last run."""
    out: dict[str, Any] = {}
    for key in runs[-1]:
        vals = [r.get(key) for r in runs]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            out[key] = median(vals)
        else:
            out[key] = vals[-1]
    return out


def wait_quiet(limit: float, threshold: float = 0.25) -> float:
    """Wait (at most ``limit`` s) until other processes use under ``threshold`` of a core.

    The machine is shared: a test suite running next to the bench skews every figure. Returns the
    seconds waited; the run goes ahead anyway after ``limit`` ('other procs CPU' shows the noise).
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        b0 = system_busy()
        time.sleep(1.0)
        if system_busy() - b0 < threshold:
            break
    return time.monotonic() - t0


def run_scenario(s: Scenario, opts: Options, runs: int) -> dict[str, Any]:
    results = []
    errors = []
    for i in range(runs):
        waited = wait_quiet(opts.quiet_s)
        t0 = time.monotonic()
        try:
            r = s.fn(opts)
            r["quiet_wait_s"] = round(waited, 1)
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        finally:
            if opts.profile_dir:
                from benchmarks.profile import finish

                for md in finish():
                    print(f"  profile: {md}", file=sys.stderr)
        print(f"  run {i + 1}/{runs} of {s.name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        if "skipped" in r:
            return {"name": s.name, "title": s.title, "skipped": r["skipped"], "figures": {}, "targets": []}
        results.append(r)
        if opts.profile_dir:
            break  # one profiled run is enough
    if not results:
        return {"name": s.name, "title": s.title, "skipped": "failed: " + "; ".join(errors), "figures": {},
                "targets": []}
    figures = combine(results)
    targets = []
    for t in s.targets:
        ok = t.check(figures)
        targets.append({"label": t.label, "key": t.key, "op": t.op, "limit": t.limit, "unit": t.unit,
                        "value": figures.get(t.key), "pass": ok})
    return {"name": s.name, "title": s.title, "runs": len(results), "figures": figures, "targets": targets,
            "errors": errors}


def table(results: list[dict[str, Any]], reference: dict[str, Any] | None = None) -> str:
    ref = {r["name"]: r for r in (reference or {}).get("scenarios", [])}
    lines = ["| scenario | figure | value | target | result | vs reference |", "|---|---|---:|---|---|---:|"]
    for r in results:
        name = f"**{r['name']}**"
        if r.get("skipped"):
            lines.append(f"| {name} | {r['title']} | - | - | SKIPPED: {r['skipped']} | |")
            continue
        figs = r["figures"]
        ref_figs = ref.get(r["name"], {}).get("figures", {})
        by_key = {t["key"]: t for t in r["targets"]}
        first = True
        for key, label, spec in SHOWN:
            if key not in figs:
                continue
            v = figs[key]
            t = by_key.get(key)
            spec_ = "{:,.0f}" if t and t["limit"] >= 1000 else "{:g}"
            target = f"{t['op']} {fmt(t['limit'], spec_)} {t['unit']}" if t else ""
            result = ("PASS" if t["pass"] else "FAIL" if t["pass"] is False else "?") if t else ""
            rv = ref_figs.get(key)
            ratio = ""
            if isinstance(v, int | float) and isinstance(rv, int | float) and rv:
                ratio = f"{v / rv:.2f}x"
            scen = f"{name} {r['title']}" if first else ""
            first = False
            lines.append(f"| {scen} | {label} | {fmt(v, spec)} | {target} | {result} | {ratio} |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    out = []
    for r in results:
        for t in r.get("targets", []):
            mark = "PASS" if t["pass"] else "FAIL" if t["pass"] is False else "?"
            out.append(f"- {mark} {r['name']}: {t['label']} = {fmt(t['value'], '{:,.3f}')} "
                       f"(target {t['op']} {t['limit']:g} {t['unit']})")
        if r.get("skipped"):
            out.append(f"- SKIPPED {r['name']}: {r['skipped']}")
    return "\n".join(out)


def markdown(doc: dict[str, Any], reference: dict[str, Any] | None) -> str:
    m = doc["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    head = [
        f"# livedata bench — {doc['label']}", "",
        f"{m['date']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"Linux {m['kernel']}, fd limit {m['fd_limit']}; {pk}.", "",
        f"Options: {doc['options']}. Server, floor and load generator share the machine over 127.0.0.1; "
        "'loadgen CPU' is the reader processes' CPU (2 cores in all: when server + loadgen near 200 %, "
        "the client side is the bottleneck, not only the server).", "",
    ]
    if reference:
        head += [f"Ratios are against `reference.json` ({reference['machine']['date']}).", ""]
    if doc.get("updated"):
        head += [f"Re-run on {doc['updated']['date']}: {', '.join(doc['updated']['scenarios'])}.", ""]
    body = table(doc["scenarios"], reference)
    return "\n".join(head) + body + "\n\n## Targets\n\n" + summary(doc["scenarios"]) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in results:
        f = r.get("figures") or {}
        if "lat_p99_ms" not in f or "connected" not in f or f.get("lat_p99_ms") is None:
            continue
        family = r["name"].rsplit("-", 1)[0] if r["name"].startswith(("ws-", "stream-")) else r["name"].split("x")[0]
        label = {"ref-10": "original numSeries=10", "ref-1": "original numSeries=1", "ws": "WebSocket (batch 100 ms)",
                 "stream": "HTTP stream (batch 100 ms)"}.get(family, family)
        series.setdefault(label, []).append((int(f["connected"]), float(f["lat_p99_ms"]), float(f["server_cpu_pct"])))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, pts in sorted(series.items()):
        pts.sort()
        xs = [p[0] for p in pts]
        ax1.plot(xs, [p[1] for p in pts], marker="o", label=label)
        ax2.plot(xs, [p[2] for p in pts], marker="o", label=label)
    ax1.set(xscale="log", xlabel="readers", ylabel="p99 latency, ms", title="end-to-end latency (p99)")
    ax2.set(xscale="log", xlabel="readers", ylabel="server CPU, % of one core", title="server CPU")
    ax2.axhline(100, color="grey", lw=0.8, ls="--")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_reference(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short windows (4 s), 1 run, smaller reader counts")
    p.add_argument("--scenario", action="append", help="run only this one (repeatable); see --list")
    p.add_argument("--runs", type=int, help="runs per scenario, medians reported (default 3; --quick 1)")
    p.add_argument("--duration", type=float, help="measurement window, s (default 10; --quick 4)")
    p.add_argument("--scale", type=float, default=None, help="multiply reader counts (--quick: 0.25)")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="wait up to this many s before each run for other processes to go quiet (30; --quick 0)")
    p.add_argument("--profile", action="store_true", help="py-spy the server during heavy scenarios")
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    p.add_argument("--save-reference", action="store_true", help="also write reference.json/.md/.png")
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list:
        for s in SCENARIOS:
            print(f"{s.name:14} {s.title}")
        return 0
    raise_fd_limit()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = a.runs or (1 if a.quick else 3)
    opts = Options(quick=a.quick, duration=a.duration or (4.0 if a.quick else 10.0), warmup=2.0 if a.quick else 3.0,
                   scale=a.scale if a.scale is not None else (0.25 if a.quick else 1.0),
                   profile_dir=str(out / "profiles") if a.profile else None,
                   quiet_s=a.quiet_wait if a.quiet_wait is not None else (0.0 if a.quick else 30.0))
    chosen = [by_name(n) for n in a.scenario] if a.scenario else list(SCENARIOS)
    if a.profile:
        chosen = [s for s in chosen if s.heavy or a.scenario]
    reference = load_reference(out / "reference.json")
    results = []
    t0 = time.monotonic()
    for s in chosen:
        print(f"== {s.name}: {s.title}", file=sys.stderr)
        results.append(run_scenario(s, opts, runs))
    label = "quick" if a.quick else f"{runs} run(s), medians"
    doc = {"label": label, "machine": machine_facts(), "options": {
        "runs": runs, "duration_s": opts.duration, "warmup_s": opts.warmup, "scale": opts.scale, "quick": a.quick},
        "elapsed_s": round(time.monotonic() - t0), "scenarios": results}
    (out / "latest.json").write_text(json.dumps(doc, indent=1, default=str))
    md = markdown(doc, reference)
    (out / "latest.md").write_text(md)
    try:
        plot(results, out / "latest.png")
    except Exception as exc:  # a plot must not lose the numbers
        print(f"plot failed: {exc}", file=sys.stderr)
    if a.save_reference:
        ref_doc = doc
        if a.scenario and reference:  # a subset: replace those scenarios in the reference, keep the rest
            new = {r["name"]: r for r in results}
            merged = [new.pop(r["name"], r) for r in reference["scenarios"]] + list(new.values())
            ref_doc = {**reference, "scenarios": merged,
                       "updated": {"date": doc["machine"]["date"], "scenarios": sorted(r["name"] for r in results)}}
        (out / "reference.json").write_text(json.dumps(ref_doc, indent=1, default=str))
        (out / "reference.md").write_text(markdown(ref_doc, None))
        try:
            plot(ref_doc["scenarios"], out / "reference.png")
        except Exception as exc:
            print(f"plot failed: {exc}", file=sys.stderr)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
