"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/openapi.json``.

Streaming endpoints (``/``, ``/api/stream``, ``/api/ws``) are described too; their bodies are the
messages of docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

from livedata import __version__
from livedata.core.limits import MAX_CHANNEL_CHARS, MAX_FIELD_CHARS

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, as a sentence."},
        "line": {"type": "integer", "description": "The 1-based line or point the error is about."},
        "column": {"type": "integer", "description": "The 1-based column of a line-protocol error."},
        "field": {"type": "string"},
        "allowed": {"type": "array", "items": {"type": "string"}},
    },
}


def _influx_err(description: str) -> dict[str, Any]:
    schema = {"type": "object", "required": ["code", "message"],
              "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Names: printable Unicode (see livedata/core/names.py); a channel's levels between slashes are
# neither empty nor "." / "..".
_NAME_CHAR = "[^/\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]"
_LEVEL = f"{_NAME_CHAR}+"  # "." and ".." levels are refused too (400), but a lookahead slows fuzzing down
_CHANNEL = {
    "name": "channel", "in": "path", "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CHANNEL_CHARS,
               "pattern": f"^{_LEVEL}(?:/{_LEVEL})*$"},
    "description": "Channel name: printable Unicode, '/' between levels; percent-encode each level in the URL.",
}
_VALUE = {"type": ["number", "string", "boolean", "null"]}
_SOME = {"type": ["number", "string", "boolean"]}
_TIME = {"oneOf": [{"type": "number", "description": "epoch ms"},
                   {"type": "string", "description": "RFC 3339, or now-5m style"},
                   {"type": "null", "description": "absent or null: the server's time"}]}
