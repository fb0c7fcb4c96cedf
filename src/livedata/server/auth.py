"""Who may do what, checked in one place: the host and origin of every request, and which
route and which WebSocket message needs which right.

Every request passes :func:`middleware` before its handler: first the ``Host`` it names and the
``Origin`` it comes from (``guard.py``: DNS rebinding, cross-site writes; a CORS preflight is
answered here too), then the token its route needs (:data:`ROUTES`, route name -> rule). Every
route has a rule, so the table is the whole surface: ``tests/unit/test_auth_routes.py`` fails on a
route without one. WebSocket messages (the socket opens without a token, which may come in an
``auth`` message) are checked by ``ws.py`` against :data:`MESSAGES`. To add a route, name it in
``app.py`` and add a rule here.

Write tokens may push (and read), read tokens may subscribe, a metrics token may read
``/metrics`` only. With no tokens of a kind configured, that right is open. Checks are
constant-time and answers never echo the token.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from livedata.config import Config
from livedata.core.otlp import encode_status
from livedata.server.guard import SAFE_METHODS, Guard
from livedata.server.http import influx_error, json_error, wants_page

Right = Literal["read", "write", "metrics"]
Dialect = Literal["livedata", "influx-v2", "influx-v1", "otlp"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs."""

    right: Right | None
    """None: open to anyone who passes the host and origin checks."""
    query_token: bool = False
    """``?token=`` is accepted besides ``Authorization: Bearer`` (an EventSource or a browser
    WebSocket cannot set headers)."""
    error_reason: str | None = None
    """A denial is counted in ``livedata_push_errors{reason="auth"}`` when set to ``"auth"``."""
    dialect: Dialect = "livedata"
    """Where the token is and how a denial is answered: livedata's own (``Bearer``, JSON
    ``{"error"}``), InfluxDB 2 / 1.x (``Token`` or ``Bearer`` or basic auth, 1.x also ``?p=``;
    InfluxDB's error bodies), or OTLP (``Bearer`` or ``Token``; a ``google.rpc.Status``)."""
    page: bool = False
    """A browser asking for the HTML page (``http.wants_page``) gets it without a token: it holds no data."""
    websocket: bool = False
    """A WebSocket upgrade: checked for origin like a write (its messages may publish); its
    messages are checked one by one by ``ws.py``."""


ROUTES: dict[str, Rule] = {
    "health": Rule(None),
    "static": Rule(None),  # the live view's script and style: no data
    "root": Rule("read", page=True),  # the live view page (open), or the reference stream (read)
    "openapi": Rule("read"),
    "metrics": Rule("metrics"),
    "ws": Rule(None, websocket=True),
    "stream": Rule("read", query_token=True),
    "channels": Rule("read"),
    "sources": Rule("read"),
    "push": Rule("write", error_reason="auth"),
    "delete-channel": Rule("write"),
    "influx-write-v2": Rule("write", error_reason="auth", dialect="influx-v2"),
    "influx-write-v1": Rule("write", error_reason="auth", dialect="influx-v1"),
    "otlp-metrics": Rule("write", error_reason="auth", dialect="otlp"),
    # InfluxDB's readiness routes are open in InfluxDB too, and clients call them before any token;
    # /query answers CREATE DATABASE (a no-op) and refuses everything else: it touches no data.
    "influx-ping": Rule(None),
    "influx-health": Rule(None),
    "influx-ready": Rule(None),
    "influx-query": Rule(None),
}
"""Route name (``app.py``) -> what it needs. Only ``/api/health``, the InfluxDB readiness routes and
the live view's page and assets are open; a route missing here is refused as if it needed a write
token (fail closed)."""

UNLISTED = Rule("write")

MESSAGES: dict[str, Right] = {"subscribe": "read", "publish": "write"}
"""WebSocket message type -> the right it needs."""


def _match(token: str, tokens: tuple[str, ...]) -> bool:
    ok = False
    # Bytes that are not UTF-8 (in a header) arrive as lone surrogates: compare them as bytes too.
    given = token.encode("utf-8", "surrogatepass")
    for t in tokens:  # no early exit: time does not depend on which token matched
        ok |= hmac.compare_digest(given, t.encode("utf-8", "surrogatepass"))
    return ok


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def request_token(request: web.Request, query_token: bool) -> str | None:
    """The request's bearer token, or its ``?token=`` when the route accepts one."""
    token = bearer(request.headers.get("Authorization"))
    if token is None and query_token:
        token = request.query.get("token")
    return token


