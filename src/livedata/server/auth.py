"""Tokens, checked in one place: which route and which WebSocket message needs which right.

Write tokens may push (and read), read tokens may subscribe. With no tokens of a kind configured,
that right is open. Checks are constant-time and answers never echo the token.

HTTP routes are checked by the :func:`middleware` against :data:`ROUTES` (route name -> rule)
before their handler runs; WebSocket messages (the socket itself opens without a token, which
may come later in an ``auth`` message) are checked by ``ws.py`` against :data:`MESSAGES`. To
protect a new route, name it in ``app.py`` and add a rule here.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from livedata.config import Config
from livedata.core.otlp import encode_status
from livedata.server.http import influx_error, json_error

Right = Literal["read", "write"]
Dialect = Literal["livedata", "influx-v2", "influx-v1", "otlp"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs."""

    right: Right
    query_token: bool = False
    """``?token=`` is accepted besides ``Authorization: Bearer`` (an EventSource or a browser
    WebSocket cannot set headers)."""
    error_reason: str | None = None
    """A denial is counted in ``livedata_push_errors{reason="auth"}`` when set to ``"auth"``."""
    dialect: Dialect = "livedata"
    """Where the token is and how a denial is answered: livedata's own (``Bearer``, JSON
    ``{"error"}``), InfluxDB 2 / 1.x (``Token`` or ``Bearer`` or basic auth, 1.x also ``?p=``;
    InfluxDB's error bodies), or OTLP (``Bearer`` or ``Token``; a ``google.rpc.Status``)."""


ROUTES: dict[str, Rule] = {
    "stream": Rule("read", query_token=True),
    "channels": Rule("read"),
    "sources": Rule("read"),
    "push": Rule("write", error_reason="auth"),
    "delete-channel": Rule("write"),
    "influx-write-v2": Rule("write", error_reason="auth", dialect="influx-v2"),
    "influx-write-v1": Rule("write", error_reason="auth", dialect="influx-v1"),
    "otlp-metrics": Rule("write", error_reason="auth", dialect="otlp"),
}
"""Route name (``app.py``) -> the right it needs. Routes not named here are open
(the page, health, metrics, the OpenAPI document, the reference stream, and ``/api/ws``, whose
messages are checked one by one)."""

MESSAGES: dict[str, Right] = {"subscribe": "read", "publish": "write"}
"""WebSocket message type -> the right it needs."""


def _match(token: str, tokens: tuple[str, ...]) -> bool:
    ok = False
    for t in tokens:  # no early exit: time does not depend on which token matched
        ok |= hmac.compare_digest(token.encode(), t.encode())
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


def check(config: Config, token: str | None, right: Right) -> tuple[int, str] | None:
    """None when ``token`` grants ``right``; else (401 or 403, a sentence). Never echoes the token."""
    needed = config.write_tokens if right == "write" else config.read_tokens
    if right == "read" and not config.read_tokens:
        return None
    if right == "write" and not config.write_tokens:
        return None
    if token is None:
        return 401, f"a token is required to {right}: send 'Authorization: Bearer <token>'"
    if _match(token, needed) or (right == "read" and _match(token, config.write_tokens)):
        return None
    known = _match(token, config.read_tokens) or _match(token, config.write_tokens)
    if known:
        return 403, f"this token may not {right}"
    return 401, "unknown token"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Denied = Callable[[str], None]


def middleware(config: Config, on_denied: Denied) -> Middleware:
    """The aiohttp middleware that applies :data:`ROUTES`; ``on_denied(reason)`` counts a denial
    whose rule names an ``error_reason``.

    It is a plain function that returns the handler's own awaitable (no coroutine frame of its
    own), so a long-lived stream does not keep a middleware frame alive for its whole life.
    """

    @web.middleware
    def auth(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        rule = ROUTES.get(request.match_info.route.name or "")
        if rule is None:
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
