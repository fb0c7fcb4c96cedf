"""``server/clientaddr.py``: whose address a request is, behind (trusted) reverse proxies."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from livedata.core.jsonerror import describe
from livedata.server.clientaddr import TrustedProxies, client_address, forwarded_chain, parse_ip


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 4711) if name == "peername" else default


def request(peer: str, *headers: tuple[str, str]) -> object:
    return make_mocked_request("GET", "/api/stream", headers=CIMultiDict(headers), transport=_Transport(peer))


PROXY = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(("peer", "headers", "trusted", "expected"), [
    # No trusted proxies: the headers are never believed.
    ("203.0.113.9", [("X-Forwarded-For", "1.2.3.4")], TrustedProxies(), "203.0.113.9"),
    # A peer that is not a trusted proxy: its headers are a client's claim.
    ("203.0.113.9", [("X-Forwarded-For", "1.2.3.4")], PROXY, "203.0.113.9"),
    # A trusted proxy: the client it names.
    ("10.0.0.5", [("X-Forwarded-For", "1.2.3.4")], PROXY, "1.2.3.4"),
    # A client that forges the left of the list is not believed: the rightmost untrusted hop wins.
    ("10.0.0.5", [("X-Forwarded-For", "6.6.6.6, 1.2.3.4")], PROXY, "1.2.3.4"),
    # Two proxies in a row, both trusted: the address before them.
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4, 10.1.1.1")], PROXY, "1.2.3.4"),
    # Every hop trusted: the leftmost.
    ("127.0.0.1", [("X-Forwarded-For", "10.9.9.9, 10.1.1.1")], PROXY, "10.9.9.9"),
    # Several headers count in order.
    ("10.0.0.5", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "1.2.3.4")], PROXY, "1.2.3.4"),
    # Forwarded (RFC 7239) wins over X-Forwarded-For; quoted IPv6 with a port.
    ("10.0.0.5", [("Forwarded", 'for="[2001:db8::17]:4711";proto=https'), ("X-Forwarded-For", "9.9.9.9")],
     PROXY, "2001:db8::17"),
    ("10.0.0.5", [("Forwarded", "for=192.0.2.60;proto=http, for=198.51.100.17")], PROXY, "198.51.100.17"),
    # Garbage or "unknown": the nearest address we can vouch for.
    ("10.0.0.5", [("X-Forwarded-For", "not-an-ip")], PROXY, "10.0.0.5"),
    ("10.0.0.5", [("Forwarded", "for=unknown")], PROXY, "10.0.0.5"),
    ("10.0.0.5", [("X-Forwarded-For", "1.2.3.4, garbage")], PROXY, "10.0.0.5"),
    # No header from a trusted proxy: the proxy itself.
    ("10.0.0.5", [], PROXY, "10.0.0.5"),
    # IPv4 with a port, and v4-mapped IPv6 compared as IPv4.
    ("::ffff:10.0.0.5", [("X-Forwarded-For", "1.2.3.4:5555")], PROXY, "1.2.3.4"),
])
def test_client_address(peer: str, headers: list[tuple[str, str]], trusted: TrustedProxies, expected: str) -> None:
    assert client_address(request(peer, *headers), trusted) == expected  # type: ignore[arg-type]


def test_bad_cidr_is_a_sentence() -> None:
    with pytest.raises(ValueError, match=r"--trusted-proxies: '10.0.0.0/33' is not an IP address or CIDR"):
        TrustedProxies(["10.0.0.0/33"])


def test_parse_ip_and_chain() -> None:
    assert str(parse_ip("[::1]:80")) == "::1"
    assert parse_ip("example.com") is None
    assert forwarded_chain({"X-Forwarded-For": " a , b "}) == ["a", "b"]


@pytest.mark.parametrize(("data", "text", "line"), [
    (b'{"a": x}', "malformed JSON at line 1, column 7: invalid character", 1),
    (b'[\n  {"a": 1},\n  {"a": 1,}\n]', "malformed JSON at line 3, column 11: trailing comma in object", 3),
    (b'{"a": 1', "malformed JSON: it ends too early at line 1", 1),
    (b"  ", "the JSON body is empty", None),
    ('{"é": x}'.encode(), "line 1, column 7", 1),  # columns count characters, not bytes
])
def test_json_errors_have_line_and_column(data: bytes, text: str, line: int | None) -> None:
    import msgspec

    with pytest.raises(msgspec.DecodeError) as info:
        msgspec.json.decode(data)
    got, got_line = describe(info.value, data)
    assert text in got and got_line == line, got