_POINT = {"type": "object", "properties": {"time": _TIME}, "additionalProperties": _SOME, "minProperties": 1,
          "propertyNames": {"minLength": 1, "maxLength": MAX_FIELD_CHARS,
                            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"},
          "not": {"required": ["time"], "maxProperties": 1}}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "livedata", "version": __version__,
             "description": "Live streaming data for Grafana. Streaming messages: see docs/protocol.md."},
    "components": {"schemas": {"Error": _ERROR}},
    "paths": {
        "/api/health": {"get": {
            "operationId": "health", "summary": "Liveness, version and the broker's state (needs no token)",
            "responses": {"200": {"description": "Up; status 'degraded' while the broker is unavailable",
                                  "content": {"application/json": {"schema": {
                "type": "object", "required": ["status", "broker", "version", "uptime_s"],
                "properties": {"status": {"enum": ["ok", "degraded"]},
                               "broker": {"enum": ["ok", "unavailable"]},
                               "version": {"type": "string"},
                               "uptime_s": {"type": "number"}}}}}}}}},
        "/api/channels": {"get": {
            "operationId": "listChannels", "summary": "Channels with schema, last time and rate",
            "responses": {
                "200": {"description": "Channels", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["channels"],
                    "properties": {"channels": {"type": "array", "items": {
                        "type": "object", "required": ["name", "schema", "last_time", "points_per_s", "generated"],
                        "properties": {
                            "name": {"type": "string"},
                            "schema": {"type": "array", "items": {"type": "object"}},
                            "last_time": {"type": ["integer", "null"]},
                            "points_per_s": {"type": "number"},
                            "points": {"type": "integer"},
                            "generated": {"type": "boolean"},
                            "source": {"type": "string", "description": "the source writing the channel"},
                            "params": {"type": "object"}}}}}}}}},
                "401": _err("A read token is required"), "403": _err("The token may not read"),
                "503": _err("The broker is unavailable")}}},
        "/api/sources": {"get": {
            "operationId": "listSources", "summary": "MQTT and stream sources: state, last message, counts",
            "responses": {
                "200": {"description": "Sources (docs/sources.md)", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["sources"],
                    "properties": {"sources": {"type": "array", "items": {
                        "type": "object", "required": ["name", "kind", "url", "state", "messages", "error_count"],
                        "properties": {
                            "name": {"type": "string"}, "kind": {"enum": ["mqtt", "stream"]},
                            "url": {"type": "string"}, "state": {"type": "string"},
                            "since": {"type": ["integer", "null"]}, "last_message": {"type": ["integer", "null"]},
                            "messages": {"type": "integer"}, "points": {"type": "integer"},
                            "errors": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "error_count": {"type": "integer"}, "last_error": {"type": ["string", "null"]},
                            "channels": {"type": "integer"}, "server": {"type": "string"},
                            "here": {"type": "boolean"}, "channel": {"type": "string"},
                            "topics": {"type": "array", "items": {"type": "string"}}}}}}}}}},
                "401": _err("A read token is required"), "403": _err("The token may not read")}}},
        "/api/push/{channel}": {"post": {
            "operationId": "push", "summary": "Store points (JSON or Influx line protocol); all or nothing",
            "parameters": [_CHANNEL,
                           {"name": "precision", "in": "query", "required": False,
                            "schema": {"enum": ["ns", "us", "ms", "s"]}}],
            # Optional: an empty line-protocol body, like one of only comments, stores nothing (204).
            "requestBody": {"required": False, "content": {
                "application/json": {"schema": {"oneOf": [
                    _POINT,
                    {"type": "array", "items": _POINT, "minItems": 1},
                    {"type": "object", "description": "columnar: {\"time\": [...], \"temp\": [...]}, equal lengths",
                     "properties": {"time": {"type": "array", "items": _TIME}},
                     "additionalProperties": {"type": "array", "items": _VALUE, "contains": _SOME}}]}},
                "text/plain": {"schema": {"type": "string", "description": "Influx line protocol"}}}},
            "responses": {
                "204": {"description": "Every point is stored"},
                "400": _err("Bad input: nothing of the batch was stored"),
                "401": _err("A write token is required"), "403": _err("The token may not write"),
                "413": _err("Body or batch too large"), "415": _err("Unsupported Content-Type"),
                "429": _err("Too many channels"), "503": _err("The broker is unavailable")}}},
        "/api/channels/{channel}": {"delete": {
            "operationId": "deleteChannel", "summary": "Remove a channel and its history",
            "parameters": [_CHANNEL],
            "responses": {"204": {"description": "Deleted"}, "404": _err("No such channel"),
                          "400": _err("Invalid channel name"),
                          "401": _err("A write token is required"), "403": _err("The token may not write"),
                          "503": _err("The broker is unavailable")}}},
        "/api/stream": {"get": {
            "operationId": "stream", "summary": "One subscription as NDJSON or SSE (see docs/protocol.md)",
            "parameters": [
                {"name": k, "in": "query", "required": k == "channel", "schema": {"type": "string"}}
                for k in ("channel", "id", "from", "to", "since", "fields", "interval")],
            "responses": {"200": {"description": "A stream of server messages (HEAD: its headers only)",
                                  "content": {"application/x-ndjson": {}, "text/event-stream": {}}},
                          "400": _err("Bad subscription"), "401": _err("A read token is required"),
                          "403": _err("The token may not read"), "429": _err("Too many connections"),
                          "503": _err("The broker is unavailable")}}},
        "/api/ws": {"get": {"operationId": "websocket", "summary": "WebSocket protocol (see docs/protocol.md)",
                            "responses": {"101": {"description": "Switching protocols"},
                                          "400": _err("Not a WebSocket upgrade"),
                                          "429": _err("Too many connections")}}},
        "/": {"get": {
            "operationId": "reference", "summary": "The original reference stream, or the live view page",
            "parameters": [{"name": "numSeries", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": {"description": "NDJSON lines every tick (HEAD: headers only), or the HTML page",
                                  "content": {"application/x-ndjson": {}, "text/html": {}}},
                          "400": _err("Bad numSeries"), "401": _err("A read token is required (the stream)"),
                          "403": _err("The token may not read"), "429": _err("Too many connections")}}},
        "/metrics": {"get": {"operationId": "metrics",
                             "summary": "Prometheus metrics (a read token or --metrics-token when tokens are set)",
                             "responses": {"200": {"description": "Text exposition format",
                                                   "content": {"text/plain": {}}},
                                           "401": _err("A token is required"),
                                           "403": _err("The token may not read metrics")}}},
        # Real producers: InfluxDB's write API and OTLP (docs/ingest.md).
        "/api/v2/write": {"post": {
            "operationId": "influxWriteV2", "summary": "InfluxDB 2 write: line protocol into <bucket>/<measurement>",
            "parameters": [{"name": "bucket", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "org", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "precision", "in": "query", "required": False,
                            "schema": {"enum": ["ns", "us", "ms", "s"]}}],
            "requestBody": {"required": False, "content": {"text/plain": {"schema": {"type": "string"}}}},
            "responses": {"204": {"description": "Every point is stored"}, **{
                code: _influx_err(what) for code, what in (
                    ("400", "Bad line protocol or parameters"), ("401", "A write token is required"),
                    ("403", "The token may not write"), ("413", "Too large"), ("415", "Unsupported encoding"),
                    ("422", "A field type conflict, or the channel limit"), ("503", "The broker is unavailable"))}}}},
        "/write": {"post": {
            "operationId": "influxWriteV1", "summary": "InfluxDB 1.x write: line protocol into <db>/<measurement>",
            "parameters": [{"name": "db", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "rp", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "precision", "in": "query", "required": False,
                            "schema": {"enum": ["n", "ns", "u", "us", "µ", "ms", "s", "m", "h"]}}],
            "requestBody": {"required": False, "content": {"text/plain": {"schema": {"type": "string"}}}},
            "responses": {"204": {"description": "Every point is stored"}, **{
                code: _err(what) for code, what in (
                    ("400", "Bad line protocol or parameters, a field type conflict, the channel limit"),
                    ("401", "A write token is required"), ("403", "The token may not write"),
                    ("413", "Too large"), ("415", "Unsupported encoding"), ("503", "The broker is unavailable"))}}}},
        "/ping": {"get": {"operationId": "influxPing", "summary": "InfluxDB readiness (204; ?verbose=true: 200)",
                          "responses": {"204": {"description": "Ready"}, "200": {"description": "Ready, verbose"}}}},
        "/health": {"get": {"operationId": "influxHealth", "summary": "InfluxDB 2 health (livedata's: /api/health)",
                            "responses": {"200": {"description": "pass", "content": {"application/json": {}}}}}},
        "/ready": {"get": {"operationId": "influxReady", "summary": "InfluxDB 2 readiness",
                           "responses": {"200": {"description": "ready", "content": {"application/json": {}}}}}},
        "/v1/metrics": {"post": {
            "operationId": "otlpMetrics", "summary": "OTLP/HTTP metrics into otel/<metric name>",
            "requestBody": {"required": True, "content": {
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "ExportMetricsServiceResponse"}, **{
                code: {"description": what} for code, what in (
                    ("400", "Not OTLP, or a name that is not allowed (google.rpc.Status)"),
                    ("401", "A write token is required"), ("403", "The token may not write"), ("413", "Too large"),
                    ("415", "Not protobuf or JSON"), ("503", "The broker is unavailable"))}}}},
    },
}

_REFUSED = {
    "400": _err("Invalid Host header"),
    "403": _err("A host name or browser origin this server does not answer (docs/security.md)"),
}
for _path in SPEC["paths"].values():
    for _op in _path.values():
        for _code, _answer in _REFUSED.items():
            _op["responses"].setdefault(_code, _answer)
SPEC["paths"]["/api/openapi.json"] = {"get": {
    "operationId": "openapi", "summary": "This document (a read token when read tokens are set)",
    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
                  "401": _err("A read token is required"), "403": _err("The token may not read"),
                  **_REFUSED}}}
