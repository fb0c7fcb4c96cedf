"""One typed configuration for the whole server.

Every setting has a typed default here, a key in the config file (``livedata serve --config
livedata.toml``, see :func:`load_file`), a ``LIVEDATA_<NAME>`` environment variable and a
``--name`` command-line flag (see :mod:`livedata.cli`). The command line wins over the
environment, which wins over the file. Sources (``[[sources.mqtt]]``, ``[[sources.stream]]``)
are defined in the file only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from difflib import get_close_matches
from typing import Any

from livedata.core.sourcespec import SourceSpec, SpecError, parse_sources

DEFAULT_CORS = ("http://localhost:3000",)


class ConfigError(ValueError):
    """A setting has a value that cannot be used. ``key`` names the setting when known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
          "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3, "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4}


def parse_size(text: str | int) -> int:
    """Bytes from ``1048576``, ``512KiB``, ``256MiB``, ``1.5GiB`` (binary), ``100MB`` (decimal) or ``64M``
    (binary, as ``ulimit`` and Docker read it).

    Raises:
        ConfigError: not a size.
    """
    if isinstance(text, int):
        return text
    m = _SIZE_RE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ConfigError(f"{text!r} is not a size: write bytes, or a number with KiB, MiB or GiB (e.g. 256MiB)")
    return int(float(m.group(1)) * _UNITS[unit])


def show_size(n: int) -> str:
    """``n`` bytes for a person: ``256 MiB``, ``1.5 GiB``, ``900 B``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{n} B"


SIZE_SETTINGS = frozenset({"max_memory", "retention_bytes", "buffer_bytes", "max_body_bytes", "max_frame_bytes",
                           "max_held_bytes"})
"""Settings given in bytes: their flags and variables take ``KiB``/``MiB``/``GiB`` suffixes too."""


def machine_memory() -> int:
    """Memory this process may use: the smaller of the machine's RAM and its cgroup's limit (0: unknown)."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            limits.append(int(raw))
    return min(limits) if limits else 0


DEFAULT_MEMORY_SHARE = 0.5
"""Without ``--max-memory``, the budget is this share of :func:`machine_memory` (at least 256 MiB)."""
MIN_MEMORY = 32 << 20


def default_max_memory() -> int:
    have = machine_memory()
    return max(256 << 20, int(have * DEFAULT_MEMORY_SHARE)) if have else 1 << 30


