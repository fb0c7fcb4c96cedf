"""``GET /api/channels`` (what exists, and what the server can generate) and
``DELETE /api/channels/{channel}`` (subscribers get a notice and ``complete``)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from livedata.core.protocol import ProtocolError, check_channel
from livedata.core.sources import GENERATORS
from livedata.server.http import json_error
from livedata.server.server import SERVER


async def channels(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    infos = await server.broker.channels()
    generated = server.generators.names
    source_of = server.sources.source_of
    out: list[dict[str, Any]] = [
        {"name": i.name, "schema": [f.to_json() for f in i.fields], "last_time": i.last_time,
         "points_per_s": round(i.points_per_s, 3), "points": i.points,
         "generated": i.name in generated or i.name.partition("/")[0] in GENERATORS}
        for i in sorted(infos, key=lambda i: i.name)
    ]
    for info in out:
        source = source_of(info["name"])
        if source is not None:
            info["source"] = source
    names = {i["name"] for i in out}
    for base, spec in sorted(GENERATORS.items()):
        if base not in names:  # always offered, created on first subscription
            out.append({"name": base, "schema": [{"name": f"series{i}", "type": "number"} for i in range(1)],
                        "last_time": None, "points_per_s": 0.0, "points": 0, "generated": True,
                        "params": spec.defaults()})
    return web.json_response({"channels": out}, dumps=lambda o: msgspec.json.encode(o).decode())


async def delete_channel(request: web.Request) -> web.Response:
    """``DELETE /api/channels/{channel}``: subscribers get a notice and ``complete``; 204."""
    server = request.app[SERVER]
    try:
        name = check_channel(request.match_info["channel"])
    except ProtocolError as exc:
        return json_error(400, str(exc))
    hub = server.hub
    subs = hub.of_channel(name)
    for sub in subs:
        hub.complete(sub, notice=f"channel {name!r} was deleted")
    if not await server.broker.delete(name) and not subs:
        return json_error(404, f"no channel named {name!r}")
    return web.Response(status=204)
