"""``benchmarks.redis_scale`` with tiny numbers, so it cannot rot: sane figures and no lost point (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import redis_scale

pytestmark = pytest.mark.timeout(300)  # redis-server is required, as for every broker test (make system-deps)


def test_redis_scale_tiny(tmp_path: Path) -> None:
    opts = redis_scale.Options(servers=[2], duration=1.5, warmup=0.5, batch=500, clients=2, conc=1, subs=3,
                               sub_workers=1, quick=True)
    result = redis_scale.run(opts, out_dir=tmp_path, reference=False)

    assert (tmp_path / "redis_latest.md").read_text().startswith("# Scaling out through Redis")
    assert json.loads((tmp_path / "redis_latest.json").read_text())["summary"]
    assert not (tmp_path / "redis_reference.md").exists()

    by = {(s["broker"], s["servers"]): s for s in result["summary"]}
    assert set(by) == {("memory", 1), ("redis", 2)}
    assert by[("memory", 1)]["latency@6"]["subscribers"] == 6
    for (broker, k), s in by.items():
        for kind in ("lp", "json"):
            push = s[kind]
            assert push["points_per_s"] > 0 and push["errors"] == 0, (broker, kind, push)
            assert len(push["cpu_pct"]) == k + (broker == "redis")
            assert all(c >= 0 for c in push["cpu_pct"])
            if broker == "redis":
                assert push["stored_check"], "every acknowledged point is in Redis"
        for part in (p for p in s if p.startswith("latency@")):
            assert s[part]["lost"] == 0 and s[part]["dup"] == 0 and s[part]["gaps"] == 0, s[part]
        lat = s["latency"]
        assert lat["subscribers"] == 3 * k
        assert lat["published"] > 0
        assert lat["lost"] == 0 and lat["dup"] == 0 and lat["gaps"] == 0, lat
        assert lat["delivered"] == lat["expected"] == lat["published"] * lat["subscribers"]
        assert lat["lat_p50_ms"] is not None and 0 <= lat["lat_p50_ms"] <= lat["lat_p99_ms"] <= lat["lat_max_ms"]
        assert not lat["error_samples"], lat["error_samples"]
    names = {t["what"] for t in result["targets"]}
    assert any(n.startswith("line protocol through Redis") for n in names)
    assert any(n.startswith("fan-out p99 through Redis") for n in names)
