"""Upstream streams to points: NDJSON and SSE framing, and the three stream formats. Pure.

An upstream stream source reads messages (NDJSON lines, SSE events or WebSocket text frames)
from a URL and publishes their points on one channel. ``format = "auto"`` tells the format
from the first message:

* the original example's **reference stream**, ``{"series":i,"timestamp":ms,"value":v}`` lines:
  the lines of one timestamp become one row with fields ``series0..N``
  (:class:`ReferenceAssembler`);
* **livedata's own protocol** (a first ``{"type":"hello",...}``): data frames are republished
  with their schema (types, labels), and the last position is kept so that a reconnect resumes
  with ``since`` (:class:`LivedataFollower`) — one livedata can follow another;
* **JSON lines**: each line's JSON is read as an MQTT JSON payload is
  (:func:`livedata.core.payloads.json_points`);
* **line protocol** lines, when asked for by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from livedata.core.frames import Batch, Column, FieldDef, Value
from livedata.core.payloads import Decoded, PayloadError, PayloadFormat, json_points, line_protocol

StreamKind = Literal["auto", "reference", "livedata", "json", "line-protocol"]
STREAM_KINDS: Final[tuple[str, ...]] = ("auto", "reference", "livedata", "json", "line-protocol")
MAX_LINE: Final = 1 << 20
"""Longest NDJSON line or SSE event kept (bytes); a longer one is skipped and counted."""

_decode = msgspec.json.Decoder().decode


class UpstreamError(RuntimeError):
    """The upstream refused the stream (livedata's ``error`` message) or sent what no format reads."""


# --- framing -----------------------------------------------------------------------------------


class LineSplitter:
    """Bytes in, complete lines out (without ``\\n``/``\\r\\n``); a line over ``max_line`` is dropped.

    ``too_long`` counts the lines dropped so, which the caller reports.
    """

    __slots__ = ("_buf", "_skipping", "max_line", "too_long")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False
        self.too_long = 0

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + nl - start > self.max_line:
                self._buf.clear()
                self.too_long += 1
            else:
                if self._buf:
                    self._buf += data[start:nl]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = data[start:nl]
                out.append(line[:-1] if line.endswith(b"\r") else line)
            start = nl + 1
        if start < len(data) and not self._skipping:
            self._buf += data[start:]
            if len(self._buf) > self.max_line:
                self._buf.clear()
                self._skipping = True
                self.too_long += 1
        return out


@dataclass(slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Server-Sent Events: lines in, events out (``data`` lines joined by ``\\n``; comments skipped)."""

    __slots__ = ("_data", "_event", "_id", "_size", "last_id", "max_bytes")

    def __init__(self, max_bytes: int = MAX_LINE) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._size = 0
        self.max_bytes = max_bytes
        self.last_id: str | None = None

    def feed_line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            ev = SseEvent("\n".join(self._data), self._event or "message", self._id)
            self._data = []
            self._event = ""
            self._size = 0
            if self._id is not None:
                self.last_id = self._id
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(value)
            if self._size <= self.max_bytes:
                self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None


# --- the reference stream ----------------------------------------------------------------------


def is_reference_line(obj: Any) -> bool:
    """True for a line of the original example's stream: ``{"series":i,"timestamp":ms,"value":v}``."""
    return (isinstance(obj, dict) and len(obj) == 3 and type(obj.get("series")) is int
            and isinstance(obj.get("timestamp"), int) and isinstance(obj.get("value"), int | float)
            and not isinstance(obj.get("value"), bool))


class ReferenceAssembler:
    """Lines of the reference stream to rows: one row per timestamp, fields ``series0..N``.

    A row is complete when a line with another timestamp comes, or — at the end of a read, see
    :meth:`ready` — when it has as many series as the last complete row had.
    """

    __slots__ = ("_expect", "_t", "_values")

    def __init__(self) -> None:
        self._t: int | None = None
        self._values: dict[str, Value] = {}
        self._expect = 0

    def feed(self, obj: Any) -> list[tuple[int, dict[str, Value]]]:
        if not is_reference_line(obj):
            raise PayloadError(f"not a reference stream line: {str(obj)[:80]}", "format")
        t: int = obj["timestamp"]
        series: int = obj["series"]
        if not 0 <= series < 10_000:
            raise PayloadError(f"series {series} is out of range", "format")
        out: list[tuple[int, dict[str, Value]]] = []
        if self._t is not None and t != self._t:
            out.append(self._take())
        self._t = t
        self._values[f"series{series}"] = obj["value"]
        return out

    def ready(self) -> list[tuple[int, dict[str, Value]]]:
        """The current row, if it has every series the last complete row had."""
        if self._t is not None and self._expect and len(self._values) >= self._expect:
            return [self._take()]
        return []

    def flush(self) -> list[tuple[int, dict[str, Value]]]:
        """The current row, complete or not (the stream ended)."""
        return [self._take()] if self._t is not None else []

    def _take(self) -> tuple[int, dict[str, Value]]:
        assert self._t is not None
        row = (self._t, self._values)
        self._expect = max(self._expect, len(self._values))
        self._t = None
        self._values = {}
        return row


# --- livedata's own protocol -------------------------------------------------------------------


def _field_def(spec: Any) -> FieldDef:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise PayloadError("a data frame's schema field has no name", "format")
    name: str = spec["name"]
    typ = spec.get("type")
    if typ not in ("number", "string", "boolean"):
        raise PayloadError(f"field {name!r}: unsupported type {typ!r}", "format")
    labels = spec.get("labels")
    if isinstance(labels, dict) and labels and all(isinstance(v, str) for v in labels.values()):
        base = name[:name.rindex(" {")] if name.endswith("}") and " {" in name else name
        fd = FieldDef.of(base, typ, labels)
        if fd.key == name:
            return fd
        return FieldDef(name, name, typ, tuple(sorted(labels.items())))
    return FieldDef.of(name, typ)


@dataclass(slots=True)
class LivedataFollower:
    """Messages of a livedata stream (NDJSON, SSE or WebSocket) to batches, remembering positions.

    ``position`` is the last position received: resume with ``since=position`` after a
    reconnect (:func:`resume_url`). ``notices`` collects upstream notices for the log.
    """

    position: str | None = None
    complete: bool = False
    notices: list[str] = field(default_factory=list)
    _time_col: int = -1
    _fields: list[FieldDef | None] = field(default_factory=list)

    def feed(self, obj: Any) -> Batch | None:
        if not isinstance(obj, dict):
            raise PayloadError("a livedata message must be a JSON object", "format")
        kind = obj.get("type")
        if kind == "data":
            batch = self._data(obj.get("frame"))
            pos = obj.get("position")
            if isinstance(pos, str) and pos:
                self.position = pos
            return batch
        if kind == "notice":
            text = obj.get("text")
            if isinstance(text, str):
                self.notices.append(text[:500])
        elif kind == "error":
            raise UpstreamError(f"the upstream refused the stream: {str(obj.get('message'))[:300]}")
        elif kind == "complete":
            self.complete = True
        elif kind not in ("hello", "heartbeat", "pong", "ack", "auth"):
            raise PayloadError(f"unknown livedata message type {str(kind)[:40]!r}", "format")
        return None

    def _data(self, frame: Any) -> Batch | None:
        if not isinstance(frame, dict):
            raise PayloadError("a data message has no frame", "format")
        schema = frame.get("schema")
        if schema is not None:
            specs = schema.get("fields") if isinstance(schema, dict) else None
            if not isinstance(specs, list):
                raise PayloadError("a frame schema needs a list of fields", "format")
            time_col = -1
            defs: list[FieldDef | None] = []
            for i, spec in enumerate(specs):
                if isinstance(spec, dict) and spec.get("type") == "time" and time_col < 0:
                    time_col = i
                    defs.append(None)
                else:
                    defs.append(_field_def(spec))
            if time_col < 0:
                raise PayloadError("a frame schema has no time field", "format")
            self._time_col = time_col
            self._fields = defs
        data = frame.get("data")
        values = data.get("values") if isinstance(data, dict) else None
        if values is None:
            return None
        if self._time_col < 0:
            raise PayloadError("a data frame came before any schema", "format")
        if not isinstance(values, list) or len(values) != len(self._fields) or \
                not all(isinstance(c, list) for c in values):
            raise PayloadError("a data frame's values do not match its schema", "format")
        times = values[self._time_col]
        n = len(times)
        if not n:
            return None
        if any(len(c) != n for c in values) or not all(type(t) is int for t in times):
            raise PayloadError("a data frame's columns differ in length or have a bad time", "format")
        columns: dict[str, Column] = {}
        fields: dict[str, FieldDef] = {}
        for fd, col in zip(self._fields, values, strict=True):
            if fd is None or all(v is None for v in col):
                continue
            columns[fd.key] = col
            fields[fd.key] = fd
        if not columns:
            return None
        return Batch(list(times), columns, fields)


# --- the decoder of one stream -----------------------------------------------------------------


def detect(obj: Any) -> str:
    """The format of a stream from its first (JSON-decoded) message."""
    if isinstance(obj, dict) and obj.get("type") == "hello":
        return "livedata"
    if is_reference_line(obj):
        return "reference"
    return "json"


class StreamDecoder:
    """Messages of one upstream stream to points on one channel (the format told once, if auto)."""

    def __init__(self, channel: str, kind: str = "auto", fmt: PayloadFormat | None = None) -> None:
        self.channel = channel
        self.asked = kind
        self.kind = kind
        self.fmt = fmt or PayloadFormat()
        self.reference = ReferenceAssembler()
        self.follower = LivedataFollower()

    @property
    def position(self) -> str | None:
        return self.follower.position if self.kind == "livedata" else None

    def reconnected(self) -> None:
        """A new connection begins: the format may be told again (a livedata upstream stays so)."""
        if self.asked == "auto" and self.kind != "livedata":
            self.kind = "auto"
        self.reference = ReferenceAssembler()

    def feed(self, message: bytes | str, now_ms: int) -> Decoded:
        """Decode one message (an NDJSON line, SSE data or a WebSocket frame).

        Raises:
            PayloadError: the message gives no points (the stream goes on).
            UpstreamError: the upstream ended the subscription with an error.
        """
        raw = message.encode() if isinstance(message, str) else message
        if not raw.strip():
            return Decoded()
        if self.kind == "line-protocol":
            return Decoded(batches=line_protocol(_text(raw), now_ms, self.fmt.time_unit
                                                 if self.fmt.time_unit != "auto" else "ns", self.channel))
        try:
            obj = _decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            if self.kind == "auto":
                raise UpstreamError(f"the stream is not JSON lines, the reference stream or livedata's "
                                    f"protocol (first message {raw[:60]!r}); set format") from None
            raise PayloadError(f"malformed JSON: {exc}", "json") from None
        if self.kind == "auto":
            self.kind = detect(obj)
        if self.kind == "reference":
            return _points(self.reference.feed(obj))
        if self.kind == "livedata":
            batch = self.follower.feed(obj)
            return Decoded(batches={self.channel: batch}) if batch is not None else Decoded()
        return Decoded(points=json_points(obj, self.fmt, now_ms))

    def end_of_read(self) -> Decoded:
        """Rows complete at the end of a network read (the reference stream's current tick)."""
        return _points(self.reference.ready()) if self.kind == "reference" else Decoded()

    def flush(self) -> Decoded:
        """Everything held (the connection ended)."""
        return _points(self.reference.flush()) if self.kind == "reference" else Decoded()


def _points(rows: list[tuple[int, dict[str, Value]]]) -> Decoded:
    return Decoded(points=rows) if rows else Decoded()


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"not UTF-8 (byte {exc.start})", "encoding") from None


# --- resuming ------------------------------------------------------------------------------------


def resume_url(url: str, position: str | None, since_ms: int | None = None) -> str:
    """``url`` with ``since=position`` (a livedata stream resumes exactly after it).

    Without a position but with ``since_ms`` (the local channel's last time, after a restart),
    ``from`` becomes ``since_ms + 1``.
    """
    if position is None and since_ms is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("since", "from")]
    if position is not None:
        query.append(("since", position))
    else:
        assert since_ms is not None
        query.append(("from", str(since_ms + 1)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def resume_subscribe(message: str, position: str | None, since_ms: int | None = None) -> str:
    """A WebSocket subscribe message with ``since`` (or ``from``) set, as :func:`resume_url`."""
    if position is None and since_ms is None:
        return message
    try:
        obj = _decode(message)
    except msgspec.DecodeError:
        return message
    if not isinstance(obj, dict) or obj.get("type") != "subscribe":
        return message
    if position is not None:
        obj["since"] = position
    else:
        obj.pop("since", None)
        obj["from"] = since_ms + 1 if since_ms is not None else None
    return msgspec.json.encode(obj).decode()


__all__ = [
    "MAX_LINE",
    "STREAM_KINDS",
    "LineSplitter",
    "LivedataFollower",
    "ReferenceAssembler",
    "SseEvent",
    "SseParser",
    "StreamDecoder",
    "UpstreamError",
    "detect",
    "is_reference_line",
    "resume_subscribe",
    "resume_url",
]
