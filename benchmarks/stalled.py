"""One stalled reader among 500 (issue 9, item 5): what it costs the others, and that it is capped.

Target: a reader that stops reading adds at most 10 ms to the other readers' p99 latency, holds no
more than its buffer cap on the server, and is closed with the reason ``slow``.

One ``livedata serve`` process (``--buffer-bytes`` 1 MiB, the default cap, passed explicitly), one
channel: ``random-walk`` with 100 series and a row every 10 ms (10,000 values/s, its highest
rate), subscribed with ``interval`` 100 (10 messages/s of 10 rows x 100 series, about 10 KB each,
so about 105 KB/s per reader). Two measurement windows in that server, each with a fresh set of
500 healthy readers from ``loadgen.py`` (the same as ``ws-1k``: raw readers in 2 processes, latency
by kernel receipt):

* **baseline** — the 500 healthy readers alone;
* **stalled** — the same 500 readers plus one *stalled* connection: a raw socket with
  ``SO_RCVBUF`` 4 KiB that completes the handshake, subscribes, and never calls ``recv`` again.

An unmeasured 12 s round with 500 readers comes first (the first window on a fresh server is a few
ms slower, whichever it is), and the order of the two windows alternates from run to run
(``--runs 3``: medians), so neither always gets the warmer server.

The stalled connection holds 20 subscriptions of the channel (a dashboard of 20 panels on one
socket). One subscription at 105 KB/s would need about 25 s just to fill the ~2.7 MiB the kernel
buffers for a loopback socket that does not read (server send buffer + client receive buffer),
and the server drops a WebSocket that sends nothing for 1.5 heartbeats (about 20 s, reason
``gone``) before its buffer could pass the cap. With 20 subscriptions (~2.1 MB/s) the kernel is
full in about 1 s, the server's queue for it passes half the cap and its packets are coalesced,
and about 9 s later (each subscription's held values pass the cap: 1 MiB / 12 bytes per value at
10,000 values/s) it is closed as ``slow``: inside the 12 s window.

The stalled reader subscribes just before the window opens (on the next whole second). During both
windows the bench polls ``/metrics`` every 0.25 s (in both, so the polling costs the same):
``livedata_queue_bytes`` (all connections: in the stalled window that is the stalled reader's
queue, the healthy readers keep theirs empty, see the baseline's figure) and
``livedata_slow_disconnects_total``. As soon as the counter moves, the stalled socket is read to its
end (the server aborts a closed slow socket after 2 s) to see the close frame: code 4000, ``slow``.

Figures: ``lat_*``/``all_delivered`` are the healthy readers *with* the stalled one, ``base_*`` the
same without it; ``p99_delta_ms`` = stalled p99 - baseline p99 of the same run (the medians of the
deltas over the runs, not the delta of the medians).

The bench smoke test (``scale`` < 0.05) uses a 64 KiB cap so the stalled reader is closed within
seconds; every bench run uses the real 1 MiB.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks.common import HOST, livedata_server, rss_bytes
from benchmarks.loadgen import LINGER0, LoadSpec, measure, start_load, stop_load, ws_frame, ws_handshake
from benchmarks.scenario import Options, stream_figures
from benchmarks.wsclient import WsClient, wait_data

SERIES = 100
TICKS_PER_S = 100  # random-walk interval=10 ms
BATCH_MS = 100
SUB: dict[str, Any] = {"type": "subscribe", "id": "A", "channel": "random-walk",
                       "params": {"series": SERIES, "interval": 1000 // TICKS_PER_S}, "interval": BATCH_MS}
CAP = 1 << 20
"""The server's per-connection buffer cap (``--buffer-bytes``; this is the default)."""
SMOKE_CAP = 64 << 10
STALLED_SUBS = 20
STALLED_RCVBUF = 4096
WINDOW_S = 12.0
WARM_S = 12.0
POLL_S = 0.25
CLOSE_WAIT_S = 25.0
"""After the stall, how long to wait for the slow close (the ping timeout would close it as
``gone`` at about 1.5 x the 15 s heartbeat)."""

_order = [0]  # alternates the order of the two windows from one run to the next


