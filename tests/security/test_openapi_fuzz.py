"""Schemathesis against the served OpenAPI document: no 5xx, responses as documented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import LiveServer


async def test_openapi_document_is_served_and_valid(shared_server: LiveServer) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{shared_server.url}/api/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/health", "/api/channels", "/api/push/{channel}", "/api/stream", "/api/ws"} <= set(doc["paths"])


PRODUCERS = "^/(api/v2/write|write|ping|health|ready|v1/metrics)$"
"""The InfluxDB and OTLP routes: fuzzed in a run of their own, with fewer examples."""


def schemathesis(tmp_path: Path, *select: str, examples: str) -> None:
    server = LiveServer(["--max-channels", "100000"]).start()
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    try:
        proc = subprocess.run(
            [exe, "run", f"{server.url}/api/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance",  # equal-length columns are not expressible
             *select, "--max-examples", examples, "--seed", "1", "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "passed" in proc.stdout
        assert server.proc is not None and server.proc.poll() is None, "the server died"
    finally:
        server.stop()


@pytest.mark.timeout(600)  # any printable Unicode in names: more to generate, more pushes accepted
def test_schemathesis_finds_no_server_errors(tmp_path: Path) -> None:
    schemathesis(tmp_path, "--exclude-path-regex", f"^/(api/stream|api/ws)?$|{PRODUCERS}", "--exclude-path", "/metrics",
                 examples=os.environ.get("LIVEDATA_FUZZ_EXAMPLES", "1000"))


@pytest.mark.timeout(600)
def test_schemathesis_on_the_influx_and_otlp_routes(tmp_path: Path) -> None:
    schemathesis(tmp_path, "--include-path-regex", PRODUCERS,
                 examples=os.environ.get("LIVEDATA_FUZZ_EXAMPLES_PRODUCERS", "150"))