def descriptor_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` now (0: unknown)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError):
        return 0
    return soft if soft != getattr(resource, "RLIM_INFINITY", -1) else 1 << 20


FD_RESERVE = 256
"""Descriptors kept free below the limit for what is not a client (Redis, files, the listening socket)."""


def default_max_connections(fds: int) -> int:
    """Client connections allowed with ``fds`` descriptors: 90 % of what is left after the reserve
    (the admission guard's headroom for ``/api/health`` comes on top, and stays below the limit)."""
    if fds <= 0:
        return 1000
    return max(16, int((fds - FD_RESERVE) * 0.9))


def _tokens(value: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    return tuple(t.strip() for t in value.split(",") if t.strip())


@dataclass(frozen=True, slots=True)
class Config:
    """Server settings. Times are in seconds unless the name says ``_ms``."""

    host: str = "127.0.0.1"
    port: int = 8080
    interval_ms: float = 50.0
    """Tick of the original reference stream (``GET /?numSeries=N``)."""
    log_level: str = "info"
    cors_origin: tuple[str, ...] = DEFAULT_CORS
    """Browser origins that may call this server (CORS, and the ``Origin`` check of writes and
    WebSockets). ``*`` allows any page on any site: never without write tokens."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names this server answers besides loopback names and IP addresses: ``name``,
    ``.example.com`` (it and its subdomains) or ``*``. Empty: loopback names only when bound to
    a loopback address, any name otherwise (docs/security.md, DNS rebinding)."""
    broker: str = "memory"
    """``memory`` or a ``redis://host:port/db`` URL."""
    redis_prefix: str = "livedata:"
    redis_timeout_s: float = 2.0
    """How long a Redis command may take before it fails (a write's outcome is then unknown)."""
    retention_s: float = 3600.0
    retention_points: int = 200_000
    data_dir: str = ""
    """Keep channels, history, rollups and positions in this directory (SQLite); empty: in memory."""
    fsync: str = "interval"
    """With ``data_dir``: ``always`` (fsync before every 204), ``interval`` (every second), ``never``."""
    retention_1s_s: float = 86_400.0
    retention_10s_s: float = 7 * 86_400.0
    retention_1m_s: float = 90 * 86_400.0
    retention_10m_s: float = 730 * 86_400.0
    """How long each rollup tier is kept, seconds (by bucket time)."""
    heartbeat_s: float = 15.0
    buffer_bytes: int = 1 << 20
    """Cap of one connection's outgoing buffer; above it the connection is closed as ``slow``."""
    max_subscriptions: int = 100
    max_channels: int = 10_000
    max_body_bytes: int = 10 << 20
    max_points_per_request: int = 1_000_000
    max_frame_bytes: int = 4 << 20
    max_connections_per_ip: int = 1_000
    """Connections of any kind from one client address (more get ``429``; ``/api/health`` still answers)."""
    max_connections: int = 0
    """Client connections in all; 0: derived from the descriptor limit (:func:`default_max_connections`)."""
    max_memory: int = 0
    """The memory budget in bytes (see ``core/budget.py``); 0: derived from the machine (:func:`default_max_memory`)."""
    retention_bytes: int = 0
    """History kept per channel, bytes (as estimated in memory); 0: an eighth of the memory budget."""
    max_fields_per_channel: int = 1_000
    max_string_length: int = 65_536
    """Characters in one string value."""
    max_generators: int = 32
    """Generated channels (distinct params) running at once; they do not count in ``max_channels``."""
    header_timeout_s: float = 10.0
    """A request head (and an idle keep-alive connection's next one) must arrive within this."""
    body_timeout_s: float = 60.0
    """A push body must arrive within this."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of reverse proxies whose ``Forwarded``/``X-Forwarded-For`` name the client
    (``server/clientaddr.py``); empty: those headers are ignored."""
    max_held_bytes: int = 64 << 20
    """Bytes that points held by reorder windows may take in the broker, in all (a push past it: 413 or
    429). The one bound on held points; with the memory broker also at most the memory budget's
    ``held`` share (an eighth of ``max_memory`` less the 16 MiB of caches), where they are counted."""
    idempotency_ttl_s: float = 600.0
    """How long the broker remembers an ``Idempotency-Key`` (a retry within it stores nothing again)."""
    write_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    metrics_token: str = ""
    """A token that may read ``/metrics`` only (a Prometheus scraper's); read and write tokens may too."""
    certfile: str = ""
    keyfile: str = ""
    host_explicit: bool = False
    """True when ``--host`` was given: without tokens we only bind beyond localhost when asked."""
    sources: tuple[SourceSpec, ...] = ()
    """MQTT and upstream stream sources (config file only)."""
    config_file: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}", "port")
        if not 1 <= self.interval_ms <= 60_000:
            raise ConfigError(f"interval must be 1..60000 ms, got {self.interval_ms}", "interval_ms")
        if self.retention_s <= 0:
            raise ConfigError(f"retention must be positive, got {self.retention_s}", "retention_s")
        if self.retention_points <= 0:
            raise ConfigError(f"retention_points must be positive, got {self.retention_points}",
                              "retention_points")
        if self.heartbeat_s <= 0:
            raise ConfigError(f"heartbeat must be positive, got {self.heartbeat_s}", "heartbeat_s")
        if self.buffer_bytes < 4096:
            raise ConfigError(f"buffer_bytes must be at least 4096, got {self.buffer_bytes}", "buffer_bytes")
        for key in ("max_subscriptions", "max_channels", "max_body_bytes", "max_points_per_request",
                    "max_frame_bytes", "max_connections_per_ip", "max_fields_per_channel", "max_string_length",
                    "max_generators"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}", key)
        if self.max_memory and self.max_memory < MIN_MEMORY:
            raise ConfigError(f"max_memory must be at least {MIN_MEMORY >> 20} MiB, got {self.max_memory} bytes",
                              "max_memory")
        for key in ("retention_bytes", "max_connections"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative (0: the default), got {getattr(self, key)}", key)
        for key in ("header_timeout_s", "body_timeout_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}", key)
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, got {self.log_level!r}",
                              "log_level")
        if not 0.05 <= self.redis_timeout_s <= 60:
            raise ConfigError(f"redis_timeout_s must be 0.05..60 s, got {self.redis_timeout_s}", "redis_timeout_s")
        if self.max_held_bytes < 0:
            raise ConfigError(f"max_held_bytes must be 0 (no reorder windows) or more, got {self.max_held_bytes}",
                              "max_held_bytes")
        if self.idempotency_ttl_s < 60:
            raise ConfigError(f"idempotency_ttl_s must be at least 60 s (clients retry for up to 30 s), got "
                              f"{self.idempotency_ttl_s}", "idempotency_ttl_s")
        if not (self.broker == "memory" or self.broker.startswith(("redis://", "rediss://", "unix://"))):
            raise ConfigError(f"broker must be 'memory' or a redis:// URL, got {self.broker!r}", "broker")
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("--certfile and --keyfile go together", "keyfile" if self.certfile else "certfile")
        for h in self.allowed_hosts:
            if not h or (any(c in h for c in "/:@ ") and not h.startswith("[")):
                raise ConfigError(f"--allowed-hosts takes host names without scheme or port, got {h!r}",
                                  "allowed_hosts")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"--trusted-proxies: {cidr!r} is not an IP address or CIDR "
                                  "(e.g. 10.0.0.0/8, 127.0.0.1, ::1)", "trusted_proxies") from None
        if self.fsync not in ("always", "interval", "never"):
            raise ConfigError(f"fsync must be always, interval or never, got {self.fsync!r}", "fsync")
        if self.data_dir and self.broker != "memory":
            raise ConfigError("--data-dir keeps history in this process; with a redis:// broker Redis keeps it: "
                              "give one or the other", "data_dir")
        for name in ("retention_1s_s", "retention_10s_s", "retention_1m_s", "retention_10m_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name[:-2].replace('_', '-')} must be 0 or more seconds", name)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.write_tokens or self.read_tokens)

    @property
    def any_token(self) -> bool:
        """Some token is configured (``--metrics-token`` included)."""
        return bool(self.write_tokens or self.read_tokens or self.metrics_token)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
             file: str | None = None) -> Config:
        """Build a Config from the config ``file`` (if any), then ``LIVEDATA_*`` variables, then
        ``overrides`` (already typed): each wins over the one before.

        Raises:
            ConfigError: a value does not parse or is out of range (a file's error names the
                file and the key).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if file:
            values.update(load_file(file))
        for f in fields(cls):
            if f.name in ("sources", "config_file"):
                continue
            raw = env.get("LIVEDATA_" + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        if "host" in values and "host_explicit" not in values:
            values["host_explicit"] = True
        for key in ("cors_origin", "allowed_hosts", "write_tokens", "read_tokens", "trusted_proxies"):
            if key in values:
                values[key] = _tokens(values[key])
        return cls(**values)


FILE_KEYS: dict[str, str] = {
    "host": "host", "port": "port", "interval": "interval_ms", "log_level": "log_level",
    "cors_origin": "cors_origin", "broker": "broker", "redis_prefix": "redis_prefix",
    "redis_timeout": "redis_timeout_s",
    "retention": "retention_s", "retention_points": "retention_points", "heartbeat": "heartbeat_s",
    "data_dir": "data_dir", "fsync": "fsync", "retention_1s": "retention_1s_s", "retention_10s": "retention_10s_s",
    "retention_1m": "retention_1m_s", "retention_10m": "retention_10m_s",
    "buffer_bytes": "buffer_bytes", "max_subscriptions": "max_subscriptions", "max_channels": "max_channels",
    "max_body_bytes": "max_body_bytes", "max_frame_bytes": "max_frame_bytes",
    "max_points_per_request": "max_points_per_request", "max_connections_per_ip": "max_connections_per_ip",
    "trusted_proxies": "trusted_proxies", "write_tokens": "write_tokens", "read_tokens": "read_tokens",
    "certfile": "certfile", "keyfile": "keyfile", "allowed_hosts": "allowed_hosts", "metrics_token": "metrics_token",
    "max_connections": "max_connections", "max_memory": "max_memory", "retention_bytes": "retention_bytes",
    "max_fields_per_channel": "max_fields_per_channel", "max_string_length": "max_string_length",
    "max_generators": "max_generators", "header_timeout": "header_timeout_s", "body_timeout": "body_timeout_s",
    "max_held_bytes": "max_held_bytes", "idempotency_ttl": "idempotency_ttl_s",
}
"""Config file key (the flag's name, ``-`` or ``_``) to Config field."""
_FIELD_KEYS = {v: k for k, v in FILE_KEYS.items()}


def load_file(path: str) -> dict[str, Any]:
    """The settings of a TOML config file as Config fields (``sources`` parsed into specs).

    Raises:
        ConfigError: the file cannot be read, is not TOML, has an unknown key or a bad value;
            the message starts with the file's name and names the key.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8") from None
    types = {f.name: str(f.type) for f in fields(Config)}
    values: dict[str, Any] = {"config_file": path}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key == "sources":
            try:
                values["sources"] = tuple(parse_sources(value))
            except SpecError as exc:
                raise ConfigError(f"{path}: {exc.key}: {exc.message}", exc.key) from None
            continue
        name = FILE_KEYS.get(key)
        if name is None:
            known = [*FILE_KEYS, "sources"]
            close = get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see docs/sources.md#the-config-file for the keys"
            raise ConfigError(f"{path}: {raw_key}: unknown key ({hint})", raw_key)
        if name in SIZE_SETTINGS and isinstance(value, str):
            try:
                values[name] = parse_size(value)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {raw_key}: {exc}", raw_key) from None
            continue
        values[name] = _file_value(path, raw_key, types[name], value)
    try:
        Config(**values)
    except ConfigError as exc:
        shown = _FIELD_KEYS.get(exc.key or "", exc.key or "")
        detail = exc.message
        for prefix in (f"{exc.key} ", f"{shown} ", "--certfile and --keyfile"):
            if detail.startswith(prefix) and prefix.endswith(" "):
                detail = detail[len(prefix):]
        raise ConfigError(f"{path}: {shown}: {detail}", shown) from None
    return values


def _file_value(path: str, key: str, typ: str, value: Any) -> Any:
    def bad(what: str) -> ConfigError:
        shown = repr(value)
        return ConfigError(f"{path}: {key}: must be {what}, got {shown if len(shown) < 60 else shown[:57] + '...'}",
                           key)

    if typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if typ == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if typ == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if typ.startswith("tuple"):
        if isinstance(value, str):
            return _tokens(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        raise bad("a list of strings")
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _parse(name: str, typ: Any, raw: str) -> Any:
    typ = str(typ)
    if name in SIZE_SETTINGS:
        try:
            return parse_size(raw)
        except ConfigError as exc:
            raise ConfigError(f"LIVEDATA_{name.upper()}: {exc}") from None
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if typ.startswith("tuple"):
            return _tokens(raw)
    except ValueError:
        raise ConfigError(f"LIVEDATA_{name.upper()}: cannot parse {raw!r} as {typ}") from None
    return raw


__all__ = [
    "DEFAULT_CORS",
    "FILE_KEYS",
    "Config",
    "ConfigError",
    "default_max_connections",
    "default_max_memory",
    "descriptor_limit",
    "field",
    "load_file",
    "parse_size",
    "show_size",
]
