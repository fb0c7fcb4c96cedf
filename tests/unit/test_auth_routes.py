"""The auth table covers the app: every route is named and has a rule, and every rule names a
real route. A renamed or new route cannot silently lose (or never get) its check."""

from __future__ import annotations

from livedata.config import Config
from livedata.server import auth
from livedata.server.app import create_app

OPEN = {
    "health": "liveness for load balancers and the broker's state: no data",
    "static": "the live view's script and style: no data",
    "ws": "a WebSocket opens without a token; each message is checked (auth.MESSAGES), 4001 without one",
    "influx-ping": "InfluxDB readiness check: open in InfluxDB too, and clients call it before any token",
    "influx-health": "InfluxDB 2 health: open in InfluxDB too",
    "influx-ready": "InfluxDB 2 readiness: open in InfluxDB too",
    "influx-query": "answers CREATE DATABASE (a no-op) and refuses everything else; it touches no data",
}


async def test_every_route_is_named_and_has_a_rule() -> None:
    app = create_app(Config())
    named: set[str] = set()
    for resource in app.router.resources():
        assert resource.name is not None, f"{resource.canonical} has no name, so no rule in auth.ROUTES"
        named.add(resource.name)
    # The live view's assets are mounted only when they are built (make plugin).
    assert set(auth.ROUTES) - {"static"} <= named, f"rules for routes that do not exist: {set(auth.ROUTES) - named}"
    assert named <= set(auth.ROUTES), f"named routes without a rule: {named - set(auth.ROUTES)}"
    assert {n for n, r in auth.ROUTES.items() if r.right is None} == set(OPEN)


def test_rules() -> None:
    assert {name: (r.right, r.query_token, r.page) for name, r in auth.ROUTES.items()} == {
        "health": (None, False, False),
        "static": (None, False, False),
        "root": ("read", False, True),  # the page opens without a token, the reference stream needs read
        "openapi": ("read", False, False),
        "metrics": ("metrics", False, False),
        "ws": (None, False, False),
        "stream": ("read", True, False),  # EventSource cannot send headers
        "channels": ("read", False, False),
        "sources": ("read", False, False),
        "push": ("write", False, False),
        "delete-channel": ("write", False, False),
        "influx-write-v2": ("write", False, False),
        "influx-write-v1": ("write", False, False),
        "otlp-metrics": ("write", False, False),
        "influx-ping": (None, False, False),
        "influx-health": (None, False, False),
        "influx-ready": (None, False, False),
        "influx-query": (None, False, False),
    }
    assert {n: r.dialect for n, r in auth.ROUTES.items() if r.dialect != "livedata"} == {
        "influx-write-v2": "influx-v2", "influx-write-v1": "influx-v1", "otlp-metrics": "otlp"}
    assert auth.ROUTES["ws"].websocket
    assert auth.MESSAGES == {"subscribe": "read", "publish": "write"}
    assert auth.UNLISTED.right == "write"  # a route without a rule fails closed


def test_check_never_echoes_the_token_and_tells_401_from_403() -> None:
    config = Config(write_tokens=("w-SECRET",), read_tokens=("r-SECRET",))
    assert auth.check(config, "w-SECRET", "write") is None
    assert auth.check(config, "w-SECRET", "read") is None  # write implies read
    assert auth.check(config, "r-SECRET", "read") is None
    answers = [auth.check(config, t, right) for t in (None, "r-SECRET", "nope-SECRET") for right in ("read", "write")]
    assert [a[0] if a else None for a in answers] == [401, 401, None, 403, 401, 401]
    assert all("SECRET" not in a[1] for a in answers if a)
    assert auth.check(Config(), None, "write") is None  # no tokens configured: open


def test_metrics_right() -> None:
    """/metrics: open while reading is; else a read, write or the metrics token."""
    assert auth.check(Config(), None, "metrics") is None
    assert auth.check(Config(write_tokens=("w",)), None, "metrics") is None  # reading is open, so are metrics
    both = Config(write_tokens=("w",), read_tokens=("r",), metrics_token="m")
    assert [auth.check(both, t, "metrics") for t in ("w", "r", "m")] == [None, None, None]
    assert auth.check(both, None, "metrics") == (401, "a token is required to read metrics: send "
                                                      "'Authorization: Bearer <token>'")
    assert auth.check(both, "x", "metrics") == (401, "unknown token")
    assert auth.check(both, "m", "read") == (403, "this token may not read")  # metrics only
    assert auth.check(both, "m", "write") == (403, "this token may not write")
    only = Config(metrics_token="m")
    assert auth.check(only, None, "metrics") is not None and auth.check(only, "m", "metrics") is None
    assert auth.check(only, None, "read") is None  # no read tokens: reading stays open


def test_tokens_with_bytes_that_are_not_utf8_are_compared_not_crashed() -> None:
    config = Config(read_tokens=("r",))
    assert auth.check(config, "\udcff\ud800", "read") == (401, "unknown token")
    assert not auth.known(config, "\udcff")
