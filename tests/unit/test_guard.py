"""The host and origin policy (server/guard.py), without a socket: what a browser page may make
this server do. The same cases against a real server: tests/security/test_guard.py."""

from __future__ import annotations

import pytest

from livedata.config import Config
from livedata.server.guard import Guard, bound_to_loopback, split_host


@pytest.mark.parametrize(("header", "parsed"), [
    ("localhost:8080", ("localhost", 8080)),
    ("LocalHost.", ("localhost", None)),  # case and the root's trailing dot do not matter
    ("127.0.0.1", ("127.0.0.1", None)),
    ("[::1]:80", ("::1", 80)),
    ("[0:0:0:0:0:0:0:1]", ("::1", None)),  # IPv6 spelled out: the same address
    ("grafana.example.com:443", ("grafana.example.com", 443)),
    ("a_b.internal", ("a_b.internal", None)),
    ("::1", None),  # IPv6 without brackets
    ("[::1", None),
    ("[127.0.0.1]", None),
    ("[::1]x", None),
    ("localhost:", None),
    ("localhost:0", None),
    ("localhost:65536", None),
    ("localhost:\uff18\uff10", None),  # fullwidth digits
    ("localhost:+80", None),
    ("", None),
    (" ", None),
    ("localhost@evil.example", None),
    ("evil.example/localhost", None),
    ("evil.example\r\nX: y", None),
    ("\uff4cocalhost", None),  # not ASCII: browsers send IDNA (xn--) names
    ("a..b", None),
    (".", None),
    ("x" * 254, None),
])
def test_split_host(header: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(header) == parsed


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("myhost", False),
])
def test_bound_to_loopback(host: str, loopback: bool) -> None:
    assert bound_to_loopback(host) is loopback


LOOPBACK = Guard.of(Config())


@pytest.mark.parametrize("header", [None, "localhost", "localhost:8080", "LOCALHOST", "localhost.", "127.0.0.1:1",
                                    "127.9.9.9", "[::1]:8080", "[0:0:0:0:0:0:0:1]", "grafana.localhost:3000"])
def test_loopback_server_answers_loopback_names(header: str | None) -> None:
    assert LOOPBACK.check_host(header) is None


@pytest.mark.parametrize("header", ["evil.example", "evil.example:8080", "evil.example.", "EVIL.example",
                                    "localhost.evil.example", "10.0.0.1", "[::ffff:7f00:1]", "0.0.0.0",
                                    "127.0.0.1.nip.io", "2130706433"])
def test_loopback_server_refuses_other_names(header: str) -> None:
    refused = LOOPBACK.check_host(header)
    assert refused is not None and refused.status == 403
    assert "--allowed-hosts" in refused.message


@pytest.mark.parametrize("header", ["", "a b", "localhost:99999", "[::1", "evil.example@localhost"])
def test_invalid_host_headers_are_400(header: str) -> None:
    refused = LOOPBACK.check_host(header)
    assert refused is not None and refused.status == 400 and "invalid Host header" in refused.message


def test_allowed_hosts_exact_and_domain() -> None:
    g = Guard.of(Config(allowed_hosts=("livedata.example.com", ".corp.example", "Upper.Example.")))
    for ok in ("livedata.example.com", "LIVEDATA.example.com:443", "corp.example", "a.b.corp.example",
               "upper.example", "localhost", "127.0.0.1"):
        assert g.check_host(ok) is None, ok
    for bad in ("evilcorp.example", "example.com", "livedata.example.com.evil", "10.0.0.1"):
        assert g.check_host(bad) is not None, bad


def test_off_loopback_any_name_unless_allowed_hosts() -> None:
    lan = Guard.of(Config(host="0.0.0.0"))
    assert lan.check_host("evil.example") is None  # as configured: nothing to go by
    assert not lan.trusted_name("evil.example")  # ...but it never makes an origin "our own"
    named = Guard.of(Config(host="0.0.0.0", allowed_hosts=("livedata.lan",)))
    assert named.check_host("livedata.lan:8080") is None
    assert named.check_host("192.168.1.5:8080") is None  # an address cannot be rebound
    assert named.check_host("evil.example") is not None
    anything = Guard.of(Config(allowed_hosts=("*",)))
    assert anything.check_host("evil.example") is None


