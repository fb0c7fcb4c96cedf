"""The ``livedata`` command: ``serve``, ``tail``, ``push``, ``sources``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from livedata import __version__
from livedata.config import Config, ConfigError

log = logging.getLogger("livedata")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="TOML config file: every flag's setting and the sources (env LIVEDATA_CONFIG); "
                        "flags and LIVEDATA_* variables win over it")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; env LIVEDATA_HOST)")
    p.add_argument("--port", type=int, help="port (default 8080; env LIVEDATA_PORT)")
    p.add_argument("--interval", type=float, dest="interval_ms",
                   help="tick of the reference stream in ms (default 50)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--cors-origin", help="comma-separated allowed origins, or * (default http://localhost:3000)")
    p.add_argument("--broker", help="'memory' (default) or redis://host:6379/0")
    p.add_argument("--redis-prefix", help="key prefix in Redis (default livedata:)")
    p.add_argument("--redis-timeout", type=float, dest="redis_timeout_s",
                   help="a Redis command that takes longer fails, s (default 2)")
    p.add_argument("--retention", type=float, dest="retention_s", help="history kept per channel, s (3600)")
    p.add_argument("--retention-points", type=int, help="history kept per channel, points (200000)")
    p.add_argument("--heartbeat", type=float, dest="heartbeat_s", help="heartbeat interval, s (15)")
    p.add_argument("--buffer-bytes", type=int, help="per-connection outgoing buffer cap (1048576)")
    p.add_argument("--max-subscriptions", type=int, help="subscriptions per connection (100)")
    p.add_argument("--max-channels", type=int, help="channels in all (10000)")
    p.add_argument("--max-body-bytes", type=int, help="push body size limit (10485760)")
    p.add_argument("--max-frame-bytes", type=int, help="largest WebSocket message accepted (4194304)")
    p.add_argument("--max-points-per-request", type=int, help="points in one push (1000000)")
    p.add_argument("--max-connections-per-ip", type=int, help="connections per client address (1000)")
    p.add_argument("--max-held-bytes", type=int,
                   help="memory for points held by reorder windows, in all (67108864)")
    p.add_argument("--idempotency-ttl", type=float, dest="idempotency_ttl_s",
                   help="how long an Idempotency-Key is remembered, s (600)")
    p.add_argument("--write-tokens", help="comma-separated tokens allowed to push (env LIVEDATA_WRITE_TOKENS)")
    p.add_argument("--read-tokens", help="comma-separated tokens allowed to subscribe")
    p.add_argument("--certfile", help="TLS certificate (PEM)")
    p.add_argument("--keyfile", help="TLS private key (PEM)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livedata", description="Live streaming data for Grafana.")
    parser.add_argument("--version", action="version", version=f"livedata {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    _serve_args(serve)
    tail = sub.add_parser("tail", help="print a channel's points as they arrive",
                          description="Print a channel's points as they arrive, one line per point.")
    _tail_args(tail)
    push = sub.add_parser("push", help="push points from a file or stdin (NDJSON, CSV or line protocol)",
                          description="Push points from a file or stdin: NDJSON, CSV (header row) or Influx "
                                      "line protocol, detected from the first line.")
    _push_args(push)
    sources = sub.add_parser("sources", help="show the server's MQTT and stream sources",
                             description="Show each source of a running server: state, last message, "
                                         "message and error counts (GET /api/sources).")
    _client_args(sources)
    sources.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return parser


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="the server (default http://localhost:8080; env LIVEDATA_URL)")
    p.add_argument("--token", default=None, help="a read or write token (env LIVEDATA_TOKEN)")


def _tail_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", help="channel name, e.g. sensors/kitchen or random-walk")
    _client_args(p)
    p.add_argument("--from", dest="from_", default="now-1m",
                   help="start: epoch ms, RFC 3339 or now-30s/now-5m/... (default now-1m; 'live': no history)")
    p.add_argument("--to", default=None, help="end (default: follow forever)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="param of a generated channel")
    p.add_argument("--fields", default=None, help="comma-separated field names (default all)")
    p.add_argument("--json", action="store_true", help="print each point as a JSON object")


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", help="channel name (line protocol goes to CHANNEL/measurement)")
    p.add_argument("file", nargs="?", default="-", help="file to read, or - for stdin (default)")
    _client_args(p)
    p.add_argument("--format", choices=["auto", "ndjson", "csv", "lp"], default="auto",
                   help="input format (default: detected from the first non-empty line)")
    p.add_argument("--precision", choices=["ns", "us", "ms", "s"], default=None,
                   help="unit of numeric timestamps (default ns for line protocol, ms otherwise)")
    p.add_argument("--batch", type=int, default=5000, help="points per request (default 5000)")
    p.add_argument("--follow", "-f", action="store_true", help="keep reading the file as it grows (like tail -f)")
    p.add_argument("--retry", type=float, default=10.0, metavar="SECONDS",
                   help="keep retrying a batch this long on connection errors and 503 (default 10)")


def config_from_args(ns: argparse.Namespace) -> Config:
    keys = [
        "host", "port", "interval_ms", "log_level", "cors_origin", "broker", "redis_prefix", "redis_timeout_s",
        "retention_s", "retention_points", "heartbeat_s", "buffer_bytes", "max_subscriptions",
        "max_channels", "max_body_bytes", "max_frame_bytes", "max_points_per_request", "max_connections_per_ip",
        "max_held_bytes", "idempotency_ttl_s",
        "write_tokens", "read_tokens",
        "certfile", "keyfile",
    ]
    overrides: dict[str, Any] = {k: getattr(ns, k, None) for k in keys}
    import os

    file = getattr(ns, "config", None) or os.environ.get("LIVEDATA_CONFIG") or None
    return Config.load(overrides, file=file)


def _install_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


GC_THRESHOLDS = (10_000, 20, 100)
"""Young collections every 10,000 allocations instead of 700; full ones about 280 times rarer."""


def _tune_gc() -> None:
    """Keep the collector's pauses out of the streams.

    A server holds a large, stable heap (per-connection objects, retained chunks) and allocates
    mostly short-lived objects, which reference counting frees. With CPython's defaults a full
    collection walks the whole heap every few seconds under load: 0.3-0.5 s pauses with 10,000
    WebSockets (benchmarks/README.md). Objects alive at start-up are frozen out of collection,
    and the thresholds are raised; cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: Config) -> int:
    """Run the server until SIGINT/SIGTERM. Returns the process exit code."""
    from aiohttp import web

    from livedata.server.app import create_app

    app = create_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    ssl_ctx = None
    if config.certfile:
        import ssl

        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.certfile, config.keyfile)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx, backlog=4096,
                       reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            print(f"livedata: port {config.port} on {config.host} is already in use "
                  "(stop the other server or pass --port)", file=sys.stderr)
        else:
            print(f"livedata: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    _tune_gc()
    scheme = "https" if ssl_ctx else "http"
    shown = "localhost" if config.host in ("127.0.0.1", "::1", "localhost") else config.host
    port = config.port
    for s in getattr(site._server, "sockets", None) or []:
        if s.family in (socket.AF_INET, socket.AF_INET6):
            port = s.getsockname()[1]
            break
    auth = "tokens required" if config.auth_enabled else (
        "no tokens: bound to localhost only" if not config.host_explicit else "no tokens configured")
    log.info("livedata %s listening on %s://%s:%d (broker %s, %s)", __version__, scheme, shown, port,
             config.broker.split("@")[-1], auth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command in ("tail", "push", "sources"):
        import os

        from livedata.cli_client import push_main, sources_main, tail_main

        ns.url = ns.url or os.environ.get("LIVEDATA_URL") or "http://localhost:8080"
        ns.token = ns.token or os.environ.get("LIVEDATA_TOKEN") or None
        logging.basicConfig(level="WARNING", format="livedata: %(message)s")
        if ns.command == "tail":
            return tail_main(ns)
        if ns.command == "sources":
            return sources_main(ns)
        if ns.batch < 1:
            parser.error("--batch must be at least 1")
        return push_main(ns)
    if ns.command == "serve":
        try:
            config = config_from_args(ns)
        except ConfigError as exc:
            print(f"livedata: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        _install_loop()
        return asyncio.run(serve(config))
    parser.error(f"unknown command {ns.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
