"""Bench scenarios of issue 20: long ranges at panel resolution, durable history.

``history-24h``  a day of a 20 Hz x 10-series channel (17.28 M values), in memory and in a data
                 directory: the backfill of the whole day at ``max_points=1000`` (to the last byte)
                 next to the same range raw, and (data directory) the bytes per value of the raw
                 segments and of each rollup tier, read from the SQLite file.
``ingest-lp-disk`` ``ingest-lp`` against the memory broker and against ``--data-dir`` (default
                 ``--fsync interval``), one after the other in one run: the ratio.
``restart-kill9`` numbered pushes to a data directory, ``kill -9`` of the server mid-ingest, a
                 restart: every point of every ``204``ed push must be there (by sequence number).
"""

from __future__ import annotations

import http.client
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from benchmarks.common import HOST, ServerProc, http_json, livedata_server, rss_bytes
from benchmarks.scenario import Options
from benchmarks.wsclient import WsClient, read_rows, rows_in

SERIES = 10
STEP_MS = 50


def _walk(rows: int, seed: int = 3) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    out: np.ndarray[Any, Any] = np.round(np.cumsum(rng.normal(0, 1, size=(SERIES, rows)), axis=1)
                                         + np.arange(SERIES)[:, None] * 10, 6)
    return out


def _load(srv: ServerProc, channel: str, t0: int, walk: np.ndarray[Any, Any], per: int = 50_000) -> float:
    rows = walk.shape[1]
    t = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=300)
    for lo in range(0, rows, per):
        hi = min(rows, lo + per)
        body: dict[str, Any] = {"time": list(range(t0 + lo * STEP_MS, t0 + hi * STEP_MS, STEP_MS))}
        for s in range(SERIES):
            body[f"series{s}"] = walk[s, lo:hi].tolist()
        conn.request("POST", f"/api/push/{channel}", body=msgspec.json.encode(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read()
        if r.status != 204:
            raise RuntimeError(f"push failed: {r.status} {text[:200]!r}")
    conn.close()
    return time.perf_counter() - t


def _until_position(c: WsClient, timeout: float) -> tuple[int, float, int]:
    """Read data messages until one carries a position (the backfill's last); rows, seconds, bucket_ms."""
    t0 = time.perf_counter()
    rows = 0
    bucket = 0
    while time.perf_counter() - t0 < timeout:
        msg = c.recv()
        if not msg.startswith(b'{"type":"data"'):
            continue
        rows += rows_in(msg)
        head = msg[:200]
        if b'"bucket_ms":' in head:
            bucket = int(head.split(b'"bucket_ms":')[1].split(b",")[0])
        if b'"position":' in head:
            break
    return rows, time.perf_counter() - t0, bucket


def _disk_sizes(db: Path, values: int) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, Any] = {}
    try:
        for codec, n, cells in con.execute("SELECT codec, sum(length(data)), sum(cells) FROM segs GROUP BY codec"):
            name = "hot" if codec == 0 else "columnar"
            out[f"raw_{name}_values"] = int(cells)
            out[f"raw_{name}_bytes_per_value"] = round(int(n) / max(1, int(cells)), 3)
        for tier, n, rows in con.execute("SELECT tier, sum(length(data)), count(*) FROM rollups GROUP BY tier"):
            out[f"tier_{tier // 1000}s_bytes_per_bucket"] = round(int(n) / max(1, int(rows)), 1)
            out[f"tier_{tier // 1000}s_bytes_per_raw_value"] = round(int(n) / values, 3)
        page = con.execute("PRAGMA page_size").fetchone()[0]
        used = con.execute("PRAGMA page_count").fetchone()[0] - con.execute("PRAGMA freelist_count").fetchone()[0]
        out["file_used_bytes_per_value"] = round(page * used / values, 3)
    finally:
        con.close()
    return out


def _compacted(db: Path, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            hot = con.execute("SELECT count(*) FROM segs WHERE codec=0").fetchone()[0]
        except sqlite3.Error:
            hot = 1
        finally:
            con.close()
        if hot == 0:
            break
        time.sleep(0.5)
    return time.perf_counter() - t0


def history_24h(opts: Options) -> dict[str, Any]:
    hours = max(0.05, 24.0 * min(1.0, opts.scale))  # --quick (scale 0.25): 6 h
    rows = int(hours * 3600 * 1000 / STEP_MS)
    values = rows * SERIES
    walk = _walk(rows)
    out: dict[str, Any] = {"hours": hours, "values": values}
    for store in ("memory", "disk"):
        tmp = tempfile.mkdtemp(prefix="bench-history-")
        args = ["--retention", str(int(hours * 3600) + 3600), "--retention-points", str(values + 100),
                "--max-body-bytes", str(256 << 20)]
        if store == "disk":
            args += ["--data-dir", tmp]
        try:
            with livedata_server(*args) as srv:
                end = int(time.time() * 1000) // 1000 * 1000
                t0 = end - (rows - 1) * STEP_MS
                out[f"{store}_load_s"] = round(_load(srv, "bench/day", t0, walk), 1)
                if store == "disk":
                    out["disk_compaction_wait_s"] = round(_compacted(Path(tmp) / "livedata.db", 600), 1)
                # max_points=1000 over the day, then the same range raw
                c = WsClient(srv.port, timeout=120)
                c.recv()
                c.send({"type": "subscribe", "id": "M", "channel": "bench/day", "from": t0, "max_points": 1000})
                got, secs, bucket = _until_position(c, 60)
                c.close()
                out[f"{store}_max_points_last_byte_ms"] = round(secs * 1000, 1)
                out[f"{store}_max_points_rows"] = got
                out["bucket_ms"] = bucket
                c = WsClient(srv.port, timeout=300)
                c.recv()
                c.send({"type": "subscribe", "id": "R", "channel": "bench/day", "from": t0})
                got, secs = read_rows(c, rows, 600)
                c.close()
                out[f"{store}_raw_last_byte_s"] = round(secs, 2)
                out[f"{store}_raw_rows"] = got
                out[f"{store}_rss_mib"] = round(rss_bytes(srv.pid) / (1 << 20), 1)
            if store == "disk":
                out.update(_disk_sizes(Path(tmp) / "livedata.db", values))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out["max_points_last_byte_ms"] = max(out["memory_max_points_last_byte_ms"], out["disk_max_points_last_byte_ms"])
    return out


def ingest_lp_disk(ingest: Callable[..., Callable[[Options], dict[str, Any]]]) -> Callable[[Options], dict[str, Any]]:
    def run(opts: Options) -> dict[str, Any]:
        mem = ingest("lp")(opts)
        tmp = tempfile.mkdtemp(prefix="bench-ingest-")
        try:
            disk = ingest("lp", "--data-dir", tmp)(opts)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if "skipped" in mem or "skipped" in disk:
            return {"skipped": mem.get("skipped") or disk.get("skipped")}
        return {
            "memory_points_per_s": mem["points_per_s"], "disk_points_per_s": disk["points_per_s"],
            "disk_vs_memory_pct": round(100 * disk["points_per_s"] / max(1, mem["points_per_s"]), 1),
            "memory_cpu_s_per_100k": mem["cpu_s_per_100k_points"], "disk_cpu_s_per_100k": disk["cpu_s_per_100k_points"],
            "memory_server_cpu_pct": mem["server_cpu_pct"], "disk_server_cpu_pct": disk["server_cpu_pct"],
            "errors": mem["errors"] + disk["errors"], "fsync": "interval (default)",
        }

    return run


def restart_kill9(opts: Options) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-kill9-")
    acked: list[int] = []
    stop = threading.Event()
    t_base = int(time.time() * 1000) - 900_000  # within the hour of retention, and in the past (to=now)
    try:
        # retention far above what the window can push: a point trimmed by --retention-points
        # (200,000 by default) would otherwise count as lost
        srv = livedata_server("--data-dir", tmp, "--retention-points", "100000000").start()

        def push() -> None:
            conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
            n = 0
            try:
                while not stop.is_set():
                    seqs = list(range(n, n + 100))
                    n += 100
                    body = msgspec.json.encode({"time": [t_base + q for q in seqs], "seq": seqs})
                    conn.request("POST", "/api/push/bench/kill9", body=body,
                                 headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    if r.status == 204:
                        acked.extend(seqs)
            except (OSError, http.client.HTTPException):
                return

        th = threading.Thread(target=push, daemon=True)
        th.start()
        time.sleep(max(1.0, opts.duration * 0.3))
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        th.join(15)
        t = time.perf_counter()
        again = ServerProc(srv.argv, srv.port, "livedata").start()
        restart_s = time.perf_counter() - t
        try:
            status, body = http_json(f"{again.url}/api/stream?channel=bench/kill9&from=0&to=now", timeout=120)
            seen: list[int] = []
            for line in body.splitlines():
                m = msgspec.json.decode(line)
                if m.get("type") == "data":
                    vals = m["frame"]["data"]["values"]
                    if len(vals) > 1:
                        seen.extend(int(v) for v in vals[1])
        finally:
            again.stop()
        missing = len(set(acked) - set(seen))
        return {"acked_points": len(acked), "stored_points": len(seen), "lost_acked_points": missing,
                "duplicates": len(seen) - len(set(seen)), "restart_s": round(restart_s, 2), "status": status}
    finally:
        stop.set()
        shutil.rmtree(tmp, ignore_errors=True)
