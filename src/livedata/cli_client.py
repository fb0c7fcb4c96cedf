"""``livedata tail`` and ``livedata push``: the client side of the command line (see cli.py).

About 650 lines: the two commands share the formatting of frames and values, the channel checks
("did you mean") and the signal handling; ``livedata sources`` is here for the same reasons.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import difflib
import os
import re
import signal
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import msgspec

from livedata.client import Client, Frame, LivedataError, Notice, Value, to_columns
from livedata.core import jsonerror
from livedata.core.clock import wall_ms
from livedata.tasks import cancel_and_wait, wait_event

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
    than one printed before). Buckets (``--max-points``/``--resolution``) are rows too: a bucket
    printed again replaces the one printed before at the same time."""
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


def close_names(name: str, names: list[str], n: int = 3) -> list[str]:
    """Channel names like ``name``: similar spellings first, then names it starts or ends."""
    found = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    low = name.lower()
    for other in sorted(names):
        if len(found) >= n:
            break
        o = other.lower()
        if other not in found and (o.startswith(low) or low.startswith(o) or o.endswith(low) or low in o):
            found.append(other)
    return found


def channel_exists(name: str, channels: list[dict[str, Any]]) -> bool:
    """Whether ``name`` is listed, or is a generated channel (a base name the server generates,
    with or without params): those exist as soon as someone subscribes."""
    generated = {str(c.get("name")) for c in channels if c.get("generated")}
    return name in {str(c.get("name")) for c in channels} or name.partition("/")[0] in generated


async def missing_channel(client: Client, name: str, wait: bool) -> str | None:
    """None when ``name`` exists (or the list cannot be had); else the sentence to print."""
    try:
        channels = await client.channels()
    except LivedataError as exc:
        if exc.status in (401, 403):
            raise
        return None  # an older server, a proxy in the way: subscribing says what it says
    if channel_exists(name, channels):
        return None
    names = sorted(str(c.get("name")) for c in channels if not c.get("generated") or "/" not in str(c.get("name")))
    like = close_names(name, names)
    text = f"no channel named {name!r} yet"
    if like:
        text += f" (did you mean {', '.join(like)}?)"
    if wait:
        return text + ": waiting for its first point (Ctrl-C to stop)"
    return text + ": it is created by its first push; pass --wait to wait for it (livedata channels lists them)"


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

    async with Client(ns.url, ns.token, on_notice=on_notice, **client_options(ns)) as client:
        try:
            await client.health()  # no server: said within 2 s
            if not params:
                missing = await missing_channel(client, ns.channel, ns.wait)
                if missing is not None:
                    _err(missing)
                    if not ns.wait:
                        return 1
            sub = await client.subscribe(ns.channel, params or None, from_=from_, to=ns.to, fields=fields,
                                         max_points=ns.max_points, resolution_ms=ns.resolution)
            warned = False
            async for item in sub:
                if not isinstance(item, Frame):
                    continue
                if fields and item.schema_changed and not warned:
                    have = [f.name for f in item.schema]
                    unknown = [f for f in fields if f not in have]
                    if unknown:
                        warned = True
                        _err(f"{ns.channel} has no field {', '.join(map(repr, unknown))} (yet): "
                             "`livedata channels` lists the fields of each channel")
                if len(item) and item.fields:
                    out.write(format_frame(item, ns.json))
                    out.flush()
        except LivedataError as exc:
            _err(token_hint(exc.message, exc.status) or exc.message)
            return 1
    return 0


def tail_main(ns: argparse.Namespace) -> int:
    try:
        return _run_until_signal(tail(ns, sys.stdout))
    except LivedataError as exc:
        _err(token_hint(exc.message, exc.status) or exc.message)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # | head: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run_until_signal(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro``; SIGINT or SIGTERM cancel it (exit code 0: the user ended it), a second one
    exits at once."""

    async def runner() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        hits = 0

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            if hits > 1:
                os._exit(130)
            if task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        try:
            return await coro
        except asyncio.CancelledError:
            if hits:
                return 0
            raise

    return asyncio.run(runner())


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
        print(f"livedata: {token_hint(text, exc.code) or f'{ns.url} answered {exc.code}: {text}'}", file=sys.stderr)
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
                text, _ = jsonerror.describe(exc, line)
                raise InputError(text.replace("at line 1, column", "at column").replace(" at line 1 ", " ")) from None
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


def pollable(fd: int) -> bool:
    """Whether the event loop can wait on ``fd``: a pipe, a socket or a terminal. A regular file
    or a device such as ``/dev/null`` cannot be registered with epoll (EPERM): it is read in a
    thread instead, where every read returns at once."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


