"""Wide and sparse schemas: fields per channel are bounded, sparse data costs what it carries."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from tests.resources.conftest import MiB, metric, resource_server, victim, watch


async def test_distinct_keys_in_one_push_are_refused_at_once(tmp_path: Path) -> None:
    """8,000 JSON points with distinct keys (295 KB), and 8,000 line-protocol lines with distinct tag
    sets: once 1.9 s of loop and 210-243 MB each; now a 400 naming the field limit, nothing stored."""
    server = resource_server()
    try:
        async with aiohttp.ClientSession() as s:
            with watch(server, tmp_path) as w:
                async with victim(server.url):
                    now = time.time_ns() // 1_000_000
                    body = [{"time": now + i, f"key{i:05d}": float(i)} for i in range(8000)]
                    lp = "\n".join(f"m,host=h{i:05d} v={i} {(now + i) * 1_000_000}" for i in range(8000))
                    for _ in range(5):
                        async with s.post(f"{server.url}/api/push/wide/json", json=body) as r:
                            assert r.status == 400
                            err = await r.json()
                        assert "the limit is 1000 per channel" in err["error"] and err["field"] == "key01000"
                        async with s.post(f"{server.url}/api/push/wide/lp?precision=ns", data=lp) as r:
                            assert r.status == 400
                            assert "the limit is 1000 per channel" in (await r.json())["error"]
            w.check()
            async with s.get(f"{server.url}/api/channels") as r:
                names = {c["name"] for c in (await r.json())["channels"]}
            assert "wide/json" not in names and "wide/lp/m" not in names
    finally:
        server.stop()


async def test_one_new_field_per_push_stops_at_the_limit_and_sparse_rows_stay_small(tmp_path: Path) -> None:
    """10,000 single-value points, each with a new field name: the first 1,000 are stored (sparse:
    a few hundred bytes each), the rest are refused; a from=0 subscriber gets the 1,000 rows in
    packets of at most a quarter of its buffer, and a later one-value point is one packet."""
    server = resource_server("--buffer-bytes", "256KiB")
    try:
        async with aiohttp.ClientSession() as s:
            with watch(server, tmp_path) as w:
                now = time.time_ns() // 1_000_000
                statuses: dict[int, int] = {}
                for i in range(1200):
                    async with s.post(f"{server.url}/api/push/sparse/one",
                                      json={"time": now - 100_000 + i, f"f{i:05d}": float(i)}) as r:
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                assert statuses == {204: 1000, 400: 200}
                schema_bytes = await metric(s, server.url, "livedata_memory_bytes", '{kind="schema"}')
                history_bytes = await metric(s, server.url, "livedata_memory_bytes", '{kind="history"}')
                assert history_bytes < 1000 * 1024, f"1,000 one-value rows hold {history_bytes} bytes"
                assert schema_bytes < 1 * MiB
                sizes: list[int] = []
                rows = 0
                async with s.get(f"{server.url}/api/stream?channel=sparse/one&from=0&to=now") as r:
                    async for line in r.content:
                        msg = json.loads(line)
                        if msg["type"] == "complete":
                            break
                        if msg["type"] == "data":
                            rows += len(msg["frame"]["data"]["values"][0])
                            if "schema" not in msg["frame"]:
                                sizes.append(len(line))
                assert rows == 1000
                # Rows are as wide as the channel on the wire (Grafana's frames are dense), but a
                # packet stays within a quarter of the reader's buffer (the schema packet aside).
                assert max(sizes) <= 256 * 1024 // 4 + 8 * 1024, f"a packet of {max(sizes)} bytes"
            w.check()
    finally:
        server.stop()


async def test_long_string_values_are_refused(tmp_path: Path) -> None:
    server = resource_server("--max-string-length", "1000")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/api/push/strings/a", json={"s": "x" * 1001}) as r:
                assert r.status == 400
                err = await r.json()
            assert "1001 characters long; the limit is 1000" in err["error"] and err["field"] == "s"
            async with s.post(f"{server.url}/api/push/strings", data='m s="' + "y" * 5000 + '"') as r:
                assert r.status == 400 and "the limit is 1000" in (await r.json())["error"]
            async with s.post(f"{server.url}/api/push/strings/a", json={"s": "x" * 1000}) as r:
                assert r.status == 204
    finally:
        server.stop()


async def test_huge_fields_filter_lists_are_refused(tmp_path: Path) -> None:
    server = resource_server()
    try:
        async with aiohttp.ClientSession() as s:
            with watch(server, tmp_path) as w:
                async with s.ws_connect(f"{server.url}/api/ws", max_msg_size=0) as ws:
                    await ws.receive_json()
                    names = [f"field-{i:06d}" * 4 for i in range(50_000)]  # about 3 MB, under the frame limit
                    for i in range(5):
                        await ws.send_json({"type": "subscribe", "id": f"F{i}", "channel": "x/y", "fields": names})
                        msg = await asyncio.wait_for(ws.receive_json(), 10)
                        assert msg["type"] == "error" and msg["id"] == f"F{i}"
                        assert "at most 1000" in msg["message"]
                    await ws.send_json({"type": "subscribe", "id": "ok", "channel": "x/y", "fields": names[:10]})
                    msg = await asyncio.wait_for(ws.receive_json(), 10)
                    assert msg["type"] == "data" and msg["id"] == "ok"
            w.check()
    finally:
        server.stop()
