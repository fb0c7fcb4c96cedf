"""The bench tools with tiny numbers, so they cannot rot. No timing assertions: sane numbers only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import run as bench_run
from benchmarks import soak
from benchmarks.common import floor_server, livedata_server
from benchmarks.loadgen import LoadSpec, run_readers
from benchmarks.scenarios import Options, by_name

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize(
    ("kind", "path", "sub", "series"),
    [
        ("ref", "/?numSeries=3", None, 3),
        ("ws", "/api/ws", {"type": "subscribe", "id": "A", "channel": "random-walk", "interval": 100}, 1),
        ("ndjson", "/api/stream?channel=random-walk&interval=100", None, 1),
    ],
)
def test_loadgen_counts_every_carrier(kind: str, path: str, sub: dict[str, object] | None, series: int) -> None:
    with livedata_server() as srv:
        r = run_readers(LoadSpec(kind, 4, srv.port, path, sub, series=series, workers=2), srv.pid, 0.5, 2.0)
    assert r["connected"] == 4
    assert r["points"] > 0 and r["msgs"] > 0
    expected = 4 * series * 20 * 2.0
    assert 0.5 * expected <= r["points"] <= 1.5 * expected
    assert r["lat_p50_ms"] is not None and 0 <= r["lat_p50_ms"] < 5000
    assert r["server_cpu"] >= 0 and r["server_rss"] > 0


def test_floor_serves_the_same_shapes() -> None:
    with floor_server() as fl:
        r = run_readers(LoadSpec("ref", 3, fl.port, "/?numSeries=2", series=2, workers=1), fl.pid, 0.5, 2.0)
        w = run_readers(LoadSpec("ws", 3, fl.port, "/api/ws", {"type": "subscribe", "id": "A"}, workers=1),
                        fl.pid, 0.5, 2.0)
    assert r["connected"] == 3 and r["points"] > 0
    assert w["connected"] == 3 and w["points"] > 0


@pytest.mark.parametrize("name", ["ref-10x2000", "backfill", "ingest-json", "ingest-lp", "ingest-influx", "ingest-otlp",
                                  "ws-idle-10k", "stalled-500", "mqtt-100", "mqtt-latency", "history-24h",
                                  "ingest-lp-disk", "restart-kill9"])
def test_scenarios_run_tiny(name: str) -> None:
    opts = Options(quick=True, duration=2.0, warmup=0.5, scale=0.002)
    out = by_name(name).fn(opts)
    assert "skipped" not in out, f"{name} did not run: {out['skipped']}"  # e.g. a broken push endpoint
    numbers = [v for v in out.values() if isinstance(v, int | float)]
    assert numbers and all(v == v for v in numbers)  # no NaN
    if name == "backfill":
        assert out["rows_received"] == out["rows"] and out["parsed_rows"] == out["rows"]
    if name.startswith("ingest") and name != "ingest-lp-disk":
        assert out["points"] > 0 and out["errors"] == 0
    if name == "ref-10x2000":
        assert out["points"] > 0 and out["efficiency_vs_floor_pct"] > 0
    if name == "history-24h":
        rows = out["values"] // 10
        assert out["memory_raw_rows"] == out["disk_raw_rows"] == rows
        assert 0 < out["disk_max_points_rows"] <= 2 * 1000 + 2 and out["bucket_ms"] > 0
        assert out["raw_columnar_bytes_per_value"] > 0
    if name == "ingest-lp-disk":
        assert out["memory_points_per_s"] > 0 and out["disk_points_per_s"] > 0 and out["errors"] == 0
    if name == "restart-kill9":
        assert out["acked_points"] > 0 and out["lost_acked_points"] == 0 and out["duplicates"] == 0
    if name == "mqtt-100":  # every message published came out of the source into channels
        assert out["messages"] > 0 and out["stored"] == out["messages"] and out["errors"] == 0
    if name == "mqtt-latency":
        assert out["sent"] > 0 and out["received"] == out["sent"] and out["lat_p50_ms"] >= 0
    if name == "stalled-500":  # both windows measured, and the stalled reader was watched
        assert out["points"] > 0 and out["lat_p99_ms"] is not None and out["base_lat_p99_ms"] is not None
        assert out["slow_closed"] in (0.0, 1.0) and out["stalled_subs"] > 0


def test_run_cli_writes_results(tmp_path: Path) -> None:
    code = bench_run.main(["--quick", "--scenario", "ref-1x2000", "--runs", "1", "--duration", "1.5",
                           "--scale", "0.002", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["scenarios"][0]["figures"]["points"] > 0
    assert (tmp_path / "latest.md").read_text().startswith("# livedata bench")
    assert (tmp_path / "latest.png").stat().st_size > 0


def test_soak_tiny(tmp_path: Path) -> None:
    code = soak.main(["--minutes", "0.25", "--readers", "4", "--points-per-s", "400", "--every", "3",
                      "--warmup", "3", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert len(doc["samples"]) >= 3
    assert all(s["rss_mib"] > 0 for s in doc["samples"])
    assert (tmp_path / "soak.png").stat().st_size > 0