class StalledReader:
    """A WebSocket that subscribes and then never reads: a small receive buffer, no ``recv``."""

    def __init__(self, port: int, subs: int, rcvbuf: int = STALLED_RCVBUF) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        sock.settimeout(10)
        sock.connect((HOST, port))
        sock.sendall(ws_handshake("/api/ws", port))
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            buf += data
        if buf[9:12] != b"101":
            raise ConnectionError(f"handshake failed: {buf[:200]!r}")
        self.buf = buf[buf.index(b"\r\n\r\n") + 4:]
        self.sock = sock
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.subscribed_at = time.monotonic()
        for k in range(subs):
            sock.sendall(ws_frame(msgspec.json.encode({**SUB, "id": f"S{k}"})))
        # from here on: no recv, until read_close()

    def read_close(self, timeout: float = 5.0) -> tuple[int | None, str, int]:
        """Read everything the server still sends: (close code, reason, bytes read). None: no close frame."""
        sock = self.sock
        buf = bytearray(self.buf)
        got = len(buf)
        i = 0
        deadline = time.monotonic() + timeout
        eof = False
        while True:
            # parse what we have (server frames are not masked)
            while len(buf) - i >= 2:
                ln, h = buf[i + 1] & 0x7F, 2
                if ln == 126:
                    if len(buf) - i < 4:
                        break
                    ln, h = int.from_bytes(buf[i + 2:i + 4], "big"), 4
                elif ln == 127:
                    if len(buf) - i < 10:
                        break
                    ln, h = int.from_bytes(buf[i + 2:i + 10], "big"), 10
                if len(buf) - i < h + ln:
                    break
                if buf[i] & 0x0F == 0x8:
                    payload = bytes(buf[i + h:i + h + ln])
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    return code, payload[2:].decode(errors="replace"), got
                i += h + ln
            del buf[:i]
            i = 0
            if eof or time.monotonic() > deadline:
                return None, "", got
            try:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(1 << 20)
            except (TimeoutError, OSError):
                return None, "", got
            if not data:
                eof = True
            got += len(data)
            buf += data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        self.sock.close()


_GAUGE = re.compile(rb"^(livedata_queue_bytes|livedata_slow_disconnects_total|livedata_connections_open) (\S+)$",
                    re.M)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read()
    return {m[1].decode(): float(m[2]) for m in _GAUGE.finditer(text)}


class Poller(threading.Thread):
    """Polls ``/metrics``; when the slow counter moves, reads the stalled socket to its close frame."""

    def __init__(self, url: str, stalled: StalledReader | None = None) -> None:
        super().__init__(daemon=True, name="metrics-poller")
        self.url = url
        self.stalled = stalled
        self.stop_flag = threading.Event()
        self.slow_seen = threading.Event()
        self.queue_max = 0.0
        self.slow0: float | None = None
        self.slow_after_s: float | None = None
        """Seconds from the stalled reader's subscribe to the first poll that saw the slow counter move."""
        self.slow_wall: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.stalled_bytes = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                m = scrape(self.url)
            except OSError:
                self.errors += 1
                m = {}
            if m:
                slow = m.get("livedata_slow_disconnects_total", 0.0)
                if self.slow0 is None:
                    self.slow0 = slow
                if not self.slow_seen.is_set():  # the stalled reader's queue, while it is open
                    self.queue_max = max(self.queue_max, m.get("livedata_queue_bytes", 0.0))
                if self.stalled is not None and slow > self.slow0 and not self.slow_seen.is_set():
                    self.slow_after_s = time.monotonic() - self.stalled.subscribed_at
                    self.slow_wall = time.time()
                    self.close_code, self.close_reason, self.stalled_bytes = self.stalled.read_close()
                    self.slow_seen.set()
            self.stop_flag.wait(POLL_S)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(10)


