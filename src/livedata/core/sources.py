"""Data sources, pure: the tick schedule, the original reference stream, generated channels.

Nothing here reads a clock or a random device by itself: the caller passes times in and an
injected ``random.Random``, so tests drive every source with a fake clock and a seeded rng.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livedata.core.text import shown

MAX_NUM_SERIES = 1000
_INT = re.compile(r"[+-]?[0-9]{1,12}")


class ParamError(ValueError):
    """A query or channel parameter is missing, unknown or out of range."""


# --- tick schedule -----------------------------------------------------------------------------


@dataclass(slots=True)
class TickSchedule:
    """Deadlines ``start + k * interval`` on a monotonic clock: no drift, however late we wake.

    A tick that was missed entirely (the process stalled for longer than an interval) is skipped
    rather than fired in a burst, so readers never get a flood of stale ticks.
    """

    start: float
    interval: float
    index: int = 0

    def next_deadline(self, now: float) -> float:
        """Advance to the first tick strictly after the last one fired and not in the past.

        Returns the deadline (same clock as ``now``) of the next tick to fire.
        """
        k = self.index + 1
        behind = math.floor((now - self.start) / self.interval)
        if behind > k:
            k = behind
        self.index = k
        return self.start + k * self.interval


GRID_LEAD_S = 0.001
"""How long after a row's (grid) time its generator tick runs: see :func:`grid_delay`."""


def grid_delay(now_s: float, interval_s: float, lead_s: float = GRID_LEAD_S) -> float:
    """Seconds from wall time ``now_s`` to ``lead_s`` past the next multiple of ``interval_s``.

    Generators stamp rows on the wall-clock grid of their interval. Ticking on that grid (instead
    of every interval from whenever the generator started) publishes each row ``lead_s`` after its
    time rather than up to a whole interval later, which every reader's latency would carry.
    Always in ``(0, interval_s]``: a tick that wakes a little early waits for its grid point.
    """
    return interval_s - (now_s - lead_s) % interval_s


# --- the original reference stream -------------------------------------------------------------


def parse_num_series(raw: str | None) -> int:
    """Validate ``numSeries`` of ``GET /?numSeries=N`` (default 1, 1..1000).

    Raises:
        ParamError: not an integer, or out of range.
    """
    if raw is None or raw == "":
        return 1
    if not _INT.fullmatch(raw):
        raise ParamError(f"numSeries must be an integer from 1 to {MAX_NUM_SERIES}, got {raw[:40]!r}")
    n = int(raw)
    if not 1 <= n <= MAX_NUM_SERIES:
        raise ParamError(f"numSeries must be an integer from 1 to {MAX_NUM_SERIES}, got {n}")
    return n


def reference_lines(timestamp_ms: int, num_series: int, rng: random.Random) -> bytes:
    """One tick of the original stream: ``num_series`` NDJSON lines sharing one timestamp.

    Byte-compatible with the Go reference server: keys ``series``, ``timestamp``, ``value`` in
    that order, integers, ``value`` in ``[10*i, 10*i+9]``.
    """
    rand = rng.randrange
    return "".join(
        [
            f'{{"series":{i},"timestamp":{timestamp_ms},"value":{10 * i + rand(10)}}}\n'
            for i in range(num_series)
        ]
    ).encode()


# --- generated channels ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: type[int] | type[float]
    default: float
    minimum: float
    maximum: float | None = None
    exclusive_min: bool = False

    def parse(self, raw: Any, channel: str) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str) or (
                isinstance(raw, str) and not raw.isascii()):
            raise ParamError(f"param {self.name!r} of {channel} must be a number, got {shown(raw)}")
        try:
            number = float(raw) if isinstance(raw, str) else raw
            value: float = self.kind(number)
        except ValueError:  # not a number, or nan as an int
            raise ParamError(f"param {self.name!r} of {channel} must be a number, got {shown(raw)}") from None
        except OverflowError:  # inf as an int, or an int too large for a float
            raise ParamError(f"param {self.name!r} of {channel} must be finite, got {shown(raw)}") from None
        if self.kind is int and number != value:
            raise ParamError(f"param {self.name!r} of {channel} must be an integer, got {shown(raw)}")
        if not isinstance(value, int) and not math.isfinite(value):
            raise ParamError(f"param {self.name!r} of {channel} must be finite")
        low_ok = value > self.minimum if self.exclusive_min else value >= self.minimum
        if not low_ok or (self.maximum is not None and value > self.maximum):
            rng = f"{'>' if self.exclusive_min else '>='} {_fmt(self.minimum)}"
            if self.maximum is not None:
                rng = f"{_fmt(self.minimum)}..{_fmt(self.maximum)}"
            raise ParamError(f"param {self.name!r} of {channel} must be {rng}, got {_fmt(value)}")
        return value


