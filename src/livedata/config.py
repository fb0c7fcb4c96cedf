"""One typed configuration for the whole server.

Every setting has a typed default here, a key in the config file (``livedata serve --config
livedata.toml``, see :func:`load_file`), a ``LIVEDATA_<NAME>`` environment variable and a
``--name`` command-line flag (see :mod:`livedata.cli`). The command line wins over the
environment, which wins over the file. Sources (``[[sources.mqtt]]``, ``[[sources.stream]]``)
are defined in the file only.
"""

from __future__ import annotations

import dataclasses
import os
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
    """Origins allowed by CORS and by the WebSocket ``Origin`` check. ``*`` allows any."""
    broker: str = "memory"
    """``memory`` or a ``redis://host:port/db`` URL."""
    redis_prefix: str = "livedata:"
    redis_timeout_s: float = 2.0
    """How long a Redis command may take before it fails (a write's outcome is then unknown)."""
    retention_s: float = 3600.0
    retention_points: int = 200_000
    heartbeat_s: float = 15.0
    buffer_bytes: int = 1 << 20
    """Cap of one connection's outgoing buffer; above it the connection is closed as ``slow``."""
    max_subscriptions: int = 100
    max_channels: int = 10_000
    max_body_bytes: int = 10 << 20
    max_points_per_request: int = 1_000_000
    max_frame_bytes: int = 4 << 20
    max_connections_per_ip: int = 1_000
    max_held_bytes: int = 64 << 20
    """Memory that points held by reorder windows may take, in all (a push past it: 413 or 429)."""
    idempotency_ttl_s: float = 600.0
    """How long the broker remembers an ``Idempotency-Key`` (a retry within it stores nothing again)."""
    write_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
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
                    "max_frame_bytes", "max_connections_per_ip"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}", key)
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

    @property
    def auth_enabled(self) -> bool:
        return bool(self.write_tokens or self.read_tokens)

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
        for key in ("cors_origin", "write_tokens", "read_tokens"):
            if key in values:
                values[key] = _tokens(values[key])
        return cls(**values)


FILE_KEYS: dict[str, str] = {
    "host": "host", "port": "port", "interval": "interval_ms", "log_level": "log_level",
    "cors_origin": "cors_origin", "broker": "broker", "redis_prefix": "redis_prefix",
    "redis_timeout": "redis_timeout_s", "retention": "retention_s",
    "retention_points": "retention_points", "heartbeat": "heartbeat_s",
    "buffer_bytes": "buffer_bytes", "max_subscriptions": "max_subscriptions", "max_channels": "max_channels",
    "max_body_bytes": "max_body_bytes", "max_frame_bytes": "max_frame_bytes",
    "max_points_per_request": "max_points_per_request", "max_connections_per_ip": "max_connections_per_ip",
    "max_held_bytes": "max_held_bytes", "idempotency_ttl": "idempotency_ttl_s",
    "write_tokens": "write_tokens", "read_tokens": "read_tokens", "certfile": "certfile", "keyfile": "keyfile",
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


__all__ = ["DEFAULT_CORS", "FILE_KEYS", "Config", "ConfigError", "field", "load_file"]