def _phase(srv: Any, spec: LoadSpec, opts: Options, window: float, stalled_subs: int) -> dict[str, Any]:
    """One window: a fresh set of healthy readers, plus a stalled reader when ``stalled_subs``."""
    rss0 = rss_bytes(srv.pid)
    load = start_load(spec)
    rss1 = rss_bytes(srv.pid)
    stalled: StalledReader | None = None
    poller: Poller | None = None
    try:
        time.sleep(opts.warmup)
        stalled_wall = time.time()
        if stalled_subs:
            stalled = StalledReader(srv.port, stalled_subs)
        poller = Poller(srv.url, stalled)
        poller.start()
        r = measure(load, srv.pid, 0.0, window)  # opens on the next whole second
        r["window_start"] = load.ctrl[0]  # epoch s
        r["stall_lead_s"] = load.ctrl[0] - stalled_wall if stalled is not None else None
        if stalled is not None:  # not closed within the window: wait a little more (bounded)
            poller.slow_seen.wait(max(0.0, stalled.subscribed_at + CLOSE_WAIT_S - time.monotonic()))
    finally:
        if poller is not None:
            poller.stop()
        stop_load(load)
        if stalled is not None:
            stalled.close()
    r.update(rss_before=rss0, rss_connected=rss1, rss_per_conn=(rss1 - rss0) / max(1, r["connected"]))
    r["queue_max"] = poller.queue_max if poller else None
    r["poller"] = poller
    r["stalled"] = stalled
    return r


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def stalled_reader(readers: int = 500) -> Callable[[Options], dict[str, Any]]:
    def run(opts: Options) -> dict[str, Any]:

        n = opts.n(readers)
        smoke = opts.scale < 0.05
        cap = SMOKE_CAP if smoke else CAP
        window = opts.duration if smoke else max(opts.duration, WINDOW_S)
        with livedata_server("--buffer-bytes", str(cap)) as srv:
            spec = LoadSpec("ws", n, srv.port, "/api/ws", SUB, series=SERIES, msgs_per_s=1000 / BATCH_MS)
            primer = WsClient(srv.port)  # starts the generator (and fills its history) first
            primer.send({**SUB, "id": "primer"})
            wait_data(primer)
            primer.close()  # a primer left unread would be a second stalled reader
            # an unmeasured round first: the first window on a fresh server is a few ms slower
            # (first 500 connections, first allocations), whichever of the two it is
            _phase(srv, spec, opts, min(window, WARM_S), 0)
            stalled_first = _order[0] % 2 == 1
            _order[0] += 1
            phases: dict[str, dict[str, Any]] = {}
            for which in (("stalled", "baseline") if stalled_first else ("baseline", "stalled")):
                phases[which] = _phase(srv, spec, opts, window, STALLED_SUBS if which == "stalled" else 0)
        expected = n * SERIES * TICKS_PER_S
        base = stream_figures({k: v for k, v in phases["baseline"].items() if k not in ("poller", "stalled")},
                               expected, SERIES, TICKS_PER_S)
        raw = phases["stalled"]
        poller: Poller = raw["poller"]
        stalled: StalledReader = raw["stalled"]
        out = stream_figures({k: v for k, v in raw.items() if k not in ("poller", "stalled")},
                              expected, SERIES, TICKS_PER_S)
        for key in ("queue_max", "window_start"):
            out.pop(key, None)
        for key in ("lat_p50_ms", "lat_p99_ms", "lat_max_ms", "all_delivered", "delivered_pct",
                    "server_cpu_pct", "other_cpu_pct", "lost"):
            out["base_" + key] = base.get(key)
        p99, p99_base = out.get("lat_p99_ms"), base.get("lat_p99_ms")
        p50, p50_base = out.get("lat_p50_ms"), base.get("lat_p50_ms")
        out.update({
            "batch_ms": BATCH_MS,
            "window_s": window,
            "stalled_first": stalled_first,
            "p99_delta_ms": None if p99 is None or p99_base is None else round(p99 - p99_base, 2),
            "p50_delta_ms": None if p50 is None or p50_base is None else round(p50 - p50_base, 2),
            "cap_kib": cap / 1024,
            "stalled_subs": STALLED_SUBS,
            "stalled_rcvbuf": stalled.rcvbuf,
            "slow_closed": 1.0 if poller.slow_seen.is_set() else 0.0,
            "slow_close_after_s": None if poller.slow_after_s is None else round(poller.slow_after_s, 2),
            # the slow close, seconds after the window opened (the reader stalled stall_lead_s before it)
            "slow_close_at_window_s": (None if poller.slow_wall is None
                                       else round(poller.slow_wall - raw["window_start"], 2)),
            "stall_lead_s": round(raw["stall_lead_s"], 2),
            "close_frame": (f"{poller.close_code} {poller.close_reason}" if poller.close_code is not None
                            else "none seen"),
            "slow_close_code": poller.close_code,
            "stalled_queue_max_kib": round(poller.queue_max / 1024, 1),
            "base_queue_max_kib": round((phases["baseline"]["queue_max"] or 0.0) / 1024, 1),
            "stalled_bytes_read_kib": round(poller.stalled_bytes / 1024, 1),
            "metrics_poll_errors": poller.errors + phases["baseline"]["poller"].errors,
        })
        print(f"  stalled-500 ({n} readers, {'stalled' if stalled_first else 'baseline'} first): p99 "
              f"{_ms(p99_base)} -> {_ms(p99)} ms (delta {out['p99_delta_ms']}), p50 {_ms(p50_base)} -> {_ms(p50)}; "
              f"server CPU {base['server_cpu_pct']} / {out['server_cpu_pct']} %, other procs "
              f"{base['other_cpu_pct']} / {out['other_cpu_pct']} %; "
              f"delivered {base['all_delivered']} / {out['all_delivered']} %; stalled reader: queue max "
              f"{out['stalled_queue_max_kib']} KiB (cap {cap // 1024}), closed "
              f"{out['close_frame']!r} {out['slow_close_after_s']} s after its subscribe", file=sys.stderr)
        return out

    return run
