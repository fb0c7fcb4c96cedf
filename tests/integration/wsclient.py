"""A minimal test client for the WebSocket protocol (raw messages, no reconnect magic)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import aiohttp


class Points:
    """Per subscription id: points (time, {field: value}) and order checks."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self.keys: dict[str, list[str]] = {}
        self.position: dict[str, str] = {}
        self.messages: list[dict[str, Any]] = []
        self.first_data: dict[str, dict[str, Any]] = {}

    def add(self, m: dict[str, Any]) -> None:
        self.messages.append(m)
        if m["type"] != "data":
            return
        sid = m["id"]
        frame = m["frame"]
        self.first_data.setdefault(sid, m)
        if "schema" in frame:
            self.keys[sid] = [f["name"] for f in frame["schema"]["fields"][1:]]
        values = frame["data"]["values"]
        keys = self.keys[sid]
        for i, t in enumerate(values[0]):
            self.rows[sid].append((t, {k: values[j + 1][i] for j, k in enumerate(keys)}))
        if m.get("position"):
            self.position[sid] = m["position"]

    def times(self, sid: str) -> list[int]:
        return [t for t, _ in self.rows[sid]]

    def of_type(self, kind: str, sid: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind and (sid is None or m.get("id") == sid)]


async def collect(ws: aiohttp.ClientWebSocketResponse, pts: Points, seconds: float,
                  until: Any = None) -> None:
    """Read messages into ``pts`` for ``seconds`` or until ``until(pts)`` is true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        pts.add(json.loads(msg.data))
        if until is not None and until(pts):
            return
