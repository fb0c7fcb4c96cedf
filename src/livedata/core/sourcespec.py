"""Source definitions from the config file, validated. Pure.

``[[sources.mqtt]]`` and ``[[sources.stream]]`` tables become :class:`MqttSpec` and
:class:`StreamSpec`. Every problem raises :class:`SpecError` naming the key
(``sources.mqtt[0].qos``) and saying what is wrong; see docs/sources.md for every key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from difflib import get_close_matches
from typing import Any, Final
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from livedata.core.payloads import DEFAULT_TIME_KEYS, KINDS, TIME_UNITS, JsonPath, PayloadFormat
from livedata.core.protocol import ProtocolError, check_channel
from livedata.core.topics import ChannelTemplate, TemplateError, check_filter
from livedata.core.upstream import STREAM_KINDS

STATUS_PREFIX: Final = "_sources/"
"""Status channels: ``_sources/<source name>``, written by the server running the source only."""
NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
DEFAULT_FLUSH_MS: Final = 10
DEFAULT_MAX_PAYLOAD: Final = 1 << 20


class SpecError(ValueError):
    """A source key with a value that cannot be used: ``key`` names it, the message says why."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class TlsSpec:
    ca_file: str = ""
    certfile: str = ""
    keyfile: str = ""
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class MqttSpec:
    """One ``[[sources.mqtt]]``: a connection to an MQTT broker and what to subscribe to."""

    name: str
    host: str
    port: int
    topics: tuple[str, ...]
    channel: ChannelTemplate
    payload: PayloadFormat
    tls: TlsSpec | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""
    qos: int = 1
    keepalive_s: int = 30
    clean_session: bool = False
    session_expiry_s: int = 86_400
    flush_ms: int = DEFAULT_FLUSH_MS
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
    url: str = ""

    @property
    def kind(self) -> str:
        return "mqtt"

    @property
    def display_url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One ``[[sources.stream]]``: an upstream NDJSON, SSE or WebSocket stream into one channel."""

    name: str
    url: str
    channel: str
    format: str
    payload: PayloadFormat
    subscribe: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    flush_ms: int = DEFAULT_FLUSH_MS
    tls: TlsSpec | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD

    @property
    def kind(self) -> str:
        return "stream"

    @property
    def display_url(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


SourceSpec = MqttSpec | StreamSpec

_MQTT_KEYS: Final = (
    "name", "url", "topics", "channel", "format", "qos", "username", "password", "client_id",
    "json_path", "time_key", "time_unit", "timezone", "keepalive", "clean_session", "session_expiry",
    "flush_ms", "ca_file", "certfile", "keyfile", "tls_insecure", "max_payload_bytes",
)
_STREAM_KEYS: Final = (
    "name", "url", "channel", "format", "subscribe", "headers", "json_path", "time_key", "time_unit",
    "timezone", "flush_ms", "ca_file", "certfile", "keyfile", "tls_insecure", "max_payload_bytes",
)


def parse_sources(table: Any, where: str = "sources") -> list[SourceSpec]:
    """The ``[sources]`` table: ``mqtt`` and ``stream`` arrays of tables.

    Raises:
        SpecError: the first problem, naming its key.
    """
    if not isinstance(table, Mapping):
        raise SpecError(where, "must be a table with [[sources.mqtt]] and [[sources.stream]] entries")
    _unknown(table, ("mqtt", "stream"), where)
    specs: list[SourceSpec] = []
    for kind, parse in (("mqtt", parse_mqtt), ("stream", parse_stream)):
        entries = table.get(kind, [])
        if isinstance(entries, Mapping):
            entries = [entries]
        if not isinstance(entries, list):
            raise SpecError(f"{where}.{kind}", f"must be an array of tables: write [[{where}.{kind}]]")
        for i, entry in enumerate(entries):
            specs.append(parse(entry, f"{where}.{kind}[{i}]", i))
    seen: dict[str, str] = {}
    for spec, key in zip(specs, _keys(table, where), strict=True):
        if spec.name in seen:
            raise SpecError(f"{key}.name", f"{spec.name!r} is also the name of {seen[spec.name]}; "
                            "give each source its own name")
        seen[spec.name] = key
    return specs


def _keys(table: Mapping[str, Any], where: str) -> list[str]:
    out: list[str] = []
    for kind in ("mqtt", "stream"):
        entries = table.get(kind, [])
        n = 1 if isinstance(entries, Mapping) else len(entries)
        out.extend(f"{where}.{kind}[{i}]" for i in range(n))
    return out


def _unknown(entry: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in entry:
        if key not in allowed:
            close = get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
            raise SpecError(f"{where}.{key}", f"unknown key{hint}")


def _str(entry: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = entry.get(key, default)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{where}.{key}", f"must be a string, got {_show(value)}")
    return value


def _int(entry: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"{where}.{key}", f"must be an integer from {lo} to {hi}, got {_show(value)}")
    return value


def _bool(entry: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{where}.{key}", f"must be true or false, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice(entry: Mapping[str, Any], key: str, where: str, default: str, allowed: tuple[str, ...]) -> str:
    value = entry.get(key, default)
    if value not in allowed:
        raise SpecError(f"{where}.{key}", f"must be one of {', '.join(allowed)}; got {_show(value)}")
    return str(value)


def _name(entry: Mapping[str, Any], where: str, default: str) -> str:
    name = _str(entry, "name", where)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", default).strip("-")[:64] or "source"
    elif not NAME_RE.fullmatch(name):
        raise SpecError(f"{where}.name", f"{_show(name)} must be 1 to 64 of A-Z a-z 0-9 _ . -")
    return name


def _payload(entry: Mapping[str, Any], where: str, kind: str) -> PayloadFormat:
    path = None
    raw_path = _str(entry, "json_path", where)
    if raw_path is not None:
        try:
            path = JsonPath.parse(raw_path)
        except ValueError as exc:
            raise SpecError(f"{where}.json_path", str(exc)) from None
    raw_keys = entry.get("time_key", None)
    if raw_keys is None:
        keys: tuple[str, ...] = DEFAULT_TIME_KEYS
    elif isinstance(raw_keys, str):
        keys = (raw_keys,) if raw_keys else ()
    elif isinstance(raw_keys, list) and all(isinstance(k, str) and k for k in raw_keys):
        keys = tuple(raw_keys)
    else:
        raise SpecError(f"{where}.time_key", "must be a key name, a list of key names, or \"\" for the "
                        f"arrival time; got {_show(raw_keys)}")
    unit = _choice(entry, "time_unit", where, "auto", TIME_UNITS)
    tz: tzinfo = UTC
    zone = _str(entry, "timezone", where)
    if zone:
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SpecError(f"{where}.timezone", f"unknown time zone {_show(zone)}; use an IANA name "
                            "like Europe/Berlin or UTC") from None
    payload_kind = kind if kind in KINDS else "json"
    return PayloadFormat(payload_kind, path, keys, unit, tz)  # type: ignore[arg-type]


def _tls(entry: Mapping[str, Any], where: str, on: bool) -> TlsSpec | None:
    ca = _str(entry, "ca_file", where, "") or ""
    cert = _str(entry, "certfile", where, "") or ""
    key = _str(entry, "keyfile", where, "") or ""
    insecure = _bool(entry, "tls_insecure", where, False)
    if bool(cert) != bool(key):
        raise SpecError(f"{where}.{'keyfile' if cert else 'certfile'}", "certfile and keyfile go together")
    if not on:
        for k, v in (("ca_file", ca), ("certfile", cert), ("tls_insecure", insecure)):
            if v:
                raise SpecError(f"{where}.{k}", "is for TLS: use an mqtts://, https:// or wss:// url")
        return None
    return TlsSpec(ca, cert, key, insecure)


def parse_mqtt(entry: Any, where: str = "sources.mqtt[0]", index: int = 0) -> MqttSpec:
    """One ``[[sources.mqtt]]`` table. Raises SpecError."""
    if not isinstance(entry, Mapping):
        raise SpecError(where, "must be a table")
    _unknown(entry, _MQTT_KEYS, where)
    url = _str(entry, "url", where)
    if not url:
        raise SpecError(f"{where}.url", "is required, like mqtt://127.0.0.1:1883 (or mqtts:// for TLS)")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise SpecError(f"{where}.url", f"{_show(url)} must start with mqtt:// or mqtts://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise SpecError(f"{where}.url", f"{_show(url)} has a bad port") from None
    if not host:
        raise SpecError(f"{where}.url", f"{_show(url)} has no host")
    if parts.path not in ("", "/") or parts.query:
        raise SpecError(f"{where}.url", f"{_show(url)}: put topics in the topics key, not in the url")
    tls_on = parts.scheme in ("mqtts", "ssl")
    port = port or (8883 if tls_on else 1883)
    raw_topics = entry.get("topics")
    if isinstance(raw_topics, str):
        raw_topics = [raw_topics]
    if not isinstance(raw_topics, list) or not raw_topics:
        raise SpecError(f"{where}.topics", "is required: a list of topic filters like [\"sensors/#\"]")
    topics: list[str] = []
    for i, t in enumerate(raw_topics):
        try:
            topics.append(check_filter(t))
        except ValueError as exc:
            raise SpecError(f"{where}.topics[{i}]", str(exc)) from None
    try:
        template = ChannelTemplate.parse(_str(entry, "channel", where, "{topic}") or "")
    except TemplateError as exc:
        raise SpecError(f"{where}.channel", str(exc)) from None
    if template.literal:
        try:
            check_channel(template.text)
        except ProtocolError as exc:
            raise SpecError(f"{where}.channel", str(exc)) from None
    fmt = _choice(entry, "format", where, "auto", KINDS)
    username = _str(entry, "username", where)
    password = _str(entry, "password", where)
    if username is None and parts.username:
        username = unquote(parts.username)
        password = password if password is not None else unquote(parts.password or "") or None
    if password is not None and username is None:
        raise SpecError(f"{where}.password", "needs a username")
    name = _name(entry, where, f"mqtt-{host}-{port}" + (f"-{index}" if index else ""))
    client_id = _str(entry, "client_id", where)
    if client_id is None:
        digest = hashlib.sha1(f"{name}\n{host}:{port}\n{','.join(topics)}".encode()).hexdigest()[:10]
        client_id = f"livedata-{digest}"
    elif not 1 <= len(client_id.encode()) <= 65_535:
        raise SpecError(f"{where}.client_id", "must be 1 to 65535 bytes")
    return MqttSpec(
        name=name, host=host, port=port, topics=tuple(topics), channel=template,
        payload=_payload(entry, where, fmt), tls=_tls(entry, where, tls_on),
        username=username, password=password, client_id=client_id,
        qos=_int(entry, "qos", where, 1, 0, 2),
        keepalive_s=_int(entry, "keepalive", where, 30, 5, 3600),
        clean_session=_bool(entry, "clean_session", where, False),
        session_expiry_s=_int(entry, "session_expiry", where, 86_400, 0, 0xFFFFFFFF),
        flush_ms=_int(entry, "flush_ms", where, DEFAULT_FLUSH_MS, 0, 10_000),
        max_payload_bytes=_int(entry, "max_payload_bytes", where, DEFAULT_MAX_PAYLOAD, 16, 256 << 20),
        url=url,
    )


def parse_stream(entry: Any, where: str = "sources.stream[0]", index: int = 0) -> StreamSpec:
    """One ``[[sources.stream]]`` table. Raises SpecError."""
    if not isinstance(entry, Mapping):
        raise SpecError(where, "must be a table")
    _unknown(entry, _STREAM_KEYS, where)
    url = _str(entry, "url", where)
    if not url:
        raise SpecError(f"{where}.url", "is required, like http://127.0.0.1:8080/?numSeries=3 or ws://...")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise SpecError(f"{where}.url", f"{_show(url)} must be an http://, https://, ws:// or wss:// url")
    try:
        _ = parts.port
    except ValueError:
        raise SpecError(f"{where}.url", f"{_show(url)} has a bad port") from None
    channel = _str(entry, "channel", where)
    if not channel:
        raise SpecError(f"{where}.channel", "is required: the channel the stream's points go to")
    try:
        check_channel(channel)
    except ProtocolError as exc:
        raise SpecError(f"{where}.channel", str(exc)) from None
    fmt = _choice(entry, "format", where, "auto", STREAM_KINDS)
    sub = entry.get("subscribe")
    if sub is not None:
        if parts.scheme not in ("ws", "wss"):
            raise SpecError(f"{where}.subscribe", "is the first message on a WebSocket: use a ws:// url")
        if isinstance(sub, Mapping):
            sub = msgspec.json.encode(dict(sub)).decode()
        elif not isinstance(sub, str):
            raise SpecError(f"{where}.subscribe", f"must be a string or a table, got {_show(sub)}")
    headers = entry.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in headers.items()):
        raise SpecError(f"{where}.headers", "must be a table of strings, like {Authorization = \"Bearer ...\"}")
    for k, v in headers.items():
        if any(c in k + v for c in "\r\n\x00"):
            raise SpecError(f"{where}.headers.{k}", "must not contain line breaks")
    name = _name(entry, where, f"stream-{channel}")
    return StreamSpec(
        name=name, url=url, channel=channel, format=fmt,
        payload=_payload(entry, where, "json" if fmt in ("auto", "reference", "livedata") else fmt),
        subscribe=sub, headers=tuple(headers.items()),
        flush_ms=_int(entry, "flush_ms", where, DEFAULT_FLUSH_MS, 0, 10_000),
        tls=_tls(entry, where, parts.scheme in ("https", "wss")),
        max_payload_bytes=_int(entry, "max_payload_bytes", where, DEFAULT_MAX_PAYLOAD, 16, 256 << 20),
    )


__all__ = ["STATUS_PREFIX", "MqttSpec", "SourceSpec", "SpecError", "StreamSpec", "TlsSpec", "parse_mqtt",
           "parse_sources", "parse_stream"]
