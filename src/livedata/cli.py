"""The ``livedata`` command: ``serve``, ``tail``, ``push``, ``sources``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from livedata import __version__
from livedata.config import Config, ConfigError, parse_size
from livedata.core import sizes

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
    p.add_argument("--cors-origin", help="browser origins that may call this server, comma-separated, or * "
                                         "(default http://localhost:3000)")
    p.add_argument("--allowed-hosts", help="host names this server answers besides loopback names and IP "
                                           "addresses (behind a proxy): comma-separated, .example.com for a "
                                           "domain and its subdomains, or *")
    p.add_argument("--broker", help="'memory' (default) or redis://host:6379/0")
    p.add_argument("--redis-prefix", help="key prefix in Redis (default livedata:)")
    p.add_argument("--redis-timeout", type=float, dest="redis_timeout_s",
                   help="a Redis command that takes longer fails, s (default 2)")
    p.add_argument("--retention", type=float, dest="retention_s", help="history kept per channel, s (3600)")
    p.add_argument("--retention-points", type=int, help="history kept per channel, points (200000)")
    p.add_argument("--data-dir", help="keep channels, history and positions on disk in this directory "
                                      "(env LIVEDATA_DATA_DIR; default: in memory)")
    p.add_argument("--fsync", choices=["always", "interval", "never"],
                   help="with --data-dir: fsync before every 204, every second (default), or never")
    p.add_argument("--retention-1s", type=float, dest="retention_1s_s", help="1 s rollups kept, s (86400)")
    p.add_argument("--retention-10s", type=float, dest="retention_10s_s", help="10 s rollups kept, s (604800)")
    p.add_argument("--retention-1m", type=float, dest="retention_1m_s", help="1 min rollups kept, s (7776000)")
    p.add_argument("--retention-10m", type=float, dest="retention_10m_s", help="10 min rollups kept, s (63072000)")
    p.add_argument("--heartbeat", type=float, dest="heartbeat_s", help="heartbeat interval, s (15)")
    p.add_argument("--buffer-bytes", type=_size, help="per-connection outgoing buffer cap (1MiB)")
    p.add_argument("--max-subscriptions", type=int, help="subscriptions per connection (100)")
    p.add_argument("--max-channels", type=int, help="channels in all (10000)")
    p.add_argument("--max-body-bytes", type=_size, help="push body size limit (10MiB)")
    p.add_argument("--max-frame-bytes", type=_size, help="largest WebSocket message accepted (4MiB)")
    p.add_argument("--max-points-per-request", type=int, help="points in one push (1000000)")
    p.add_argument("--max-connections-per-ip", type=int, help="connections per client address (1000)")
    p.add_argument("--trusted-proxies", metavar="CIDRS",
                   help="comma-separated CIDRs of reverse proxies whose Forwarded / X-Forwarded-For name the client "
                        "(per-address limits then count clients, not the proxy; default: none)")
    p.add_argument("--max-connections", type=int,
                   help="client connections in all (default: 90%% of the descriptor limit, less a reserve)")
    p.add_argument("--max-memory", type=_size,
                   help="memory budget, e.g. 512MiB or 2GiB (default: half the machine's or cgroup's memory)")
    p.add_argument("--retention-bytes", type=_size,
                   help="history kept per channel, bytes (default: an eighth of --max-memory)")
    p.add_argument("--max-fields-per-channel", type=int, help="fields one channel may have (1000)")
    p.add_argument("--max-string-length", type=int, help="characters in one string value (65536)")
    p.add_argument("--max-generators", type=int, help="generated channels running at once (32)")
    p.add_argument("--header-timeout", type=float, dest="header_timeout_s",
                   help="seconds to send a request head, and an idle keep-alive connection's next one (10)")
    p.add_argument("--body-timeout", type=float, dest="body_timeout_s",
                   help="seconds to send a push body (60)")
    p.add_argument("--max-held-bytes", type=_size,
                   help="bytes points held by reorder windows may take, in all, e.g. 64MiB (64MiB; with the memory "
                        "broker at most an eighth of --max-memory)")
    p.add_argument("--idempotency-ttl", type=float, dest="idempotency_ttl_s",
                   help="how long an Idempotency-Key is remembered, s (600)")
    p.add_argument("--write-tokens", help="comma-separated tokens allowed to push (env LIVEDATA_WRITE_TOKENS)")
    p.add_argument("--read-tokens", help="comma-separated tokens allowed to subscribe")
    p.add_argument("--metrics-token", help="a token that may read /metrics only (env LIVEDATA_METRICS_TOKEN)")
    p.add_argument("--certfile", help="TLS certificate (PEM)")
    p.add_argument("--keyfile", help="TLS private key (PEM)")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (and where the help is) instead of the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"livedata: {message} (see {self.prog} --help)\n")
def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from livedata import cli_channels

    parser = Parser(prog="livedata", description="Live streaming data for Grafana.")
    parser.add_argument("-V", "--version", action="version", version=f"livedata {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    cli_channels.add_parsers(sub, _client_args)
    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                                description="Print a completion script for bash or zsh. "
                                            "bash: eval \"$(livedata completion bash)\" in ~/.bashrc; "
                                            "zsh: livedata completion zsh > ~/.zfunc/_livedata with ~/.zfunc "
                                            "in fpath before compinit.")
    completion.add_argument("shell", choices=["bash", "zsh"])
    return parser


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="the server (default http://localhost:8080; env LIVEDATA_URL)")
    p.add_argument("--token", default=None, help="a read or write token (env LIVEDATA_TOKEN)")
    p.add_argument("--cacert", default=None, metavar="FILE",
                   help="trust the CA certificate (PEM) that signed the server's certificate (env LIVEDATA_CACERT)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="do not verify the server's TLS certificate (testing only; env LIVEDATA_INSECURE=1)")


def _tail_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", help="channel name, e.g. sensors/kitchen or random-walk")
    _client_args(p)
    p.add_argument("--from", dest="from_", default="now-1m",
                   help="start: epoch ms, RFC 3339 or now-30s/now-5m/... (default now-1m; 'live': no history)")
    p.add_argument("--to", default=None, help="end (default: follow forever)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="param of a generated channel")
    p.add_argument("--fields", default=None, help="comma-separated field names (default all)")
    p.add_argument("--json", action="store_true", help="print each point as a JSON object")
    p.add_argument("--wait", action="store_true",
                   help="if the channel does not exist yet, wait for its first point (default: say so and exit 1)")
    p.add_argument("--max-points", type=int, default=None, metavar="N",
                   help="buckets instead of points: at most N over --from..--to (each bucket: two rows, "
                        "every field's min and max; a bucket printed again replaces the earlier one)")
    p.add_argument("--resolution", type=int, default=None, metavar="MS",
                   help="buckets of at least MS milliseconds instead of points")


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", help="channel name (line protocol goes to CHANNEL/measurement)")
    p.add_argument("file", nargs="?", default=None, help="file to read, or - for stdin (default)")
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
        "retention_s", "retention_points", "data_dir", "fsync", "retention_1s_s", "retention_10s_s",
        "retention_1m_s", "retention_10m_s", "heartbeat_s", "buffer_bytes", "max_subscriptions",
        "max_channels", "max_body_bytes", "max_frame_bytes", "max_points_per_request", "max_connections_per_ip",
        "trusted_proxies", "write_tokens", "read_tokens", "metrics_token", "allowed_hosts",
        "max_connections", "max_memory", "retention_bytes", "max_fields_per_channel", "max_string_length",
        "max_generators", "header_timeout_s", "body_timeout_s",
        "max_held_bytes", "idempotency_ttl_s",
        "certfile", "keyfile",
    ]
    overrides: dict[str, Any] = {k: getattr(ns, k, None) for k in keys}
    import os

    file = getattr(ns, "config", None) or os.environ.get("LIVEDATA_CONFIG") or None
    return Config.load(overrides, file=file)


def raise_descriptor_limit() -> None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit: every connection needs a descriptor."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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


class TLSError(Exception):
    """The certificate or key cannot be used: the sentence says which and why."""


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context from ``--certfile``/``--keyfile`` (None without them).

    Raises:
        TLSError: a file is missing, is not PEM, or the key does not match the certificate.
    """
    if not config.certfile:
        return None
    for flag, path in (("--certfile", config.certfile), ("--keyfile", config.keyfile)):
        if not os.path.isfile(path):
            raise TLSError(f"{flag} {path}: no such file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.certfile, config.keyfile)
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if "KEY_VALUES_MISMATCH" in reason:
            why = f"the key {config.keyfile} does not belong to the certificate {config.certfile}"
        elif "PEM" in reason or "NO_START_LINE" in reason:
            why = (f"{config.certfile} / {config.keyfile} are not a PEM certificate and private key "
                   "(files that start with -----BEGIN ...)")
        else:
            why = reason.lower().replace("_", " ")
        raise TLSError(f"cannot load the TLS certificate {config.certfile}: {why}") from None
    except OSError as exc:
        raise TLSError(f"cannot load the TLS certificate {config.certfile}: {exc.strerror or exc}") from None
    return ctx


async def serve(config: Config, ssl_ctx: ssl.SSLContext | None = None) -> int:
    """Run the server until SIGINT/SIGTERM. Returns the process exit code."""
    from aiohttp import web

    from livedata.brokers.base import BrokerStartError
    from livedata.config import show_size
    from livedata.server.app import create_app
    from livedata.server.server import SERVER

    app = create_app(config)
    # keepalive_timeout: a request head, and an idle connection's next one, must come within it
    # (aiohttp arms it when the connection is made); max_headers: at most 32 lines of 8 KiB.
    # lingering_time: after refusing a body it did not read, aiohttp reads and drops the rest this
    # long (so the client sees the answer, not a reset) -- not the 10 s default: a held connection.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None,
                           keepalive_timeout=config.header_timeout_s, max_headers=32, lingering_time=2.0)
    try:
        await runner.setup()
    except BrokerStartError as exc:
        print(f"livedata: {exc}", file=sys.stderr)
        return 1
    server = app[SERVER]
    assert runner.server is not None
    server.admission.install(runner.server)
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
    store = f"data dir {config.data_dir}, fsync {config.fsync}" if config.data_dir else (
        f"broker {config.broker.split('@')[-1]}")
    log.info("livedata %s listening on %s://%s:%d (%s, %s)", __version__, scheme, shown, port, store, auth)
    if "*" in config.cors_origin and not config.write_tokens:
        log.warning("--cors-origin * without --write-tokens: any web page the user opens may write to this "
                    "server (docs/security.md)")
    budget = server.budget
    # The budget's share for connections bounds them too (24 KiB each): at --max-memory 32MiB that
    # is about 170, whatever the descriptors allow; say which bound is the lower.
    by_budget = budget.caps["connections"] // sizes.CONNECTION
    connections = (f"{server.max_connections} connections" if server.max_connections <= by_budget else
                   f"{by_budget} connections (the memory budget's share: raise --max-memory for more)")
    log.info("memory budget %s (%s), history per channel at most %s; at most %s (%d per address), "
             "%d generated channels", show_size(budget.limit),
             "--max-memory" if config.max_memory else "half of this machine's memory: set --max-memory",
             show_size(config.retention_bytes or budget.limit // 8), connections,
             config.max_connections_per_ip, config.max_generators)
    from livedata.server.ingest.parse import INGEST_FACTOR

    largest = budget.caps["ingest"] // INGEST_FACTOR
    if largest < config.max_body_bytes:
        log.warning("the memory budget holds push bodies of at most %s each, less than --max-body-bytes %s: "
                    "larger pushes get 413 (raise --max-memory, or lower --max-body-bytes)",
                    show_size(largest), show_size(config.max_body_bytes))
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


CLIENT_COMMANDS = ("tail", "push", "sources", "channels", "delete")


def _client_env(ns: argparse.Namespace) -> None:
    """Defaults of the client flags from ``LIVEDATA_URL``, ``_TOKEN``, ``_CACERT``, ``_INSECURE``."""
    ns.url = ns.url or os.environ.get("LIVEDATA_URL") or "http://localhost:8080"
    ns.token = ns.token or os.environ.get("LIVEDATA_TOKEN") or None
    ns.cacert = ns.cacert or os.environ.get("LIVEDATA_CACERT") or None
    if ns.insecure is None:
        ns.insecure = os.environ.get("LIVEDATA_INSECURE", "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handling (e.g. while importing)
        return 130


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    if extra and ns.command == "push" and ns.file is None and len(extra) == 1 and not extra[0].startswith("-"):
        ns.file = extra[0]  # `livedata push CH --url U data.csv`: the file after the options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command in CLIENT_COMMANDS:
        from livedata import cli_channels
        from livedata.cli_client import client_options, push_main, sources_main, tail_main, token_hint

        _client_env(ns)
        logging.basicConfig(level="WARNING", format="livedata: %(message)s")
        if ns.command == "tail":
            return tail_main(ns)
        if ns.command == "sources":
            return sources_main(ns)
        if ns.command == "push":
            if ns.batch < 1:
                parser.error("--batch must be at least 1")
            return push_main(ns)
        return cli_channels.main(ns, client_options(ns), token_hint)
    if ns.command == "completion":
        import shtab

        print(shtab.complete(parser, shell=ns.shell), end="")
        return 0
    if ns.command == "serve":
        try:
            config = config_from_args(ns)
        except ConfigError as exc:
            print(f"livedata: {exc}", file=sys.stderr)
            return 2
        try:
            ssl_ctx = tls_context(config)  # before the server's imports: a wrong file is said at once
        except TLSError as exc:
            print(f"livedata: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        raise_descriptor_limit()
        _install_loop()
        return asyncio.run(serve(config, ssl_ctx))
    parser.error(f"unknown command {ns.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
