"""What a bench scenario is: its options, its targets, and the figures every streaming scenario reports.

Apart from ``scenarios.py`` (the catalogue) so that scenario modules (``stalled.py``) and the
catalogue that lists them import this, not each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    label: str
    key: str
    op: str  # "<=" or ">="
    limit: float
    unit: str = ""

    def check(self, figures: dict[str, Any]) -> bool | None:
        v = figures.get(self.key)
        if not isinstance(v, int | float):
            return None
        return v <= self.limit if self.op == "<=" else v >= self.limit


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fn: Callable[[Options], dict[str, Any]]
    targets: tuple[Target, ...] = ()
    quick_ok: bool = True
    heavy: bool = False
    """Worth profiling with py-spy (--profile)."""


@dataclass
class Options:
    quick: bool = False
    duration: float = 10.0
    warmup: float = 3.0
    profile_dir: str | None = None
    scale: float = 1.0
    quiet_s: float = 0.0
    """Multiplies reader counts (the smoke test uses a tiny scale)."""
    notes: list[str] = field(default_factory=list)

    def n(self, readers: int) -> int:
        return max(2, int(readers * self.scale))


def profile_during(opts: Options, name: str, pid: int) -> Callable[[], None] | None:
    if not opts.profile_dir:
        return None
    from benchmarks.profile import start_record

    def go() -> None:
        start_record(pid, f"{opts.profile_dir}/{name}", max(2.0, opts.duration - 1))

    return go


def stream_figures(r: dict[str, Any], expected_per_s: float, series: int, ticks_per_s: float) -> dict[str, Any]:
    dur = r["duration_s"]
    nominal_ticks = ticks_per_s * dur
    complete = r["points"] / max(1, r["connected"] * series * max(1, r["distinct_times"]))
    delivered = r["points"] / max(1.0, expected_per_s * dur)
    pts = r["points_per_s"]
    out = dict(r)
    out.update({
        "expected_points_per_s": expected_per_s,
        "delivered_pct": round(100 * min(delivered, 1.0) if r["distinct_times"] >= nominal_ticks - 1 else
                               100 * delivered, 3),
        "complete_pct": round(100 * complete, 3),
        "ticks_seen_pct": round(100 * min(1.0, r["distinct_times"] / max(1.0, nominal_ticks - 1)), 2),
        "server_cpu_pct": round(100 * r["server_cpu"], 1),
        "client_cpu_pct": round(100 * r["client_cpu"], 1),
        "other_cpu_pct": round(100 * r.get("other_cpu", 0.0), 1),
        "cpu_s_per_100k_points": (r["server_cpu"] / pts * 100_000) if pts else None,
        "rss_mib": round(r["server_rss"] / (1 << 20), 1),
        "rss_per_conn_kib": round(r["rss_per_conn"] / 1024, 2),
    })
    # "100 % delivered" passes when every reader got every tick the server made, and it missed none
    out["all_delivered"] = 100.0 if (complete >= 0.999 and r["distinct_times"] >= nominal_ticks - 1
                                     and r["connected"] == r["readers"]) else round(100 * min(complete, delivered), 2)
    return out
