"""WebSocket messages just under the size limit, from many sockets at once: what is being received
is counted in the budget, and the sockets holding the most are closed (1009) when it is full."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.rawws import frame, raw_ws, read_until_close
from tests.resources.conftest import metric, resource_server, victim, watch


async def test_many_sockets_sending_messages_just_under_the_limit(tmp_path: Path) -> None:
    server = resource_server("--max-frame-bytes", "4MiB")
    try:
        async with aiohttp.ClientSession() as s:
            with watch(server, tmp_path) as w:
                async with victim(server.url):
                    payload = frame(0x1, b'{"type":"ping","pad":"' + b"x" * (4 * 1024 * 1024 - 64) + b'"}')
                    socks = [await raw_ws(server.port) for _ in range(40)]  # 160 MiB in flight if all finished
                    sent = len(payload) - 1024
                    for _, writer in socks:  # everything but the last KiB: the message never completes
                        writer.write(payload[:sent])
                    await asyncio.gather(*(writer.drain() for _, writer in socks), return_exceptions=True)
                    await asyncio.sleep(2)
                    inbound = await metric(s, server.url, "livedata_memory_bytes", '{kind="inbound"}')
                    shed = await metric(s, server.url, "livedata_memory_shed", '{kind="inbound"}')
                    assert inbound <= 256 * 1024 * 1024 // 8
                    assert shed >= 20
                    codes = []
                    for reader, writer in socks:
                        try:
                            _, code, reason = await read_until_close(reader, wait_s=1)
                        except TimeoutError:  # not shed: still receiving its message
                            code, reason = None, ""
                        codes.append((code, reason[:20]))
                        writer.close()
                    assert codes.count((1009, "message too big: the")) >= 20, codes
            w.check()
    finally:
        server.stop()
