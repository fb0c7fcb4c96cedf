"""``GET /api/sources``: every configured source, its state and counts (see docs/sources.md)."""

from __future__ import annotations

from aiohttp import web

from livedata.server.http import json_response
from livedata.server.server import SERVER


async def sources(request: web.Request) -> web.Response:
    return json_response({"sources": request.app[SERVER].sources.statuses()})
