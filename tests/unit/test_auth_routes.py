"""The auth table covers the app: every rule names a real route, and every route is either in the
table or knowingly open. A renamed or new route cannot silently lose (or never get) its check."""

from __future__ import annotations

from livedata.config import Config
from livedata.server import auth
from livedata.server.app import create_app

OPEN = {
    "/": "the live view and the original reference stream (no tokens, as the example it replaces)",
    "/api/health": "liveness for load balancers",
    "/metrics": "Prometheus scrapes",
    "/api/openapi.json": "the API description",
    "/api/ws": "a WebSocket opens without a token; each subscribe/publish is checked (auth.MESSAGES)",
    "/static/": "the live view's assets",
    "/ping": "InfluxDB readiness check: open in InfluxDB too, and clients call it before any token",
    "/health": "InfluxDB 2 health: open in InfluxDB too",
    "/ready": "InfluxDB 2 readiness: open in InfluxDB too",
    "/query": "answers CREATE DATABASE (a no-op) and refuses everything else; it touches no data",
}


async def test_every_route_is_protected_or_knowingly_open() -> None:
    app = create_app(Config())
    named: dict[str, str] = {}
    unnamed: set[str] = set()
    for resource in app.router.resources():
        path = resource.canonical
        if resource.name is not None:
            named[resource.name] = path
        else:
            unnamed.add(path.rstrip("/") + "/" if path.startswith("/static") else path)
    assert set(auth.ROUTES) <= set(named), f"rules for routes that do not exist: {set(auth.ROUTES) - set(named)}"
    assert set(named) <= set(auth.ROUTES), f"named routes without a rule: {set(named) - set(auth.ROUTES)}"
    assert unnamed <= set(OPEN), f"routes neither in auth.ROUTES nor known to be open: {unnamed - set(OPEN)}"


def test_rules() -> None:
    assert {name: (r.right, r.query_token) for name, r in auth.ROUTES.items()} == {
        "stream": ("read", True),  # EventSource cannot send headers
        "channels": ("read", False),
        "sources": ("read", False),
        "push": ("write", False),
        "delete-channel": ("write", False),
        "influx-write-v2": ("write", False),
        "influx-write-v1": ("write", False),
        "otlp-metrics": ("write", False),
    }
    assert auth.MESSAGES == {"subscribe": "read", "publish": "write"}


def test_check_never_echoes_the_token_and_tells_401_from_403() -> None:
    config = Config(write_tokens=("w-SECRET",), read_tokens=("r-SECRET",))
    assert auth.check(config, "w-SECRET", "write") is None
    assert auth.check(config, "w-SECRET", "read") is None  # write implies read
    assert auth.check(config, "r-SECRET", "read") is None
    answers = [auth.check(config, t, right) for t in (None, "r-SECRET", "nope-SECRET") for right in ("read", "write")]
    assert [a[0] if a else None for a in answers] == [401, 401, None, 403, 401, 401]
    assert all("SECRET" not in a[1] for a in answers if a)
    assert auth.check(Config(), None, "write") is None  # no tokens configured: open
