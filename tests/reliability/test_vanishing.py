"""A reader whose network dies without a FIN is found by heartbeat and released.

The reader runs in a network namespace of our own, joined to the host by a veth pair; we cut it
by taking its end of the link down, so no FIN or RST ever reaches the server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer

HOST_IP, PEER_IP = "10.231.7.1", "10.231.7.2"  # our own test hosts, inside our own namespace
HEARTBEAT = 2.0

CLIENT = textwrap.dedent('''
    import asyncio, sys, aiohttp
    async def main(url):
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(url + "/api/ws", autoping=True)
            await ws.send_json({"type": "subscribe", "id": "A", "channel": "random-walk"})
            stream = await s.get(url + "/api/stream?channel=random-walk")
            print("ready", flush=True)
            async def drain_ws():
                async for _ in ws:
                    pass
            async def drain_stream():
                async for _ in stream.content.iter_any():
                    pass
            await asyncio.gather(drain_ws(), drain_stream())
    asyncio.run(main(sys.argv[1]))
''')


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root to create a network namespace (CI runs as root)")
    tag = f"{os.getpid() % 100000}"
    ns, host, peer = f"ld{tag}", f"ldh{tag}", f"ldp{tag}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", host)
        sh("ip", "link", "set", host, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{PEER_IP}/30", "dev", peer)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def gauge(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def test_a_reader_cut_off_without_fin_is_released_within_two_heartbeats(netns: str, tmp_path: Path) -> None:
    server = LiveServer(["--host", "0.0.0.0", "--heartbeat", str(HEARTBEAT)]).start()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, str(script), f"http://{HOST_IP}:{server.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready", client.stderr.read() if client.stderr else ""
        deadline = time.monotonic() + 10
        while gauge(server.url, "livedata_connections_open") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gauge(server.url, "livedata_connections_open") == 2
        assert gauge(server.url, "livedata_subscriptions") == 2
        time.sleep(HEARTBEAT)  # steady state: pongs and ACKs flowing
        sh("ip", "netns", "exec", netns, "ip", "link", "set", f"ldp{netns[2:]}", "down")  # no FIN, no RST
        cut = time.monotonic()
        while time.monotonic() - cut < 4 * HEARTBEAT:
            if gauge(server.url, "livedata_connections_open") == 0:
                break
            time.sleep(0.05)
        took = time.monotonic() - cut
        assert gauge(server.url, "livedata_connections_open") == 0, "the vanished reader was never released"
        assert gauge(server.url, "livedata_subscriptions") == 0
        assert took <= 2 * HEARTBEAT + 0.5, f"released after {took:.2f} s, more than two heartbeats"
        assert client.poll() is None  # the client never closed anything itself
    finally:
        client.kill()
        client.wait()
        server.stop()