def refused(g: Guard, origin: str | None, *, site: str | None = None, host: str = "127.0.0.1:8080",
            writes: bool = True, scheme: str = "http") -> int | None:
    r = g.check_origin(origin, site, scheme, host, writes)
    return None if r is None else r.status


def test_origins() -> None:
    g = Guard.of(Config(cors_origin=("http://localhost:3000", "https://Grafana.example.com/")))
    assert refused(g, None) is None  # curl, scripts, the Python client, Telegraf
    assert refused(g, "http://localhost:3000") is None
    assert refused(g, "https://grafana.example.com") is None  # config spelled with a capital and a slash
    assert refused(g, "http://evil.example") == 403
    assert refused(g, "http://evil.example", writes=False) == 403  # a CORS read the page could not see anyway
    assert refused(g, "null") == 403  # sandboxed frames, file: pages, data: URLs
    assert refused(g, "http://localhost:3001") == 403
    assert refused(g, "https://localhost:3000") == 403
    assert refused(g, "http://localhost:3000.evil.example") == 403
    assert refused(g, "http://localhost:3000@evil.example") == 403


def test_own_origin_only_under_a_name_no_page_can_rebind() -> None:
    g = Guard.of(Config(cors_origin=()))
    assert refused(g, "http://127.0.0.1:8080") is None  # the live view page this server serves
    assert refused(g, "http://localhost:8080", host="localhost:8080") is None
    assert refused(g, "http://LOCALHOST:8080", host="localhost.:8080") is None
    assert refused(g, "http://[::1]:8080", host="[::1]:8080") is None
    assert refused(g, "http://localhost", host="localhost:80") is None  # default port
    assert refused(g, "https://localhost", host="localhost", scheme="https") is None
    assert refused(g, "http://localhost:8081", host="localhost:8080") == 403  # another port is another origin
    assert refused(g, "https://localhost:8080", host="localhost:8080") == 403  # and another scheme
    # DNS rebinding: Origin and Host agree, but the name is the attacker's
    assert refused(g, "http://evil.example:8080", host="evil.example:8080") == 403
    lan = Guard.of(Config(host="0.0.0.0", cors_origin=()))
    assert refused(lan, "http://evil.example:8080", host="evil.example:8080") == 403
    assert refused(lan, "http://192.168.1.5:8080", host="192.168.1.5:8080") is None
    named = Guard.of(Config(host="0.0.0.0", cors_origin=(), allowed_hosts=("livedata.lan",)))
    assert refused(named, "http://livedata.lan:8080", host="livedata.lan:8080") is None


def test_sec_fetch_site() -> None:
    g = Guard.of(Config())
    assert refused(g, None, site="cross-site") == 403
    assert refused(g, None, site="Cross-Site") == 403
    assert refused(g, None, site="cross-site", writes=False) is None  # a link or an <img>: no Origin, no harm
    assert refused(g, None, site="same-site") is None  # another port of localhost: decided by Origin
    assert refused(g, None, site="same-origin") is None
    assert refused(g, None, site="none") is None  # typed in the address bar
    assert refused(g, "http://localhost:3000", site="cross-site") is None  # an allowed origin


def test_star_allows_every_origin() -> None:
    g = Guard.of(Config(cors_origin=("*",)))
    assert refused(g, "http://evil.example") is None
    assert refused(g, "null") is None
    assert refused(g, None, site="cross-site") == 403  # no Origin to allow: a browser always sends one with a write


def test_config_file_takes_the_new_keys(tmp_path: object) -> None:
    from pathlib import Path

    from livedata.config import ConfigError

    path = Path(str(tmp_path)) / "livedata.toml"
    path.write_text('allowed_hosts = ["livedata.example.com", ".corp.example"]\nmetrics_token = "m"\n')
    config = Config.load(file=str(path), env={})
    assert config.allowed_hosts == ("livedata.example.com", ".corp.example") and config.metrics_token == "m"
    path.write_text('allowed-hosts = "https://livedata.example.com"\n')
    with pytest.raises(ConfigError, match="allowed_hosts: --allowed-hosts takes host names"):
        Config.load(file=str(path), env={})
