"""InfluxData's line-protocol test cases end to end: push each to a real server, read it back.

Every case of tests/corpus goes to its own channel base (``l<id>``, ``f<id>`` for the fuzz file)
over ``POST /api/push``. A case the parser must reject is a ``400`` naming a line; a case it
accepts is a ``204`` and every field of every point comes back over ``/api/stream`` at its time,
under its channel ``l<id>/<measurement>``, with its tags as labels, with the value and type it
was sent with. Two rules of livedata's own come on top of the grammar, and the expectation
applies them: a measurement must make a valid channel name (docs/ingest.md, "Measurement
names"), and a field keeps one type.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from livedata.core.frames import field_key
from livedata.core.names import channel_problem
from tests.conftest import KEEP_OLD, LiveServer
from tests.corpus import body, label, load, typed

FAR = 9_300_000_000_000  # ms: past both ends of what a 64-bit nanosecond timestamp can say


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer(["--max-channels", "100000", "--max-subscriptions", "100000", *KEEP_OLD]).start()
    yield s
    s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Triple = tuple[Any, str, tuple[str, Any]]  # (time ms or "now", field key, (type, value))


def expectation(case: dict[str, Any], base: str) -> tuple[int, dict[str, Counter[Triple]]]:
    """The status the server must answer and, for a 204, what each channel must then hold."""
    exp = case["expect"]
    if "error" in exp:
        return 400, {}
    channels: dict[str, Counter[Triple]] = {}
    kinds: dict[tuple[str, str], str] = {}
    spelled: dict[tuple[str, str], tuple[str, tuple[tuple[str, str], ...]]] = {}
    for p in exp["points"]:
        channel = f"{base}/{p['measurement']}"
        if channel_problem(channel):
            return 400, {}
        tags = tuple(sorted(p["tags"].items()))
        t = "now" if p["time_ns"] is None else p["time_ns"] // 1_000_000
        for k, kind, v in p["fields"]:
            key = field_key(k, dict(tags))
            group = {"float": "number", "int": "number", "uint": "number"}.get(kind, kind)
            if kinds.setdefault((channel, key), group) != group:
                return 400, {}  # a field keeps one type
            if spelled.setdefault((channel, key), (k, tags)) != (k, tags):
                return 400, {}  # 'f {a="b"}' spelled out as a key and as a field with tags
            channels.setdefault(channel, Counter())[(t, key, typed(kind, v))] += 1
    return 204, channels


async def stored(s: aiohttp.ClientSession, url: str, channel: str, expect: int) -> Counter[Triple]:
    """The channel's points: history from the start of time, then live, until ``expect`` points
    (field values) came or 10 s passed. (A bounded ``to`` would not do: some cases are in 2262.)"""
    out: Counter[Triple] = Counter()
    params = {"channel": channel, "from": str(-FAR)}
    with contextlib.suppress(TimeoutError):
        await read(s, f"{url}/api/stream", params, out, expect)
    return out


async def read(s: aiohttp.ClientSession, url: str, params: dict[str, str], out: Counter[Triple], expect: int) -> None:
    keys: list[str] = []
    async with s.get(url, params=params, timeout=aiohttp.ClientTimeout(total=10)) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if not line.strip():
                continue
            m = json.loads(line)
            if m["type"] != "data":
                continue
            frame = m["frame"]
            if "schema" in frame:
                keys = [f["name"] for f in frame["schema"]["fields"][1:]]
            values = frame["data"]["values"]
            for i, t in enumerate(values[0]):
                for j, key in enumerate(keys):
                    v = values[j + 1][i] if j + 1 < len(values) else None
                    if v is not None:
                        out[(t, key, (type(v).__name__, v))] += 1
            if sum(out.values()) >= expect:
                break


async def check(s: aiohttp.ClientSession, url: str, case: dict[str, Any], prefix: str) -> str | None:
    """None when the server does what the case expects, else what went wrong."""
    base = f"{prefix}{case['id']}"
    status, channels = expectation(case, base)
    t0 = time.time_ns() // 1_000_000
    async with s.post(f"{url}/api/push/{base}", params={"precision": case["precision"]}, data=body(case),
                      headers={"Content-Type": "text/plain; charset=utf-8"}) as r:
        got = r.status
        answer = await r.text()
    t1 = time.time_ns() // 1_000_000
    if got != status:
        return f"{label(case)}: status {got} ({answer[:200]}), expected {status}"
    if status == 400:
        error = json.loads(answer)
        if "line" not in error and "measurement" not in error["error"] and "field" not in error["error"]:
            return f"{label(case)}: 400 without a line: {answer[:200]}"
        return None
    for channel, want in channels.items():
        have = await stored(s, url, channel, sum(want.values()))
        if any(t == "now" for t, _, _ in want):
            # Points without a time got the server's clock while the push was being handled.
            now_times = sorted({t for t, _, _ in have} - {t for t, _, _ in want if t != "now"})
            if not all(t0 <= t <= t1 for t in now_times):
                return f"{label(case)}: untimed points at {now_times}, pushed between {t0} and {t1}"
            have = Counter({("now" if t in now_times else t, k, v): n for (t, k, v), n in have.items()})
        if have != want:
            return f"{label(case)}: {channel} holds {dict(have)}, expected {dict(want)}"
    return None


async def run_file(name: str, url: str) -> tuple[int, list[str]]:
    cases = load(name)
    failures: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as s:
        sem = asyncio.Semaphore(8)

        async def one(case: dict[str, Any]) -> None:
            async with sem:
                problem = await check(s, url, case, "f" if "fuzz" in name else "l")
            if problem is not None:
                failures.append(problem)

        await asyncio.gather(*(one(c) for c in cases))
    return len(cases), failures


async def test_every_corpus_case_end_to_end(server: LiveServer) -> None:
    total, failures = await run_file("lineprotocol.json", server.url)
    assert total > 400
    assert not failures, f"{len(failures)} of {total} cases disagree:\n" + "\n".join(failures[:20])


async def test_every_fuzz_corpus_case_end_to_end(server: LiveServer) -> None:
    total, failures = await run_file("lineprotocol-fuzz.json", server.url)
    assert total > 6000
    assert not failures, f"{len(failures)} of {total} cases disagree:\n" + "\n".join(failures[:20])


async def test_server_kept_serving(server: LiveServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/api/health") as r:
        assert r.status == 200
    assert server.proc is not None and server.proc.poll() is None
