"""TLS, per-address connection limit, security headers, frame size limit."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    openssl = shutil.which("openssl")
    if openssl is not None:
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    else:  # the `cryptography` package comes with our test dependencies (schemathesis, redis)
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
             .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False).sign(k, hashes.SHA256()))
        key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        crt.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return crt, key


async def test_tls_serves_https_and_wss(cert: tuple[Path, Path]) -> None:
    crt, key = cert
    server = LiveServer(["--certfile", str(crt), "--keyfile", str(key)], scheme="https").start()
    try:
        ctx = ssl.create_default_context(cafile=str(crt))
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://127.0.0.1:{server.port}/api/health", ssl=ctx) as r:
                assert (await r.json())["status"] == "ok"
            async with s.ws_connect(f"wss://127.0.0.1:{server.port}/api/ws", ssl=ctx) as ws:
                assert (await ws.receive_json())["type"] == "hello"
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{server.port}/api/health") as r:
                    await r.read()
    finally:
        server.stop()


async def test_connections_per_address_are_limited() -> None:
    server = LiveServer(["--max-connections-per-ip", "3"]).start()
    try:
        async with aiohttp.ClientSession() as s:
            held = [await s.ws_connect(f"{server.url}/api/ws") for _ in range(3)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await s.ws_connect(f"{server.url}/api/ws")
            assert err.value.status == 429
            async with s.get(f"{server.url}/api/stream", params={"channel": "x"}) as r:
                assert r.status == 429
                assert "too many connections" in (await r.json())["error"]
            async with s.get(f"{server.url}/?numSeries=1") as r:
                assert r.status == 429
            await held[0].close()
            for _ in range(50):  # the slot frees as soon as the server sees the close
                try:
                    ws = await s.ws_connect(f"{server.url}/api/ws")
                    break
                except aiohttp.WSServerHandshakeError:
                    await asyncio.sleep(0.05)
            assert (await ws.receive_json())["type"] == "hello"
            for h in [*held[1:], ws]:
                await h.close()
    finally:
        server.stop()


INDEX = Path(__file__).resolve().parents[2] / "src/livedata/server/static/index.html"


async def test_live_view_page_has_security_headers(shared_server: LiveServer) -> None:
    assert INDEX.exists(), "the live view page is missing"
    async with aiohttp.ClientSession() as s, s.get(shared_server.url + "/", headers={"Accept": "text/html"}) as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_frames_over_the_limit_are_refused_with_1009() -> None:
    server = LiveServer(["--max-frame-bytes", "10000"]).start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/api/ws") as ws:
            await ws.receive_json()
            await ws.send_str('{"type":"ping","pad":"' + "x" * 20000 + '"}')
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1009
    finally:
        server.stop()
