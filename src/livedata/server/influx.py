"""The InfluxDB write API, so that Telegraf, Node-RED, Home Assistant and InfluxDB clients write
to livedata with only their URL changed (docs/ingest.md, "InfluxDB write API").

``POST /api/v2/write?bucket=B`` and ``POST /write?db=D`` take line protocol into the channels
``B/<measurement>`` and ``D/<measurement>``, through the same parser and the same all-or-nothing
store as ``/api/push``; ``/ping``, ``/health``, ``/ready`` and ``/query`` (``CREATE DATABASE``)
answer as InfluxDB does. Thin: only parameters, tokens and the shape of answers are InfluxDB's.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web

from livedata import __version__
from livedata.server.http import INFLUX_HEADERS, INFLUX_VERSION, influx_error, json_response
from livedata.server.ingest import IngestError
from livedata.server.ingest import parse as p
from livedata.server.server import SERVER

Flavour = Literal["v1", "v2"]

V2_PRECISIONS = {"ns": "ns", "us": "us", "ms": "ms", "s": "s"}
V1_PRECISIONS = {"n": "ns", "ns": "ns", "u": "us", "us": "us", "µ": "us", "ms": "ms", "s": "s", "m": "m", "h": "h"}

_CREATE_DATABASE = re.compile(r"\s*CREATE\s+DATABASE\b", re.IGNORECASE)
_STARTED = datetime.now(UTC)  # of the process: /ready says when it started


def _error(flavour: Flavour, exc: IngestError) -> web.Response:
    """An IngestError as InfluxDB answers it, with the status its clients act on."""
    status = exc.status
    if exc.reason in ("schema", "channels"):
        # A field type conflict and the channel limit are not transient: clients must not retry
        # (a 429 for the memory budget is: Telegraf and influxdb-client retry it after Retry-After).
        status = 422 if flavour == "v2" else 400
    extra = {k: v for k, v in (("line", exc.line), ("column", exc.column)) if v is not None}
    resp = influx_error(flavour, status, exc.message, **extra)
    if status in (429, 507):
        resp.headers["Retry-After"] = "1"
    return resp


async def _write(request: web.Request, flavour: Flavour) -> web.StreamResponse:
    """Tokens are checked before this runs (``auth.py``, the ``influx-write-*`` rules)."""
    server = request.app[SERVER]
    reservation = server.ingest.reservation()  # the body's share of the memory budget while it is handled
    try:
        param = "bucket" if flavour == "v2" else "db"
        base = request.query.get(param)
        if not base:
            what = "bucket" if flavour == "v2" else "database"
            raise IngestError(400, f"the {what} is missing: add ?{param}=<name> (it becomes the first level "
                              "of the channels)", "channel")
        channel = p.channel_name(base)
        precisions = V2_PRECISIONS if flavour == "v2" else V1_PRECISIONS
        raw = request.query.get("precision", "ns")
        precision = precisions.get(raw)
        if precision is None:
            raise IngestError(400, f"precision must be one of {', '.join(precisions)}; got {raw[:10]!r}",
                              "precision")
        body = await p.read_body(request, server.config.max_body_bytes, reservation, server.config.body_timeout_s)
        async with server.ingest.turn:
            batches = await p.line_batches(channel, body, precision, server.config.max_points_per_request,
                                           reservation)
            await server.ingest.publish_batches(batches)
    except IngestError as exc:
        server.metrics.push_errors.labels(exc.reason).inc()
        resp = _error(flavour, exc)
        if exc.status in (408, 413, 429):
            resp.force_close()  # the rest of the body is not read: do not wait for it
        return resp
    finally:
        reservation.close()
    return web.Response(status=204, headers=INFLUX_HEADERS)


async def write_v2(request: web.Request) -> web.StreamResponse:
    """``POST /api/v2/write?bucket=B&org=O&precision=P``."""
    return await _write(request, "v2")


async def write_v1(request: web.Request) -> web.StreamResponse:
    """``POST /write?db=D&rp=R&precision=P``."""
    return await _write(request, "v1")


async def ping(request: web.Request) -> web.Response:
    """``GET /ping``: 204 with the version headers (``?verbose=true``: 200 and JSON), as InfluxDB."""
    if request.query.get("verbose", "").lower() in ("true", "1"):
        return json_response({"version": INFLUX_VERSION, "build": "livedata"}, headers=INFLUX_HEADERS)
    return web.Response(status=204, headers=INFLUX_HEADERS)


async def health(request: web.Request) -> web.Response:
    """``GET /health``: InfluxDB 2's health answer (livedata's own is ``/api/health``)."""
    return json_response({"name": "influxdb", "message": "ready for queries and writes", "status": "pass",
                          "checks": [], "version": INFLUX_VERSION, "commit": f"livedata {__version__}"},
                         headers=INFLUX_HEADERS)


async def ready(request: web.Request) -> web.Response:
    """``GET /ready``: InfluxDB 2's readiness answer."""
    up = int(time.monotonic() - request.app[SERVER].started)
    return json_response({"status": "ready", "started": _STARTED.isoformat().replace("+00:00", "Z"),
                          "up": f"{up // 3600}h{up // 60 % 60}m{up % 60}s"}, headers=INFLUX_HEADERS)


async def query(request: web.Request) -> web.Response:
    """``/query``: only ``CREATE DATABASE`` (nothing to do: the database is the channels' first
    level), which Telegraf's ``outputs.influxdb`` and the 1.x client send when they start."""
    q = request.query.get("q")
    if q is None and request.method == "POST":
        q = (await request.post()).get("q")  # type: ignore[assignment]
    if isinstance(q, str) and _CREATE_DATABASE.match(q):
        return json_response({"results": [{"statement_id": 0}]}, headers=INFLUX_HEADERS)
    return json_response({"error": "livedata takes InfluxDB writes only (and CREATE DATABASE, which it needs "
                          "not do); read data with /api/stream or the Grafana plugin"},
                         status=400, headers=INFLUX_HEADERS)
