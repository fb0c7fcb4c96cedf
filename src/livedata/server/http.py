"""Small HTTP helpers shared by the routes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError


def wants_page(request: web.Request) -> bool:
    """``GET /`` from a browser that wants the live view page (it accepts ``text/html`` and asks for
    no ``numSeries``), not the reference stream."""
    return "text/html" in request.headers.get("Accept", "") and "numSeries" not in request.query


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers
    )


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """An error answer: ``{"error": message, ...}`` with the given status."""
    return json_response({"error": message, **extra}, status=status)


class HTTPJSONError(web.HTTPException):
    """Raise from a handler to answer ``{"error": ...}`` with any status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        self.status_code = status
        super().__init__(
            body=msgspec.json.encode({"error": message, **extra}), content_type="application/json"
        )


INFLUX_VERSION = "2.7.0"
"""The InfluxDB version livedata's write API answers as (``X-Influxdb-Version``)."""
INFLUX_HEADERS = {"X-Influxdb-Version": INFLUX_VERSION, "X-Influxdb-Build": "livedata"}
_INFLUX_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 413: "request too large",
                 415: "unsupported media type", 422: "unprocessable entity", 503: "unavailable"}


def influx_error(flavour: str, status: int, message: str, **extra: Any) -> web.Response:
    """An error as InfluxDB answers it: ``{"code", "message"}`` (2.x) or ``{"error"}`` (1.x)."""
    headers = dict(INFLUX_HEADERS)
    if status == 503:
        headers["Retry-After"] = "1"
    if flavour == "v2":
        code = _INFLUX_CODES.get(status, "invalid")
        headers["X-Platform-Error-Code"] = code
        return json_response({"code": code, "message": message, **extra}, status=status, headers=headers)
    return json_response({"error": message, **extra}, status=status, headers=headers)

class QuietBadRequests(logging.Filter):
    """Drop aiohttp's ERROR-with-traceback for requests it refused itself as malformed (a 4xx:
    an invalid header character, a line over 8 KiB, too many headers, a broken chunked or gzip
    body). The client got its 400; a traceback per bad request would let anyone flood the log.
    Kept when the logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):  # aiohttp draining a body it could not decode
            exc = exc.__cause__
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_bad_requests() -> None:
    """Install :class:`QuietBadRequests` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in logger.filters):
        logger.addFilter(QuietBadRequests())