def influx_token(request: web.Request, v1: bool) -> str | None:
    """The token where InfluxDB clients and OTLP exporters put it: ``Authorization: Token <t>`` or
    ``Bearer <t>``, HTTP basic auth (the password), and for InfluxDB 1.x also ``?p=<t>``."""
    scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.lower()
    rest = rest.strip()
    if scheme in ("token", "bearer") and rest:
        return rest
    if scheme == "basic" and rest:
        try:
            user, _, password = base64.b64decode(rest, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or user or None
    if v1:
        return request.query.get("p") or None
    return None
def known(config: Config, token: str) -> bool:
    """``token`` is one of this server's tokens (of any kind)."""
    metrics = (config.metrics_token,) if config.metrics_token else ()
    return _match(token, config.read_tokens) | _match(token, config.write_tokens) | _match(token, metrics)


def check(config: Config, token: str | None, right: Right) -> tuple[int, str] | None:
    """None when ``token`` grants ``right``; else (401 or 403, a sentence). Never echoes the token.

    Write tokens grant read; read and write tokens grant metrics.
    """
    if right == "write":
        granted = config.write_tokens
    elif right == "read":
        granted = config.read_tokens + config.write_tokens if config.read_tokens else ()
    else:
        open_ = not config.read_tokens and not config.metrics_token
        granted = () if open_ else (
            config.read_tokens + config.write_tokens + ((config.metrics_token,) if config.metrics_token else ()))
    if not granted:
        return None
    what = {"write": "write", "read": "read", "metrics": "read metrics"}[right]
    if token is None:
        return 401, f"a token is required to {what}: send 'Authorization: Bearer <token>'"
    if _match(token, granted):
        return None
    if known(config, token):
        return 403, f"this token may not {what}"
    return 401, "unknown token"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Denied = Callable[[str], None]


def middleware(config: Config, on_denied: Denied) -> Middleware:
    """The aiohttp middleware: host, origin (``guard.py``), CORS preflight, then :data:`ROUTES`;
    ``on_denied(reason)`` counts a token denial whose rule names an ``error_reason``.

    It is a plain function that returns the handler's own awaitable (no coroutine frame of its
    own), so a long-lived stream does not keep a middleware frame alive for its whole life.
    """
    guard = Guard.of(config)
    # A server sees few distinct Host/Origin values: remember the answers (bounded, as clients choose them).
    check_host = functools.lru_cache(maxsize=256)(guard.check_host)
    check_origin = functools.lru_cache(maxsize=256)(guard.check_origin)

    @web.middleware
    def auth(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        headers = request.headers
        host = headers.get("Host")
        refused = check_host(host)
        if refused is not None:
            return _answer(request, "livedata", refused.status, refused.message)
        match = request.match_info
        name = match.route.name
        rule = ROUTES.get(name) if name is not None else None
        writes = request.method not in SAFE_METHODS or (rule is not None and rule.websocket)
        refused = check_origin(headers.get("Origin"), headers.get("Sec-Fetch-Site"), request.scheme, host, writes)
        if refused is not None:
            return _answer(request, rule.dialect if rule is not None else "livedata", refused.status, refused.message)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
            return _preflight()
        if rule is None:
            if match.http_exception is not None:  # no such path or method: the handler raises 404/405
                return handler(request)
            rule = UNLISTED
        if rule.right is None or (rule.page and wants_page(request)):
            return handler(request)
        if rule.dialect == "livedata":
            token = request_token(request, rule.query_token)
        else:
            token = influx_token(request, v1=rule.dialect == "influx-v1")
        denied = check(config, token, rule.right)
        if denied is None:
            return handler(request)
        if rule.error_reason is not None:
            on_denied(rule.error_reason)
        return _answer(request, rule.dialect, *denied)

    return auth


async def _answer(request: web.Request, dialect: Dialect, status: int, text: str) -> web.StreamResponse:
    if dialect == "livedata":
        return json_error(status, text)
    text = text.replace("'Authorization: Bearer <token>'", "'Authorization: Token <token>'")
    if dialect == "otlp":
        body, ctype = encode_status(16 if status == 401 else 7, text, request.content_type == "application/json")
        return web.Response(status=status, body=body, content_type=ctype)
    return influx_error("v2" if dialect == "influx-v2" else "v1", status, text)
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, Last-Event-ID",
    "Access-Control-Max-Age": "600",
}


async def _preflight() -> web.StreamResponse:
    """A CORS preflight from an allowed origin (``Access-Control-Allow-Origin`` is added by the
    app's response hook)."""
    return web.Response(status=204, headers=PREFLIGHT)
