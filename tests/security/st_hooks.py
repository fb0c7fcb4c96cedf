"""Schemathesis hooks: every generated case may be turned hostile before it is sent (issue 16).

Loaded with ``SCHEMATHESIS_HOOKS=tests.security.st_hooks`` by ``test_openapi_fuzz.py``. On top
of what schemathesis generates from the OpenAPI document, a case gets one of:

* Unicode digits (``²``, Arabic-Indic, fullwidth, double-struck) in every time-like value;
* JSON nested 950 (decodable), 5,000 or 100,000 deep, as the body or inside a point;
* lone surrogates (``\\ud800``) in the body's keys and values (escaped JSON, the only way to send them);
* control characters (NUL, ESC, DEL, CR/LF, U+202E, BOM) in the path, the query and the body;
* a foreign ``Host`` (a rebound DNS name, mixed case, trailing dot, IPv6 literals);
* a foreign ``Origin`` or ``Sec-Fetch-Site: cross-site``;
* HEAD instead of GET.

The choice is drawn by hypothesis (``st.randoms``), so a run with ``--seed`` is repeatable. The
run checks ``not_a_server_error``: no answer >= 500, whatever came in. Streams are kept finite:
a GET of ``/api/stream`` gets ``to=now`` (``to`` itself is fuzzed through HEAD, which validates
the whole query), and ``/`` with ``numSeries`` is asked with HEAD.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import schemathesis
from hypothesis import strategies as st

KINDS = ["plain", "plain", "digits", "deep", "surrogate", "control", "host", "origin", "head"]
"""Mutations, drawn uniformly: a quarter of the cases stay as generated."""

DIGITS = ["\u00b2", "\u0661\u0662", "\uff11\uff12\uff13", "-\u00b3", "\U0001d7d9", "now-\u00b2m", "now-\u0661h",
          "1\u00b2", "\u0969\u0966"]
CONTROL = ["\x00", "\x01", "\x1b[31m", "\x7f", "a\r\nX-Injected: 1", "\u202e", "\ufeff", "\x85", "\u2028"]
SURROGATE = ["\ud800", "\udc00", "a\udfffb", "\ud83d"]
HOSTS = ["evil.example", "EVIL.Example.", "evil.example:80", "localhost.evil.example", "[::ffff:7f00:1]",
         "[2001:db8::1]:8080", "127.0.0.1.nip.io", "10.0.0.1", "xn--lcalhost-9wa", "0.0.0.0"]
ORIGINS = ["http://evil.example", "null", "https://localhost:3000", "http://localhost:3000.evil.example",
           "file://", "http://[::1]:1"]
TIME_KEYS = ("time", "from", "to", "since", "numSeries", "interval", "reorder_ms", "precision")
MARK = "X-Livedata-Fuzz"
"""A header carrying the mutation from generation to :func:`before_call` (removed before sending)."""


def _strings(value: Any, pick: list[str], rnd: random.Random) -> Any:
    """``value`` with some of its strings (keys too) replaced or salted with ``pick``."""
    if isinstance(value, str):
        return rnd.choice(pick) + value if rnd.random() < 0.5 else value + rnd.choice(pick)
    if isinstance(value, list):
        return [_strings(v, pick, rnd) for v in value] or [rnd.choice(pick)]
    if isinstance(value, dict):
        out = {(_strings(k, pick, rnd) if rnd.random() < 0.3 else k): _strings(v, pick, rnd) for k, v in value.items()}
        out.setdefault(rnd.choice(pick) or "k", rnd.choice(pick))
        return out
    return value if rnd.random() < 0.5 else rnd.choice(pick)


def _times(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        return {k: (rnd.choice(DIGITS) if k in TIME_KEYS else _times(v, rnd)) for k, v in value.items()} | (
            {"time": rnd.choice(DIGITS)} if rnd.random() < 0.5 else {})
    if isinstance(value, list):
        return [_times(v, rnd) for v in value] or [{"time": rnd.choice(DIGITS), "v": 1}]
    return value


def _json_body(case: Any) -> bool:
    return isinstance(case.body, dict | list)  # not NOT_SET (no body), not a line-protocol string


def mutate(case: Any, kind: str, rnd: random.Random) -> Any:
    headers = case.headers
    headers[MARK] = kind
    if kind == "digits":
        case.query = {**(case.query or {}), **{k: rnd.choice(DIGITS) for k in TIME_KEYS if rnd.random() < 0.4}}
        if _json_body(case):
            case.body = _times(case.body, rnd)
    elif kind == "deep":
        headers[MARK] = f"deep:{rnd.choice([950, 5_000, 100_000])}:{rnd.choice(['body', 'time', 'value', 'point'])}"
    elif kind == "surrogate":  # applied to the bytes sent only: schemathesis itself cannot hold such strings
        headers[MARK] = f"surrogate:{rnd.randrange(1 << 30)}"
    elif kind == "control":
        for name in list(case.path_parameters or {}):
            case.path_parameters[name] = _strings(case.path_parameters[name], CONTROL, rnd)
        case.query = _strings(case.query or {"q": "x"}, CONTROL, rnd)
        if _json_body(case):
            case.body = _strings(case.body, CONTROL, rnd)
    elif kind == "host":
        headers["Host"] = rnd.choice(HOSTS)
    elif kind == "origin":
        if rnd.random() < 0.7:
            headers["Origin"] = rnd.choice(ORIGINS)
        else:
            headers["Sec-Fetch-Site"] = "cross-site"
    elif kind == "head":
        headers[MARK] = "head"
    return case


@schemathesis.hook
def flatmap_case(context: Any, case: Any) -> Any:
    return st.tuples(st.sampled_from(KINDS), st.randoms(use_true_random=False)).map(
        lambda drawn: mutate(case, drawn[0], drawn[1]))


def _deep(depth: int, where: str) -> bytes:
    nest = "[" * depth + "1" + "]" * depth
    return {
        "body": nest,
        "time": '{"time":' + nest + ',"v":1}',
        "value": '{"v":' + nest + "}",
        "point": '[{"v":1},' + nest + "]",
    }[where].encode()


LOG = os.environ.get("LIVEDATA_FUZZ_LOG")
"""When set, one line per request: ``method path mutation status`` (the test counts them per route)."""
_sent: dict[int, str] = {}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    mark = case.headers.pop(MARK, None) if case.headers else None
    kind = (mark or "unmarked").split(":")[0]
    path = case.operation.path
    method = case.method.upper()
    if mark == "head" and method == "GET":
        kwargs["method"] = "HEAD"
        method = "HEAD"
    elif mark is not None and mark.startswith("deep:"):
        _, depth, where = mark.split(":")
        kwargs["data"] = _deep(int(depth), where)  # built here: json.dumps would recurse as deep
        kwargs["json"] = None
        case.headers["Content-Type"] = "application/json"
    elif mark is not None and mark.startswith("surrogate:"):
        body = _strings(case.body if _json_body(case) else {"v": "x"}, SURROGATE, random.Random(mark))
        kwargs["data"] = json.dumps(body).encode()  # escaped: \ud800 is the only way to send one in JSON
        kwargs["json"] = None
        case.headers["Content-Type"] = "application/json"
    if method == "GET" and path == "/api/stream":
        case.query = {**(case.query or {}), "to": "now"}  # a finite stream: history, then complete
    if method == "GET" and path == "/" and "numSeries" in (case.query or {}):
        kwargs["method"] = "HEAD"  # the reference stream never ends; HEAD validates numSeries
    if method == "GET" and path == "/" and "numSeries" not in (case.query or {}):
        case.headers["Accept"] = "text/html"
    _sent[id(case)] = f"{case.method.upper()} {case.operation.path} {kwargs.get('method', case.method).upper()}:{kind}"


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    line = _sent.pop(id(case), f"{case.method.upper()} {case.operation.path} ?")
    if LOG:
        with open(LOG, "a") as f:
            f.write(f"{line} {response.status_code}\n")
