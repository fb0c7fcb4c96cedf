"""A stalled WebSocket reader: held to its buffer cap, closed with 4000 "slow", resumes losing nothing."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp

from tests.conftest import LiveServer
from tests.rawws import frame, raw_ws, read_until_close

CAP = 65536


def values_of(m: dict[str, Any]) -> list[int]:
    columns = m["frame"]["data"]["values"]
    return list(columns[1]) if len(columns) > 1 else []  # the first packet of an empty channel has no field


async def test_stalled_ws_reader_is_capped_closed_as_slow_and_resumes() -> None:
    server = LiveServer(["--buffer-bytes", str(CAP)]).start()
    try:
        async with aiohttp.ClientSession() as s:
            reader, writer = await raw_ws(server.port, rcvbuf=4096)
            transport = writer.transport
            writer.write(frame(0x1, json.dumps({"type": "subscribe", "id": "S", "channel": "slow/ws",
                                                "from": 0}).encode()))
            await writer.drain()
            await asyncio.sleep(0.2)
            transport.pause_reading()  # stop reading at the socket level: the kernel buffers fill up
            t0 = time.time_ns() // 1_000_000 - 60_000
            sent: list[int] = []
            max_queue = 0.0
            for i in range(400):  # the kernel buffers a few MB before the server sees a backlog
                values = list(range(i * 2000, (i + 1) * 2000))
                async with s.post(f"{server.url}/api/push/slow/ws",
                                  json={"time": [t0 + v for v in values], "v": values}) as r:
                    assert r.status == 204
                sent.extend(values)
                async with s.get(f"{server.url}/metrics") as r:
                    text = await r.text()
                max_queue = max(max_queue, float(re.search(r"^livedata_queue_bytes (\S+)$", text, re.M)[1]))
                if "livedata_slow_disconnects_total 1.0" in text:
                    break
            assert "livedata_slow_disconnects_total 1.0" in text, "the stalled reader was never closed"
            # what the server queued for it stayed within the cap plus one packet (~2,000 points)
            assert max_queue <= CAP + 64 * 1024, f"queued {max_queue} bytes for a stalled reader"
            transport.resume_reading()
            messages, code, reason = await read_until_close(reader)
            writer.close()
            assert (code, reason) == (4000, "slow")
            got = [v for m in messages if m["type"] == "data" for v in values_of(m)]
            position = [m["position"] for m in messages if m["type"] == "data" and m.get("position")][-1]
            async with s.ws_connect(f"{server.url}/api/ws", max_msg_size=0) as ws:
                await ws.send_json({"type": "subscribe", "id": "S", "channel": "slow/ws", "since": position})
                deadline = time.monotonic() + 20
                while len(got) < len(sent) and time.monotonic() < deadline:
                    m = await ws.receive_json(timeout=20)
                    if m["type"] == "data":
                        got.extend(values_of(m))
            assert got == sent, "the resumed reader lost or repeated points"
    finally:
        server.stop()
