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
