"""``livedata channels`` (list, ``--json``) and ``livedata delete CHANNEL``: the server's channels
from the command line, through the Python client (``GET``/``DELETE /api/channels``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

if TYPE_CHECKING:
    from livedata.client import Client

ClientArgs = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, client_args: ClientArgs) -> None:
    """Add ``channels`` and ``delete`` to the ``livedata`` subcommands."""
    ls = sub.add_parser("channels", help="list the server's channels",
                        description="List the server's channels: pushed ones and the generated ones it offers.")
    client_args(ls)
    ls.add_argument("--json", action="store_true", help="print the server's list as JSON (one document)")
    rm = sub.add_parser("delete", help="delete a channel and its history",
                        description="Delete a channel and its history; its subscribers get a notice and "
                                    "'complete'. Needs a write token when the server has tokens.")
    rm.add_argument("channel", help="the channel to delete")
    client_args(rm)


def _err(text: str) -> None:
    print(f"livedata: {text}", file=sys.stderr, flush=True)


def _age(last_ms: Any, now_ms: int) -> str:
    if not isinstance(last_ms, int | float):
        return "-"
    s = max(0.0, (now_ms - last_ms) / 1000)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172_800:
        return f"{s / 3600:.0f} h ago"
    return datetime.fromtimestamp(last_ms / 1000, UTC).strftime("%Y-%m-%d")


def format_table(channels: list[dict[str, Any]], now_ms: int) -> str:
    """The channel list as aligned columns: name, kind, fields, points, rate, last point."""
    head = ("CHANNEL", "KIND", "FIELDS", "POINTS", "RATE", "LAST POINT")
    rows = [head]
    for c in channels:
        schema = c.get("schema") or []
        names = [str(f.get("name")) for f in schema if isinstance(f, dict)]
        fields = ",".join(names) if len(",".join(names)) <= 40 else f"{len(names)} fields"
        rate = c.get("points_per_s") or 0
        rows.append((
            str(c.get("name")),
            "generated" if c.get("generated") else "pushed",
            fields or "-",
            f"{c.get('points') or 0:,}",
            f"{rate:,.1f}/s" if rate else "-",
            _age(c.get("last_time"), now_ms),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


def _client(ns: argparse.Namespace, options: dict[str, Any]) -> Client:
    from livedata.client import Client  # not at import: `livedata -V` and usage errors need no aiohttp

    return Client(ns.url, ns.token, **options)


async def _channels(ns: argparse.Namespace, out: TextIO, options: dict[str, Any]) -> int:
    async with _client(ns, options) as client:
        await client.health()  # no server or a wrong --url: said within 2 s
        channels = await client.channels()
    if ns.json:
        out.write(msgspec.json.encode({"channels": channels}).decode() + "\n")
    else:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        out.write(format_table(channels, now_ms))
    return 0


async def _delete(ns: argparse.Namespace, out: TextIO, options: dict[str, Any]) -> int:
    async with _client(ns, options) as client:
        await client.health()
        await client.delete_channel(ns.channel)
    out.write(f"deleted {ns.channel}\n")
    return 0


def main(ns: argparse.Namespace, options: dict[str, Any], hint: Callable[[str, int | None], str | None]) -> int:
    """Run ``channels`` or ``delete``; ``hint`` rewords a token error in terms of ``--token``."""
    from livedata.client import LivedataError

    run = _channels if ns.command == "channels" else _delete
    try:
        return asyncio.run(run(ns, sys.stdout, options))
    except LivedataError as exc:
        _err(hint(exc.message, exc.status) or exc.message)
        return 1
    except KeyboardInterrupt:
        return 130
