"""An MQTT source against a real mosquitto, publishing into each broker (memory, real Redis), no HTTP server.

Messages come from the Debian ``mosquitto_pub`` and from paho-mqtt (another client than the
source's gmqtt). The server-level tests (status, notices, metrics, config) are in
tests/integration/test_sources_server.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from benchmarks.mosquitto import Mosquitto

from livedata.brokers.base import Broker
from livedata.core.sourcespec import parse_mqtt
from livedata.sources.base import BrokerSink
from livedata.sources.mqtt import MqttSource
from tests.conftest import BrokerMaker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mosq() -> Iterator[Mosquitto]:
    m = Mosquitto().start()
    yield m
    m.close()


async def until(cond: Callable[[], Awaitable[bool] | bool], wait_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        got = cond()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


async def rows(broker: Broker, channel: str) -> list[tuple[int, dict[str, Any]]]:
    hist = await broker.history(channel, None, None)
    out: list[tuple[int, dict[str, Any]]] = []
    for c in hist.chunks:
        for i, t in enumerate(c.times):
            out.append((t, {k: col[i] for k, col in c.columns.items() if col[i] is not None}))
    return out


async def count(broker: Broker, channel: str) -> int:
    return len(await rows(broker, channel))


def source(mosq: Mosquitto, broker: Broker, **keys: Any) -> MqttSource:
    spec = parse_mqtt({"url": mosq.url, "topics": ["sensors/#"], **keys})
    return MqttSource(spec, BrokerSink(broker))


async def started(src: MqttSource) -> MqttSource:
    src.start()
    await until(lambda: src.status.state == "up", what="the source to connect")
    await asyncio.sleep(0.1)  # SUBACK
    return src


async def pub(mosq: Mosquitto, topic: str, payload: str | bytes, **kw: Any) -> None:
    await asyncio.to_thread(mosq.pub, topic, payload, **kw)


async def test_wildcards_templates_and_json(mosq: Mosquitto, make_broker: BrokerMaker) -> None:
    broker = await make_broker(retention_s=1e12, prefix="keep:")  # the messages carry 2023 times: keep them
    src = await started(source(mosq, broker, topics=["sensors/+/temp", "home/#"], channel="mqtt/{topic[1:]}"))
    try:
        await pub(mosq, "sensors/kitchen/temp", '{"temp": 21.5, "ts": 1700000000}')
        await pub(mosq, "sensors/kitchen/hum", '{"hum": 40}')  # not subscribed
        await pub(mosq, "home/hall/lamp", '{"state": "ON", "brightness": 120, "color": {"x": 0.3}}')
        await until(lambda: count(broker, "mqtt/hall/lamp"), what="mqtt/hall/lamp")
        assert await rows(broker, "mqtt/kitchen/temp") == [(1_700_000_000_000, {"temp": 21.5})]
        (_, lamp), = await rows(broker, "mqtt/hall/lamp")
        assert lamp == {"state": "ON", "brightness": 120, "color.x": 0.3}
        assert await broker.fields("mqtt/kitchen/hum") is None
        assert src.status.messages == 2 and src.status.errors == {}
    finally:
        await src.stop()


async def test_every_format(mosq: Mosquitto, make_broker: BrokerMaker) -> None:
    broker = await make_broker(retention_s=1e12, prefix="keep:")  # the messages carry 2023 times: keep them
    src = await started(source(mosq, broker, topics=["f/#"], channel="{topic}"))
    path = await started(source(mosq, broker, topics=["p/#"], json_path="$.data[*]", name="withpath"))
    num = await started(source(mosq, broker, topics=["n/#"], format="number", name="numbers"))
    try:
        await pub(mosq, "f/number", "21.5")
        await pub(mosq, "f/text", "ON")
        await pub(mosq, "f/bool", "true")
        await pub(mosq, "f/lp", "cpu,host=a usage=12.5 1700000000000000000\ncpu,host=b usage=3 1700000000000000000")
        doc = {"ts": 1_700_000_000_000, "data": [{"v": 1}, {"v": 2, "ts": 1_700_000_000_001}]}
        await pub(mosq, "p/x", json.dumps(doc))
        await pub(mosq, "n/x", "42")
        await pub(mosq, "n/x", "forty-two")
        await until(lambda: count(broker, "f/lp/cpu"), what="line protocol")
        await until(lambda: count(broker, "p/x"), what="json path")
        await until(lambda: num.status.errors.get("number") == 1, what="the refused number")
        assert [v for _, v in await rows(broker, "f/number")] == [{"value": 21.5}]
        assert [v for _, v in await rows(broker, "f/text")] == [{"value": "ON"}]
        assert [v for _, v in await rows(broker, "f/bool")] == [{"value": True}]
        assert await rows(broker, "f/lp/cpu") == [(1_700_000_000_000, {'usage {host="a"}': 12.5,
                                                                      'usage {host="b"}': 3.0})]
        assert await rows(broker, "p/x") == [(1_700_000_000_000, {"v": 1}), (1_700_000_000_001, {"v": 2})]
        assert [v for _, v in await rows(broker, "n/x")] == [{"value": 42}]
    finally:
        for s in (src, path, num):
            await s.stop()


async def test_a_malformed_payload_among_good_ones_is_counted_and_the_source_goes_on(
        mosq: Mosquitto, broker: Broker) -> None:
    src = await started(source(mosq, broker))
    try:
        lines = ['{"v": 1}', '{"v": ', '{"v": 3}', '{"v": "a string now"}', '{"v": 5}', '{"v": {}}']
        await asyncio.to_thread(mosq.pub_lines, "sensors/x", lines)
        await pub(mosq, "sensors/x", b"\xff\xfe not UTF-8")
        await pub(mosq, "sensors/x", b'{"v": "' + b"x" * (2 << 20) + b'"}')  # over max_payload_bytes
        await until(lambda: sum(src.status.errors.values()) >= 5, what="five errors")
        await until(lambda: count(broker, "sensors/x"), what="points")
        await asyncio.sleep(0.1)
        assert [v["v"] for _, v in await rows(broker, "sensors/x")] == [1, 3, 5]
        assert src.status.errors == {"json": 1, "schema": 1, "fields": 1, "encoding": 1, "size": 1}
        assert src.status.state == "up" and src.status.messages == 8
    finally:
        await src.stop()


async def test_retained_messages_are_taken_once_across_reconnects(mosq: Mosquitto, broker: Broker) -> None:
    await pub(mosq, "sensors/lamp", '{"state": "ON"}', retain=True)
    src = await started(source(mosq, broker))
    try:
        await until(lambda: count(broker, "sensors/lamp"), what="the retained message")
        await asyncio.to_thread(mosq.restart)
        await until(lambda: src.connections == 2 and src.status.state == "up", what="a reconnect")
        await asyncio.sleep(0.5)  # the broker sends the retained message again
        assert await count(broker, "sensors/lamp") == 1
        assert src.status.messages == 2  # it did come again, and was recognised
        await pub(mosq, "sensors/lamp", '{"state": "OFF"}', retain=True)
        await until(lambda: src.status.messages == 3, wait_s=5, what="the new value")
        await asyncio.sleep(0.1)
        assert [v["state"] for _, v in await rows(broker, "sensors/lamp")] == ["ON", "OFF"]
    finally:
        await src.stop()


class PahoPublisher:
    """paho-mqtt publishing numbered QoS 1 messages at a steady pace; records which were acknowledged.

    No lock around paho calls: paho calls ``on_publish`` from its network thread while holding
    its own locks, so taking another lock there can deadlock against ``publish``.
    """

    def __init__(self, port: int, topic: str, n: int, rate: float) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-pub", clean_session=False)
        self.c.reconnect_delay_set(0.05, 0.5)
        self.c.max_queued_messages_set(0)
        self.port, self.topic, self.n, self.rate = port, topic, n, rate
        self.mids: list[int] = []
        self.acked_mids: set[int] = set()
        self.c.on_publish = lambda client, userdata, mid, rc, props: self.acked_mids.add(mid)
        self.stopped = threading.Event()

    @property
    def sent(self) -> int:
        return len(self.mids)

    @property
    def acked(self) -> set[int]:
        done = set(self.acked_mids)
        return {i for i, mid in enumerate(self.mids) if mid in done}

    def run(self) -> None:
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        try:
            for i in range(self.n):
                if self.stopped.is_set():
                    return
                self.mids.append(self.c.publish(self.topic, json.dumps({"seq": i}), qos=1).mid)
                time.sleep(1 / self.rate)
            deadline = time.monotonic() + 20
            while len(self.acked) < self.n and time.monotonic() < deadline and not self.stopped.is_set():
                time.sleep(0.05)
        finally:
            self.c.loop_stop()
            self.c.disconnect()


async def test_qos1_through_a_broker_restart_loses_nothing_the_broker_accepted(
        mosq: Mosquitto, broker: Broker) -> None:
    src = await started(source(mosq, broker, qos=1))
    try:
        pub_ = PahoPublisher(mosq.port, "sensors/seq", 600, rate=300)
        sender = threading.Thread(target=pub_.run, daemon=True)
        sender.start()
        try:
            await until(lambda: pub_.sent > 200, what="the first messages")
            await asyncio.to_thread(mosq.restart, 0.3)  # down for 0.3 s in the middle
            await until(lambda: not sender.is_alive(), wait_s=40, what="the publisher to finish")
        finally:
            pub_.stopped.set()
        assert len(pub_.acked) > 500, "the publisher itself lost messages: the test proves nothing"
        async def all_in() -> bool:
            return set(await _seq_list(broker)) >= pub_.acked

        await until(all_in, wait_s=20, what="every acknowledged message")
        assert src.connections >= 2
    finally:
        await src.stop()


async def _seq_list(broker: Broker) -> list[int]:
    return [int(v["seq"]) for _, v in await rows(broker, "sensors/seq")]


async def test_credentials_and_a_refused_login(broker: Broker) -> None:
    mosq = Mosquitto(users={"ld": "s3cret"}).start()
    try:
        bad = source(mosq, broker, username="ld", password="wrong", name="bad")
        bad.start()
        await until(lambda: bad.status.state == "down", what="the refusal")
        assert "cannot connect" in (bad.status.last_error or "")
        await bad.stop()
        good = await started(source(mosq, broker, username="ld", password="s3cret", name="good"))
        await pub(mosq, "sensors/a", "1", user=("ld", "s3cret"))
        await until(lambda: count(broker, "sensors/a"), what="the message")
        await good.stop()
    finally:
        mosq.close()


async def test_down_and_back_with_backoff(mosq: Mosquitto, broker: Broker) -> None:
    states: list[str] = []
    src = source(mosq, broker)
    src.on_state = lambda s: states.append(s.status.state)
    await started(src)
    try:
        mosq.stop()
        await until(lambda: src.status.state in ("down", "connecting"), what="down")
        await asyncio.sleep(1.5)
        assert src.status.state != "up"
        await asyncio.to_thread(mosq.start)
        await until(lambda: src.status.state == "up", wait_s=20, what="back up")
        await pub(mosq, "sensors/after", "1")
        await until(lambda: count(broker, "sensors/after"), what="a message after the outage")
        assert states[:3] == ["connecting", "up", "down"] and states[-1] == "up"
    finally:
        await src.stop()
    assert src.status.state == "stopped"


async def test_stop_stores_everything_received(mosq: Mosquitto, broker: Broker) -> None:
    src = await started(source(mosq, broker, flush_ms=2000))  # a long flush period: points wait
    await asyncio.to_thread(mosq.pub_lines, "sensors/burst", [f'{{"i": {i}}}' for i in range(200)])
    await until(lambda: src.status.messages == 200, what="200 messages received")
    await src.stop()
    assert await count(broker, "sensors/burst") == 200


def _certs(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=livedata test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return ca, cert, key


async def test_mqtts_with_a_ca_file_and_a_refused_certificate(broker: Broker, tmp_path: Path) -> None:
    ca, cert, key = _certs(tmp_path)
    tls_port = _free_port()
    mosq = Mosquitto(extra=[f"listener {tls_port} 127.0.0.1", f"cafile {ca}", f"certfile {cert}",
                            f"keyfile {key}"]).start()
    try:
        src = MqttSource(parse_mqtt({"url": f"mqtts://127.0.0.1:{tls_port}", "topics": ["sensors/#"],
                                     "ca_file": str(ca), "name": "tls"}), BrokerSink(broker))
        await started(src)
        await pub(mosq, "sensors/tls", '{"v": 1}')  # on the plain listener: the broker forwards it
        await until(lambda: count(broker, "sensors/tls"), what="a message over TLS")
        await src.stop()
        untrusted = MqttSource(parse_mqtt({"url": f"mqtts://127.0.0.1:{tls_port}", "topics": ["sensors/#"],
                                           "name": "untrusted"}), BrokerSink(broker))
        untrusted.start()
        await until(lambda: untrusted.status.state == "down", what="the refused certificate")
        assert "CERTIFICATE" in (untrusted.status.last_error or "").upper()
        await untrusted.stop()
    finally:
        mosq.close()