async def _read_chunks(src: BinaryIO, regular: bool, follow: bool, stop: asyncio.Event,
                       queue: asyncio.Queue[bytes | None]) -> None:
    """Feed ``queue`` with chunks of input; None at the end (also when cancelled)."""
    try:
        if not pollable(src.fileno()):
            while not stop.is_set():
                data = await asyncio.to_thread(src.read1 if hasattr(src, "read1") else src.read, 1 << 20)
                if data:
                    await queue.put(data)
                    continue
                if not follow or not regular:
                    break
                with contextlib.suppress(OSError, ValueError):
                    if os.fstat(src.fileno()).st_size < src.tell():  # truncated (log rotation): start over
                        src.seek(0)
                await wait_event(stop, 0.2)
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
        await queue.put(None)  # the consumer drains the queue until this end


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
            self.error(None, jsonerror.describe(exc, body)[0])
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
            if exc.status in (401, 403) or exc.status is None:  # no batch would fare better: stop
                raise
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


def token_hint(message: str, status: int | None) -> str | None:
    """The server's sentence about a token, said in terms of this command's flags (None: not one)."""
    low = message.lower()
    if status not in (401, 403) and "token" not in low:
        return None
    if "required" in low:
        right = "write" if "write" in low else "read"
        return f"the server needs a {right} token: pass --token TOKEN (or set LIVEDATA_TOKEN)"
    if "may not" in low:
        return f"{message}: pass a token that may (--token or LIVEDATA_TOKEN)"
    if "unknown token" in low:
        return "the server does not know this token: check --token (or LIVEDATA_TOKEN)"
    return None


def client_options(ns: argparse.Namespace) -> dict[str, Any]:
    return {"cacert": getattr(ns, "cacert", None), "insecure": bool(getattr(ns, "insecure", False))}


async def push(ns: argparse.Namespace, src: BinaryIO) -> int:
    source = "stdin" if ns.file == "-" else ns.file
    regular = stat.S_ISREG(os.fstat(src.fileno()).st_mode)
    size = os.fstat(src.fileno()).st_size if regular and ns.file != "-" and not ns.follow else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0
    reader: asyncio.Task[None] | None = None

    def on_signal() -> None:
        # The first Ctrl-C/SIGTERM ends the input: what was read is sent, then the summary. A
        # second one does not wait for that (nor for retries).
        nonlocal signals
        signals += 1
        stop.set()
        if reader is not None:
            reader.cancel()
        if signals > 1 and main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(16)
    progress = _progress(size)
    client = Client(ns.url, ns.token, retry_for_s=ns.retry, batch_ms=0, **client_options(ns))
    pusher = Pusher(client, ns, source)
    lineno = 0
    try:
        await client.health()  # no server, a wrong URL or an untrusted certificate: said within 2 s
        reader = loop.create_task(_read_chunks(src, regular, ns.follow, stop, queue))
        rest = b""
        try:
            if progress is not None:
                progress.start()
            while True:
                due = pusher.due_in()
                try:
                    async with asyncio.timeout(due):  # None: no deadline
                        chunk = await queue.get()
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
    except LivedataError as exc:
        _err(token_hint(exc.message, exc.status) or exc.message)
        if pusher.stats.points:
            print(pusher.stats.summary() + " before that", flush=True)
        return 1
    finally:
        await client.close(flush=False)
    if not pusher.stats.points and not pusher.stats.errors and not signals:
        what = "no input on stdin" if source == "stdin" and not lineno else f"no points in {source}"
        _err(f"{what}: nothing was pushed (pipe points in, or name a file: livedata push CHANNEL FILE)")
        return 1
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
    if ns.file is None:
        piped = stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode) if not sys.stdin.closed else False
        if os.path.isfile(ns.channel) and not piped:
            # `livedata push data.csv`: the channel name was forgotten, stdin would be read instead.
            _err(f"{ns.channel} is a file, not a channel name: name the channel first, "
                 f"e.g. livedata push CHANNEL {ns.channel}")
            return 2
        ns.file = "-"
        if sys.stdin.isatty():
            _err("reading points from the terminal: type NDJSON, CSV or line protocol, end with Ctrl-D "
                 "(or pipe them in, or name a file)")
    try:
        src: BinaryIO = sys.stdin.buffer if ns.file == "-" else open(ns.file, "rb")  # noqa: SIM115
    except OSError as exc:
        _err(f"cannot read {ns.file}: {exc.strerror}")
        return 1
    try:
        return asyncio.run(push(ns, src))
    except LivedataError as exc:
        _err(token_hint(exc.message, exc.status) or exc.message)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        _err("stopped: points not yet sent were not pushed")
        return 130
    finally:
        if src is not sys.stdin.buffer:
            src.close()
