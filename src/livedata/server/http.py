"""Small HTTP helpers shared by the routes."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web


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

