"""``POST /api/push/{channel}``: JSON points or Influx line protocol, stored once; 204 when stored.

Thin: the request is checked and parsed by ``ingest/parse.py`` and stored by the server's
:class:`~livedata.server.ingest.Ingest` (tokens are checked before this runs: ``auth.py``). An
``Idempotency-Key`` travels with the write to the broker, with a digest of what decides the
points stored (content type, precision, reorder window, body).
"""

from __future__ import annotations

from aiohttp import web

from livedata.core.budget import Reservation
from livedata.server.ingest import Ingest, IngestError
from livedata.server.ingest import parse as p
from livedata.server.ingest.idempotency import check_key, request_key
from livedata.server.server import SERVER


async def push(request: web.Request) -> web.StreamResponse:
    """``POST /api/push/{channel}``: JSON points or Influx line protocol. 204 once stored."""
    server = request.app[SERVER]
    ingest = server.ingest
    reservation = ingest.reservation()
    try:
        channel = p.channel_name(request.match_info["channel"])
        precision = p.precision(request)
        reorder = p.reorder_ms(request)
        raw_key = request.headers.get("Idempotency-Key")
        if raw_key is not None and (why := check_key(raw_key)) is not None:
            raise IngestError(400, why, "idempotency")
        config = server.config
        body = await p.read_body(request, config.max_body_bytes, reservation, config.body_timeout_s)
        async with ingest.turn:
            replayed = await _store(request, ingest, channel, body, precision, reorder, raw_key, reservation)
    except IngestError as exc:
        server.metrics.push_errors.labels(exc.reason).inc()
        resp = exc.response()
        if exc.status in (408, 413, 429):
            resp.force_close()  # the rest of the body is not read: do not wait for it
        if exc.status in (429, 507) and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = "1"
        return resp
    finally:
        reservation.close()
    if replayed:
        server.metrics.push_replays.inc()
        return web.Response(status=204, headers={"Idempotent-Replayed": "true"})
    return web.Response(status=204)


async def _store(request: web.Request, ingest: Ingest, channel: str, body: bytes, precision: p.Precision,
                 reorder: int, raw_key: str | None, reservation: Reservation) -> bool:
    ctype = request.content_type
    key = request_key(raw_key, ctype, precision, str(reorder), body)
    if p.is_json(ctype, body):
        return await ingest.publish_json(channel, await p.decode_json(ctype, body), reorder, key)
    if p.is_line_protocol(ctype):
        batches = await p.line_batches(channel, body, precision, ingest.config.max_points_per_request, reservation)
        return await ingest.publish_batches(batches, reorder, key)
    csv = "; for CSV, `livedata push CHANNEL file.csv` converts it" if "csv" in ctype else ""
    raise IngestError(415, f"unsupported Content-Type {ctype!r}: use application/json "
                      f"or text/plain (Influx line protocol){csv}", "content-type")
