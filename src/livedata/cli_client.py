"""``livedata tail`` and ``livedata push``: the client side of the command line (see cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import re
import signal
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import msgspec

from livedata.client import Client, Frame, LivedataError, Notice, Value, to_columns
from livedata.core.clock import wall_ms
from livedata.tasks import cancel_and_wait

FLUSH_S = 0.2
"""A streamed input (stdin pipe, ``--follow``) is sent at most this long after a line arrives."""


def _err(text: str) -> None:
    print(f"livedata: {text}", file=sys.stderr, flush=True)


# --- tail ---------------------------------------------------------------------------------------


def iso_ms(ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    try:
        dt = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _show(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    return repr(value) if isinstance(value, float) else str(value)


def format_frame(frame: Frame, as_json: bool = False) -> str:
    """One line per point: ``<time ISO> name=value ...`` (``(late)`` at the end of points older
    than one printed before)."""
    out: list[str] = []
    cols = list(frame.fields.items())
    for i, t in enumerate(frame.times):
        if as_json:
            point: dict[str, Any] = {"time": t}
            point.update({k: c[i] for k, c in cols if c[i] is not None})
            if frame.is_late(i):
                point["late"] = True
            out.append(msgspec.json.encode(point).decode())
            continue
        parts = [iso_ms(t)]
        parts.extend(f"{k}={_show(c[i])}" for k, c in cols if c[i] is not None)
        if frame.is_late(i):
            parts.append("(late)")
        out.append(" ".join(parts))
    return "".join(line + "\n" for line in out)


async def tail(ns: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, str] = {}
    for kv in ns.param:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            _err(f"--param wants K=V, got {kv!r}")
            return 2
        params[key] = value
    from_ = None if ns.from_ in ("", "live", "none") else ns.from_
    fields = [f for f in ns.fields.split(",") if f] if ns.fields else None

    def on_notice(n: Notice) -> None:
        _err(f"{n.level}: {n.text}")

    async with Client(ns.url, ns.token, on_notice=on_notice) as client:
        try:
            sub = await client.subscribe(ns.channel, params or None, from_=from_, to=ns.to, fields=fields)
            async for item in sub:
                if isinstance(item, Frame) and len(item):
                    out.write(format_frame(item, ns.json))
                    out.flush()
        except LivedataError as exc:
            _err(exc.message)
            return 1
    return 0


def tail_main(ns: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(ns, sys.stdout))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # | head: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --- sources ----------------------------------------------------------------------------------------


def _clock(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def format_sources(doc: dict[str, Any]) -> str:
    """The sources of ``GET /api/sources`` as a table."""
    rows = [("name", "kind", "state", "since", "last message", "messages", "errors", "url")]
    for s in doc.get("sources", []):
        rows.append((str(s.get("name")), str(s.get("kind")), str(s.get("state")), _clock(s.get("since")),
                     _clock(s.get("last_message")), f"{int(s.get('messages') or 0):,}",
                     f"{int(s.get('error_count') or 0):,}", str(s.get("url"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for s in doc.get("sources", []):
        if s.get("state") != "up" and s.get("last_error"):
            lines.append(f"{s.get('name')}: {s.get('last_error')}")
    if len(rows) == 1:
        lines.append("(no sources: define them in the config file, see docs/sources.md)")
    return "\n".join(lines)


def sources_main(ns: argparse.Namespace) -> int:
    req = urllib.request.Request(ns.url.rstrip("/") + "/api/sources")
    if ns.token:
        req.add_header("Authorization", f"Bearer {ns.token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        with contextlib.suppress(Exception):
            text = str(msgspec.json.decode(text)["error"])
        print(f"livedata: {ns.url} answered {exc.code}: {text}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"livedata: cannot reach {ns.url}: {reason}", file=sys.stderr)
        return 1
    if ns.json:
        print(body.decode())
        return 0
    print(format_sources(msgspec.json.decode(body)))
    return 0


# --- push: reading --------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LP = re.compile(r"^(?:\\.|[^\s,\\])+(?:,\S*)?\s+\S*=")
_TIME_TO_MS: dict[str, Callable[[int | float], int]] = {
    "ns": lambda v: int(v // 1_000_000),
    "us": lambda v: int(v // 1_000),
    "ms": int,
    "s": lambda v: int(v * 1000),
}
_PREFIX = re.compile(r"^(?:point|line) \d+: ")


def detect_format(line: str) -> str:
    """``ndjson`` (a JSON object per line, or one JSON array), ``lp`` or ``csv``."""
    text = line.lstrip()
    if text[:1] in ("{", "["):
        return "ndjson"
    if text.startswith("#") or _LP.match(text):
        return "lp"
    return "csv"


def csv_value(text: str) -> Value:
    """A CSV cell: numbers as numbers, true/false as booleans, empty as missing, else a string."""
    if text == "":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


class InputError(ValueError):
    pass


@dataclass
class Parser:
    """Turns input lines into points (or line protocol text) with their line numbers."""

    fmt: str
    precision: str
    header: list[str] | None = None
    to_ms: Callable[[int | float], int] = field(init=False)

    def __post_init__(self) -> None:
        self.to_ms = _TIME_TO_MS[self.precision]

    def _time(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.to_ms(value)
        return value

    def point(self, line: str) -> dict[str, Any] | str | None:
        """The point of one line (``str`` for line protocol), None for a line without one."""
        if not line.strip():
            return None
        if self.fmt == "lp":
            return None if line.lstrip().startswith("#") else line
        if self.fmt == "ndjson":
            try:
                obj = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise InputError(f"malformed JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise InputError("expected one JSON object per line")
            if "time" in obj:
                obj["time"] = self._time(obj["time"])
            return obj
        row = next(csv.reader([line]))
        if self.header is None:
            self.header = [h.strip() for h in row]
            if len(set(self.header)) != len(self.header) or not all(self.header):
                raise InputError("the CSV header needs unique, non-empty column names")
            return None
        if len(row) != len(self.header):
            raise InputError(f"{len(row)} values for {len(self.header)} columns")
        point: dict[str, Any] = {}
        for name, cell in zip(self.header, row, strict=True):
            v = csv_value(cell.strip())
            if name == "time":
                if v is not None:
                    point["time"] = self._time(v)
            elif v is not None:
                point[name] = v
        return point


@dataclass
class PushStats:
    points: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        took = max(time.monotonic() - self.started, 1e-9)
        return (f"pushed {self.points} points in {took:.2f} s ({self.points / took:,.0f} points/s), "
                f"{self.errors} error{'' if self.errors == 1 else 's'}")


async def _read_chunks(src: BinaryIO, regular: bool, follow: bool, stop: asyncio.Event,
                       queue: asyncio.Queue[bytes | None]) -> None:
    """Feed ``queue`` with chunks of input; None at the end."""
    try:
        if regular:
            while not stop.is_set():
                data = await asyncio.to_thread(src.read, 1 << 20)
                if data:
                    await queue.put(data)
                    continue
                if not follow:
                    break
                with contextlib.suppress(OSError, ValueError):
                    if os.fstat(src.fileno()).st_size < src.tell():  # truncated (log rotation): start over
                        src.seek(0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        else:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=1 << 24)
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), src)
            try:
                while not stop.is_set():
                    data = await reader.read(1 << 16)
                    if not data:
                        break
                    await queue.put(data)
            finally:
                transport.close()
    finally:
        await queue.put(None)


class Pusher:
    """Batches parsed points and sends them; counts points and errors, prints rejected batches."""

    def __init__(self, client: Client, ns: argparse.Namespace, source: str) -> None:
        self.client = client
        self.channel: str = ns.channel
        self.batch: int = ns.batch
        self.source = source
        self.fmt: str = ns.format
        self.precision: str | None = ns.precision
        self.parser: Parser | None = None
        self.pending: list[Any] = []
        self.linenos: list[int] = []
        self.first_at: float | None = None
        self.stats = PushStats()
        self.json_doc: bytearray | None = None

    def _parser(self, line: str) -> Parser | None:
        if self.parser is None:
            if not line.strip():
                return None
            fmt = detect_format(line) if self.fmt == "auto" else self.fmt
            if fmt == "ndjson" and line.lstrip().startswith("["):
                self.json_doc = bytearray()
            self.parser = Parser(fmt, self.precision or ("ns" if fmt == "lp" else "ms"))
        return self.parser

    def error(self, lineno: int | None, text: str) -> None:
        self.stats.errors += 1
        where = f"{self.source}:{lineno}: " if lineno is not None else f"{self.source}: "
        _err(where + text)

    async def line(self, lineno: int, raw: bytes) -> None:
        if self.json_doc is not None:
            self.json_doc += raw + b"\n"
            return
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            self.error(lineno, "not UTF-8")
            return
        parser = self._parser(text)
        if parser is None:
            return
        if self.json_doc is not None:
            self.json_doc += raw + b"\n"
            return
        try:
            point = parser.point(text.rstrip("\r"))
        except InputError as exc:
            self.error(lineno, str(exc))
            return
        if point is None:
            return
        if isinstance(point, dict) and "time" not in point:
            point["time"] = wall_ms()
        self.pending.append(point)
        self.linenos.append(lineno)
        if self.first_at is None:
            self.first_at = time.monotonic()
        if len(self.pending) >= self.batch:
            await self.send()

    async def end(self) -> None:
        if self.json_doc is not None:
            await self._json_doc(bytes(self.json_doc))
        await self.send()

    async def _json_doc(self, body: bytes) -> None:
        try:
            points = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            self.error(None, f"malformed JSON: {exc}")
            return
        if not isinstance(points, list):
            self.error(None, "expected a JSON array of points")
            return
        parser = self.parser or Parser("ndjson", self.precision or "ms")
        for i, p in enumerate(points):
            if isinstance(p, dict) and "time" in p:
                p["time"] = parser._time(p["time"])
            self.pending.append(p)
            self.linenos.append(i + 1)
            if len(self.pending) >= self.batch:
                await self.send()

    async def send(self) -> None:
        if not self.pending:
            return
        points, linenos = self.pending, self.linenos
        self.pending, self.linenos, self.first_at = [], [], None
        try:
            if self.parser is not None and self.parser.fmt == "lp":
                await self.client.send_lines(self.channel, "\n".join(points), self.parser.precision)
            else:
                await self.client.send(self.channel, to_columns(points))
        except LivedataError as exc:
            lineno = linenos[exc.line - 1] if exc.line is not None and 0 < exc.line <= len(linenos) else None
            text = _PREFIX.sub("", exc.message)
            if lineno is None and linenos:
                text = f"{text} (batch of lines {linenos[0]}-{linenos[-1]}, nothing stored)"
            self.error(lineno, text)
            return
        self.stats.points += len(points)

    def due_in(self) -> float | None:
        if self.first_at is None:
            return None
        return max(0.0, self.first_at + FLUSH_S - time.monotonic())


async def push(ns: argparse.Namespace, src: BinaryIO) -> int:
    source = "stdin" if ns.file == "-" else ns.file
    regular = stat.S_ISREG(os.fstat(src.fileno()).st_mode)
    size = os.fstat(src.fileno()).st_size if regular and ns.file != "-" and not ns.follow else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(16)
    progress = _progress(size)
    async with Client(ns.url, ns.token, retry_for_s=ns.retry, batch_ms=0) as client:
        pusher = Pusher(client, ns, source)
        reader = loop.create_task(_read_chunks(src, regular, ns.follow, stop, queue))
        rest = b""
        lineno = 0
        try:
            if progress is not None:
                progress.start()
            while True:
                due = pusher.due_in()
                try:
                    chunk = await asyncio.wait_for(queue.get(), due) if due is not None else await queue.get()
                except TimeoutError:
                    await pusher.send()
                    continue
                if chunk is None:
                    break
                if progress is not None:
                    progress.update(progress.task_ids[0], advance=len(chunk))
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for raw in lines:
                    lineno += 1
                    await pusher.line(lineno, raw)
            if rest:
                lineno += 1
                await pusher.line(lineno, rest)
            await pusher.end()
        finally:
            stop.set()
            await cancel_and_wait(reader)
            if progress is not None:
                progress.stop()
    print(pusher.stats.summary(), flush=True)
    return 1 if pusher.stats.errors else 0


def _progress(size: int | None) -> Any:
    if size is None:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    progress = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                        console=console, transient=True)
    progress.add_task("push", total=size)
    return progress


def push_main(ns: argparse.Namespace) -> int:
    try:
        src: BinaryIO = sys.stdin.buffer if ns.file == "-" else open(ns.file, "rb")  # noqa: SIM115
    except OSError as exc:
        _err(f"cannot read {ns.file}: {exc.strerror}")
        return 1
    try:
        return asyncio.run(push(ns, src))
    except KeyboardInterrupt:
        return 130
    finally:
        if src is not sys.stdin.buffer:
            src.close()