@dataclass(frozen=True, slots=True)
class GeneratorSpec:
    name: str
    params: tuple[Param, ...]

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}


GENERATORS: dict[str, GeneratorSpec] = {
    "random-walk": GeneratorSpec(
        "random-walk",
        (
            Param("series", int, 1, 1, 100),
            Param("interval", int, 50, 10, 3_600_000),
            Param("spread", float, 1.0, 0.0, None, exclusive_min=True),
        ),
    ),
    "sine": GeneratorSpec(
        "sine",
        (
            Param("series", int, 1, 1, 100),
            Param("interval", int, 50, 10, 3_600_000),
            Param("period", int, 10_000, 100, 1e10),
        ),
    ),
}


@dataclass(frozen=True, slots=True)
class GeneratedChannel:
    """A validated generated channel: its base, full params, and canonical broker name."""

    base: str
    params: Mapping[str, float]
    name: str

    @property
    def interval_ms(self) -> int:
        return int(self.params["interval"])

    @property
    def series(self) -> int:
        return int(self.params["series"])


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return shown(value, 30)  # an int may be too large for a float
    return str(int(value)) if value.is_integer() else repr(value)


def is_generated(channel: str) -> bool:
    """True for a generated channel's name (a generator's base name, with or without params):
    such channels count in ``--max-generators``, not in ``--max-channels``, and cannot be pushed to."""
    return channel.partition("/")[0] in GENERATORS


def resolve_generated(channel: str, params: Mapping[str, Any] | None) -> GeneratedChannel | None:
    """Validate params of a generated channel and return its canonical name.

    Returns None when ``channel`` is not a generated base name and no params were given.
    A canonical name (``random-walk/series=3``) resolves to itself.

    Raises:
        ParamError: unknown params, bad values, or params on a channel that takes none.
    """
    params = dict(params or {})
    base, _, rest = channel.partition("/")
    spec = GENERATORS.get(base)
    if spec is not None and rest:
        # A canonical name: parse its params back (they override nothing given explicitly).
        for part in rest.split("/"):
            key, eq, value = part.partition("=")
            if not eq:
                spec = None
                break
            params.setdefault(key, value)
    if spec is None:
        if params:
            raise ParamError(f"channel {channel!r} takes no params (only generated channels do)")
        return None
    allowed = {p.name: p for p in spec.params}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParamError(
            f"unknown param {unknown[0]!r} for channel {spec.name} (allowed: {', '.join(sorted(allowed))})"
        )
    values = spec.defaults()
    for key, raw in params.items():
        values[key] = allowed[key].parse(raw, spec.name)
    suffix = "".join(
        f"/{key}={_fmt(values[key])}" for key in sorted(values) if values[key] != allowed[key].default
    )
    return GeneratedChannel(spec.name, values, spec.name + suffix)


class Generator:
    """Produces a generated channel's rows at times aligned to its interval (``t % interval == 0``).

    Aligned times make every server in a cluster agree on timestamps. Rows must be asked for in
    increasing time: random walks carry state from one row to the next.
    """

    def __init__(self, channel: GeneratedChannel, rng: random.Random) -> None:
        self.channel = channel
        self.rng = rng
        self.fields = [f"series{i}" for i in range(channel.series)]
        self.interval = channel.interval_ms
        self.last_time: int | None = None
        self._walk = [rng.uniform(0, 100) for _ in range(channel.series)]

    def rows(self, start_ms: int, end_ms: int) -> tuple[list[int], list[list[Any]]]:
        """Rows with aligned times in ``[start_ms, end_ms]`` after the last row produced.

        Returns ``(times, columns)``, one column per field.
        """
        step = self.interval
        first = -(-start_ms // step) * step
        if self.last_time is not None and first <= self.last_time:
            first = self.last_time + step
        times = list(range(first, end_ms + 1, step))
        if not times:
            return [], [[] for _ in self.fields]  # (times, columns)
        self.last_time = times[-1]
        if self.channel.base == "sine":
            period = self.channel.params["period"]
            columns = [
                [round(math.sin(2 * math.pi * t / period + i * math.pi / 4) * 10 + 10 * i, 6) for t in times]
                for i in range(len(self.fields))
            ]
            return times, columns
        spread = self.channel.params["spread"]
        gauss = self.rng.gauss
        columns = []
        for i in range(len(self.fields)):
            v = self._walk[i]
            col = []
            for _ in times:
                v += gauss(0.0, spread)
                col.append(round(v, 6))
            self._walk[i] = v
            columns.append(col)
        return times, columns
