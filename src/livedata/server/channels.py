"""``GET /api/channels`` (what exists, and what the server can generate) and
``DELETE /api/channels/{channel}`` (subscribers get a notice and ``complete``)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from livedata.brokers.base import ChannelInfo
from livedata.core.protocol import ProtocolError, check_channel
from livedata.core.sources import GENERATORS, GeneratedChannel, ParamError, resolve_generated
from livedata.server.http import json_error
from livedata.server.server import SERVER


def _generated(name: str) -> GeneratedChannel | None:
    if name.partition("/")[0] not in GENERATORS:
        return None
    try:
        return resolve_generated(name, None)
    except ParamError:
        return None


def _entry(info: ChannelInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": info.name, "schema": [f.to_json() for f in info.fields], "last_time": info.last_time,
        "points_per_s": round(info.points_per_s, 3), "points": info.points, "generated": False,
    }
    gen = _generated(info.name)
    if gen is not None:
        entry["generated"] = True
        entry["params"] = dict(gen.params)
        if info.points_per_s > 0:
            # Its rate, not the rate of its first second: a new generator publishes an hour of
            # history at once, which the broker's 10-second counter would show as 7,000 rows/s.
            entry["points_per_s"] = round(1000 / gen.interval_ms, 3)
    return entry


async def channels(request: web.Request) -> web.Response:
    """``GET /api/channels``: ``{"channels": [...]}``, keys as docs/protocol.md lists them."""
    server = request.app[SERVER]
    infos = await server.broker.channels()
    source_of = server.sources.source_of
    out: list[dict[str, Any]] = [_entry(i) for i in sorted(infos, key=lambda i: i.name)]
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
    server.forget(name)
    subs = hub.of_channel(name)
    for sub in subs:
        hub.complete(sub, notice=f"channel {name!r} was deleted")
    if not await server.broker.delete(name) and not subs:
        return json_error(404, f"no channel named {name!r}")
    return web.Response(status=204)
