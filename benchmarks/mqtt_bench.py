"""The MQTT source scenarios: one source on a local mosquitto, 100 topics.

* ``mqtt-100``: how many messages per second one source takes into channels. A publisher process
  writes pre-encoded QoS 0 packets (``benchmarks/mqttload.py``) as fast as mosquitto takes them;
  the figure is messages stored per second, from the first publish until the source has stored
  the last one (``GET /api/sources``: ``points``), so it includes mosquitto's forwarding.
* ``mqtt-latency``: publish-to-reader latency at 5,000 messages/s: one WebSocket reader subscribed
  to the 100 channels; each message carries its send time as its point time (ms).

mosquitto, the publisher, livedata and the reader share the machine's two cores.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.common import cpu_seconds, http_json, livedata_server
from benchmarks.mosquitto import Mosquitto
from benchmarks.mqttload import Publisher
from benchmarks.scenario import Options
from benchmarks.wsclient import WsClient

TOPICS = 100


def _config(port: int, flush_ms: int = 10) -> str:
    path = Path(tempfile.mkdtemp(prefix="bench-mqtt-")) / "livedata.toml"
    path.write_text(f"""
[[sources.mqtt]]
name = "bench"
url = "mqtt://127.0.0.1:{port}"
topics = ["bench/#"]
flush_ms = {flush_ms}
""")
    return str(path)


def _status(url: str) -> dict[str, Any]:
    status, body = http_json(url + "/api/sources")
    if status != 200:
        raise RuntimeError(f"/api/sources answered {status}")
    doc: dict[str, Any] = msgspec.json.decode(body)["sources"][0]
    return doc


def _wait_up(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(url)["state"] == "up":
            time.sleep(0.3)  # SUBACK
            return
        time.sleep(0.05)
    raise RuntimeError("the MQTT source did not connect")


def _burst(port: int, n: int, q: Any, go: Any) -> None:
    pub = Publisher(port, TOPICS)
    pre = list(pub.packets(n, int(time.time() * 1000)))
    q.put("ready")
    go.wait()
    t0 = time.perf_counter()
    for i in range(0, n, 2000):
        pub.sock.sendall(b"".join(pre[i:i + 2000]))
    q.put(time.perf_counter() - t0)
    time.sleep(1.0)
    pub.close()


def throughput(opts: Options) -> dict[str, Any]:
    n = int(max(50_000, 60_000 * opts.duration) * min(1.0, opts.scale * 10))
    mosq = Mosquitto(extra=["max_queued_messages 0", "max_queued_bytes 0"]).start()
    try:
        with livedata_server("--config", _config(mosq.port)) as srv:
            _wait_up(srv.url)
            ctx = mp.get_context("fork")
            q, go = ctx.Queue(), ctx.Event()
            p = ctx.Process(target=_burst, args=(mosq.port, n, q, go), daemon=True)
            p.start()
            q.get(timeout=120)
            cpu0, mcpu0 = cpu_seconds(srv.pid), cpu_seconds(mosq.proc.pid)  # type: ignore[union-attr]
            t0 = time.monotonic()
            go.set()
            first = None
            stored = 0
            deadline = t0 + 60 + n / 20_000
            while time.monotonic() < deadline:
                st = _status(srv.url)
                stored = int(st["points"])
                if first is None and stored:
                    first = time.monotonic()
                if stored >= n:
                    break
                time.sleep(0.02)
            wall = time.monotonic() - t0
            cpu1, mcpu1 = cpu_seconds(srv.pid), cpu_seconds(mosq.proc.pid)  # type: ignore[union-attr]
            publish_s = q.get(timeout=30)
            p.join(5)
            st = _status(srv.url)
    finally:
        mosq.close()
    return {
        "messages": n, "topics": TOPICS, "stored": stored, "lost": n - stored,
        "messages_per_s": round(stored / wall), "publish_s": round(publish_s, 2), "wall_s": round(wall, 2),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "mosquitto_cpu_pct": round(100 * (mcpu1 - mcpu0) / wall, 1),
        "us_per_message": round((cpu1 - cpu0) / max(1, stored) * 1e6, 2),
        "errors": st.get("error_count", 0), "unit": "QoS 0 publish, QoS 1 subscription, JSON {ts, v}",
    }


def _paced(port: int, rate: float, seconds: float, q: Any, go: Any) -> None:
    pub = Publisher(port, TOPICS)
    q.put("ready")
    go.wait()
    sent = pub.paced(rate, seconds)
    q.put(sent)
    time.sleep(1.0)
    pub.close()


def latency(rate: float) -> Any:
    def run(opts: Options) -> dict[str, Any]:
        seconds = max(3.0, opts.duration)
        mosq = Mosquitto().start()
        lat: list[int] = []
        try:
            with livedata_server("--config", _config(mosq.port)) as srv:
                _wait_up(srv.url)
                ws = WsClient(srv.port)
                ws.recv()  # hello
                for i in range(TOPICS):
                    ws.send({"type": "subscribe", "id": f"s{i}", "channel": f"bench/t{i}"})
                ctx = mp.get_context("fork")
                q, go = ctx.Queue(), ctx.Event()
                p = ctx.Process(target=_paced, args=(mosq.port, rate, seconds, q, go), daemon=True)
                p.start()
                q.get(timeout=60)
                cpu0, t0 = cpu_seconds(srv.pid), time.monotonic()
                warm = time.time() * 1000 + 1000  # the first second warms up
                go.set()
                decode = msgspec.json.Decoder().decode
                ws.sock.settimeout(2.0)
                end = time.monotonic() + seconds + 3
                got = 0
                while time.monotonic() < end:
                    try:
                        msg = ws.recv()
                    except (TimeoutError, OSError):
                        break
                    now = time.time() * 1000
                    if not msg.startswith(b'{"type":"data"'):
                        continue
                    times = decode(msg)["frame"]["data"]["values"][0]
                    got += len(times)
                    lat.extend(int(now - t) for t in times if t >= warm)
                wall = time.monotonic() - t0
                cpu1 = cpu_seconds(srv.pid)
                sent = q.get(timeout=30)
                p.join(5)
                ws.close()
        finally:
            mosq.close()
        lat.sort()

        def pct(p: float) -> float:
            return float(lat[min(len(lat) - 1, int(p / 100 * len(lat)))]) if lat else float("nan")

        return {
            "rate": rate, "topics": TOPICS, "sent": sent, "received": got, "lost": sent - got,
            "lat_p50_ms": pct(50), "lat_p99_ms": pct(99), "lat_max_ms": float(lat[-1]) if lat else float("nan"),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "unit": "publish (send time, ms) to the WebSocket reader; 1 s warm-up left out",
        }

    return run


__all__ = ["latency", "throughput"]
