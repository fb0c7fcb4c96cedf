"""``POST /api/push/{channel}``: JSON points or Influx line protocol, stored once; 204 when stored.

Thin: the request is checked and parsed by ``ingest/parse.py`` and stored by the server's
:class:`~livedata.server.ingest.Ingest` (tokens are checked before this runs: ``auth.py``).
"""

from __future__ import annotations

from aiohttp import web

from livedata.server.ingest import Ingest, IngestError
from livedata.server.ingest import parse as p
from livedata.server.ingest.idempotency import MAX_KEY_LEN
from livedata.server.server import SERVER


async def push(request: web.Request) -> web.StreamResponse:
    """``POST /api/push/{channel}``: JSON points or Influx line protocol. 204 once stored."""
    server = request.app[SERVER]
    ingest = server.ingest
    keys = ingest.keys
    key: str | None = None
    ok = False
    reservation = ingest.reservation()
    try:
        channel = p.channel_name(request.match_info["channel"])
        precision = p.precision(request)
        raw_key = request.headers.get("Idempotency-Key")
        if raw_key is not None:
            if not 0 < len(raw_key) <= MAX_KEY_LEN:
                raise IngestError(400, f"Idempotency-Key must be 1 to {MAX_KEY_LEN} characters", "idempotency")
            key = f"{channel}\n{raw_key}"
            if await keys.begin(key):
                key = None  # not ours to end
                return web.Response(status=204, headers={"Idempotent-Replayed": "true"})
        config = server.config
        body = await p.read_body(request, config.max_body_bytes, reservation, config.body_timeout_s)
        async with ingest.turn:
            await _store(request, ingest, channel, body, precision)
        ok = True
    except IngestError as exc:
        server.metrics.push_errors.labels(exc.reason).inc()
        resp = exc.response()
        if exc.status in (408, 413, 429):
            resp.force_close()  # the rest of the body is not read: do not wait for it
        if exc.status in (429, 507):
            resp.headers["Retry-After"] = "1"
        return resp
    finally:
        reservation.close()
        if key is not None:
            keys.end(key, ok)
    return web.Response(status=204)


async def _store(request: web.Request, ingest: Ingest, channel: str, body: bytes, precision: p.Precision) -> None:
    ctype = request.content_type
    reorder = p.reorder_ms(request)
    if p.is_json(ctype, body):
        await ingest.publish_json(channel, await p.decode_json(ctype, body), reorder)
    elif p.is_line_protocol(ctype):
        batches = await p.line_batches(channel, body, precision, ingest.config.max_points_per_request)
        await ingest.publish_batches(batches, reorder)
    else:
        csv = "; for CSV, `livedata push CHANNEL file.csv` converts it" if "csv" in ctype else ""
        raise IngestError(415, f"unsupported Content-Type {ctype!r}: use application/json "
                          f"or text/plain (Influx line protocol){csv}", "content-type")
