"""``POST /v1/metrics``: OpenTelemetry metrics over OTLP/HTTP (protobuf or JSON, gzip or not).

Thin: the request is decoded and mapped by :mod:`livedata.core.otlp` and stored whole through the
same all-or-nothing path as ``/api/push``. Answers follow the OTLP/HTTP specification: ``200``
with an ``ExportMetricsServiceResponse``, errors as a ``google.rpc.Status`` in the request's
encoding (``400`` is not retried by exporters, ``503`` with ``Retry-After`` is).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from livedata.core import otlp
from livedata.core.clock import wall_ms
from livedata.core.frames import Batch
from livedata.server.ingest import IngestError
from livedata.server.ingest import parse as p
from livedata.server.server import SERVER

THREAD_BYTES = 256 << 10
"""Bodies above this are decoded and mapped in a worker thread, off the event loop."""

# gRPC status codes (google.rpc.Code) for the Status body
_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 422: 3, 429: 8, 503: 14}


def _convert(body: bytes, json: bool, now: int, max_points: int) -> dict[str, Batch]:
    return otlp.to_batches(otlp.decode_request(body, json), now, max_points)


async def metrics(request: web.Request) -> web.StreamResponse:
    """Tokens are checked before this runs (``auth.py``, the ``otlp-metrics`` rule)."""
    server = request.app[SERVER]
    json = request.content_type == "application/json"
    reservation = server.ingest.reservation()  # the body's share of the memory budget while it is handled
    try:
        if request.content_type not in ("application/x-protobuf", "application/json"):
            raise IngestError(415, f"unsupported Content-Type {request.content_type!r}: OTLP/HTTP metrics are "
                              "application/x-protobuf or application/json", "content-type")
        body = await p.read_body(request, server.config.max_body_bytes, reservation, server.config.body_timeout_s)
        limit = server.config.max_points_per_request
        try:
            if len(body) > THREAD_BYTES:
                batches = await asyncio.to_thread(_convert, body, json, wall_ms(), limit)
            else:
                batches = _convert(body, json, wall_ms(), limit)
        except otlp.OtlpError as exc:
            raise IngestError(400, str(exc), "otlp") from None
        async with server.ingest.turn:
            await server.ingest.publish_batches(batches)
    except IngestError as exc:
        server.metrics.push_errors.labels(exc.reason).inc()
        status = 400 if exc.reason in ("schema", "channels") else exc.status
        payload, ctype = otlp.encode_status(_CODES.get(status, 3), exc.message, json)
        headers = {"Retry-After": "1"} if status in (429, 503, 507) else None
        resp = web.Response(status=status, body=payload, content_type=ctype, headers=headers)
        if status in (408, 413, 429):
            resp.force_close()  # the rest of the body is not read: do not wait for it
        return resp
    finally:
        reservation.close()
    payload, ctype = otlp.encode_response(json)
    return web.Response(status=200, body=payload, content_type=ctype)
