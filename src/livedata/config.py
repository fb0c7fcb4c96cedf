"""One typed configuration for the whole server.

Every setting has a typed default here, a ``LIVEDATA_<NAME>`` environment variable and a
``--name`` command-line flag (see :mod:`livedata.cli`). The command line wins over the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_CORS = ("http://localhost:3000",)


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


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
    write_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    certfile: str = ""
    keyfile: str = ""
    host_explicit: bool = False
    """True when ``--host`` was given: without tokens we only bind beyond localhost when asked."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        if not 1 <= self.interval_ms <= 60_000:
            raise ConfigError(f"interval must be 1..60000 ms, got {self.interval_ms}")
        if self.retention_s <= 0 or self.retention_points <= 0:
            raise ConfigError("retention must be positive")
        if self.buffer_bytes < 4096:
            raise ConfigError("buffer_bytes must be at least 4096")
        if not (self.broker == "memory" or self.broker.startswith(("redis://", "rediss://", "unix://"))):
            raise ConfigError(f"broker must be 'memory' or a redis:// URL, got {self.broker!r}")
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("--certfile and --keyfile go together")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.write_tokens or self.read_tokens)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from ``LIVEDATA_*`` variables, then ``overrides`` (already typed).

        Raises:
            ConfigError: a value does not parse or is out of range.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
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


__all__ = ["DEFAULT_CORS", "Config", "ConfigError", "field"]
