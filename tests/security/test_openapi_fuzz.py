"""Schemathesis against the served OpenAPI document: no 5xx, responses as documented; and the
same document with hostile cases (``st_hooks.py``: Unicode digits, deep nesting, lone surrogates,
control characters, foreign Host and Origin, HEAD): no answer >= 500 on any route.

``make test`` runs a deterministic sample (``--seed 1``); ``make fuzz-long`` runs 10,000 hostile
cases per route (``-m long``). Every request of the hostile runs is logged by the hooks, so the
counts per route are asserted, not assumed.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, LiveServer

EXE = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
SAMPLE = int(os.environ.get("LIVEDATA_FUZZ_EXAMPLES", "100"))
"""Cases per route in ``make test``; the long run takes 10,000."""
ROUTES = {"GET /api/health", "GET /api/channels", "GET /api/sources", "POST /api/push/{channel}",
          "DELETE /api/channels/{channel}",
          "GET /api/stream", "GET /api/ws", "GET /", "GET /metrics", "GET /api/openapi.json",
          "POST /api/v2/write", "POST /write", "GET /ping", "GET /health", "GET /ready", "POST /v1/metrics"}
PRODUCERS = "^/(api/v2/write|write|ping|health|ready|v1/metrics)$"
"""The InfluxDB and OTLP routes: their conformance is checked in a run of their own, with fewer examples."""
KINDS = {"digits", "deep", "surrogate", "control", "host", "origin", "head"}


async def test_openapi_document_is_served_and_valid(shared_server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{shared_server.url}/api/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/health", "/api/channels", "/api/push/{channel}", "/api/stream", "/api/ws"} <= set(doc["paths"])
    assert {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops} == ROUTES


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_errors(tmp_path: Path) -> None:
    conformance(tmp_path, SAMPLE, "--exclude-path-regex", f"^/(api/stream|api/ws)?$|{PRODUCERS}")


@pytest.mark.timeout(900)
def test_schemathesis_on_the_influx_and_otlp_routes(tmp_path: Path) -> None:
    conformance(tmp_path, int(os.environ.get("LIVEDATA_FUZZ_EXAMPLES_PRODUCERS", "150")),
                "--include-path-regex", PRODUCERS)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_schemathesis_conformance_long(tmp_path: Path) -> None:
    conformance(tmp_path, 1000, "--exclude-path-regex", "^/(api/stream|api/ws)?$")


def conformance(tmp_path: Path, examples: int, *select: str) -> None:
    """Statuses, content types and bodies as documented (streams excluded: they do not end)."""
    server = LiveServer(["--max-channels", "100000"]).start()
    try:
        proc = subprocess.run(
            [EXE, "run", f"{server.url}/api/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance",  # equal-length columns are not expressible
             *select, "--exclude-path", "/metrics",
             "--max-examples", str(examples), "--seed", "1", "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=3600, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "passed" in proc.stdout
        assert server.proc is not None and server.proc.poll() is None, "the server died"
    finally:
        server.stop()


def hostile_run(tmp_path: Path, examples: int, seed: int) -> tuple[collections.Counter[str], float]:
    """Schemathesis with the hostile hooks, ``examples`` cases per route; (requests per route, seconds).
    Asserts: exit 0 (no answer >= 500), every mutation used on every route that can take it, no
    traceback in the server's log."""
    server = LiveServer(["--max-channels", "1000000"]).start()
    log = tmp_path / "requests.txt"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.st_hooks", "LIVEDATA_FUZZ_LOG": str(log),
           "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [EXE, "run", f"{server.url}/api/openapi.json", "--checks", "not_a_server_error",
             "--include-path-regex", "^/",  # every route, the one serving this document too
             "--phases", "fuzzing", "--max-examples", str(examples), "--seed", str(seed), "--no-shrink",
             "--suppress-health-check", "all", "--request-timeout", "20", "--generation-database", "none"],
            capture_output=True, text=True, timeout=7000, cwd=tmp_path, env=env,
        )
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
        assert server.proc is not None and server.proc.poll() is None, "the server died"
    finally:
        server.stop()
    text = server.log()
    assert "Traceback" not in text and "unhandled error" not in text, text
    per_route: collections.Counter[str] = collections.Counter()
    kinds: dict[str, set[str]] = collections.defaultdict(set)
    for line in log.read_text().splitlines():
        method, path, sent, status = line.split(" ")
        assert int(status) < 500, line
        per_route[f"{method} {path}"] += 1
        kinds[f"{method} {path}"].add(sent.split(":")[1])
    assert set(per_route) == ROUTES
    for route in ROUTES:
        assert KINDS - {"head"} <= kinds[route], (route, kinds[route])
        if route.startswith("GET"):
            assert "head" in kinds[route], route
    return per_route, took


@pytest.mark.timeout(900)
def test_schemathesis_hostile_sample(tmp_path: Path) -> None:
    per_route, took = hostile_run(tmp_path, SAMPLE, seed=1)
    assert min(per_route.values()) >= SAMPLE, per_route
    print(f"hostile sample: {sum(per_route.values())} requests in {took:.0f} s: {dict(per_route)}")


@pytest.mark.long
@pytest.mark.timeout(7200)
def test_schemathesis_hostile_10000_per_route(tmp_path: Path) -> None:
    per_route, took = hostile_run(tmp_path, 10_000, seed=2)
    print(f"hostile long run: {sum(per_route.values())} requests in {took:.0f} s: {dict(per_route)}")
    assert min(per_route.values()) >= 10_000, per_route
