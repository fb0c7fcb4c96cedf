"""``livedata push`` and ``livedata tail`` end to end, as subprocesses against a real server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livedata.cli_client import csv_value, detect_format, format_frame, iso_ms
from livedata.client import Field, Frame
from tests.conftest import LiveServer

LIVEDATA = [sys.executable, "-m", "livedata.cli"]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(*args: str, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*LIVEDATA, *args], input=stdin, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


def points(server: LiveServer, channel: str) -> list[tuple[int, dict[str, Any]]]:
    url = f"{server.url}/api/stream?channel={channel}&from=0&to={now_ms()}"
    keys: list[str] = []
    out: list[tuple[int, dict[str, Any]]] = []
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r:
            m = json.loads(line)
            if m["type"] != "data":
                continue
            if "schema" in m["frame"]:
                keys = [f["name"] for f in m["frame"]["schema"]["fields"][1:]]
            values = m["frame"]["data"]["values"]
            for i, t in enumerate(values[0]):
                out.append((t, {k: values[j + 1][i] for j, k in enumerate(keys) if values[j + 1][i] is not None}))
    return out


SUMMARY = re.compile(r"^pushed (\d+) points in [0-9.]+ s \(([0-9,]+) points/s\), (\d+) errors?$", re.M)


def summary(out: str) -> tuple[int, int]:
    m = SUMMARY.search(out)
    assert m, out
    return int(m.group(1)), int(m.group(3))


def test_push_csv_file(server: LiveServer, tmp_path: Path) -> None:
    t0 = now_ms() - 60_000
    path = tmp_path / "kitchen.csv"
    lines = ["time,temp,door,ok"] + [f"{t0 + i * 10},{20 + i / 10},{'open' if i % 2 else 'closed'},true"
                                     for i in range(1234)]
    lines.append(f"{iso_ms(t0 + 20_000)},1,x,false")
    path.write_text("\n".join(lines) + "\n")
    r = run("push", "cli/csv", str(path), "--url", server.url, "--batch", "500")
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout) == (1235, 0)
    got = points(server, "cli/csv")
    assert len(got) == 1235
    assert got[0] == (t0, {"temp": 20, "door": "closed", "ok": True})
    assert got[-1] == (t0 + 20_000, {"temp": 1, "door": "x", "ok": False})


def test_push_ndjson_from_stdin_with_precision(server: LiveServer) -> None:
    t0 = now_ms() // 1000 * 1000 - 60_000
    body = "".join(json.dumps({"time": t0 // 1000 + i, "v": i}) + "\n" for i in range(10)).encode()
    r = run("push", "cli/ndjson", "-", "--url", server.url, "--precision", "s", stdin=body)
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout) == (10, 0)
    assert [t for t, _ in points(server, "cli/ndjson")] == [t0 + 1000 * i for i in range(10)]


def test_push_line_protocol_auto_detected(server: LiveServer, tmp_path: Path) -> None:
    t0 = now_ms() - 60_000
    path = tmp_path / "metrics.lp"
    path.write_text("# from telegraf\n" + "".join(f"cpu,host=h{i % 2} usage={i}.5 {(t0 + i) * 1_000_000}\n"
                                                  for i in range(100)))
    r = run("push", "cli/lp", str(path), "--url", server.url, "--batch", "30")
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout) == (100, 0)
    got = points(server, "cli/lp/cpu")
    assert len(got) == 100 and got[0] == (t0, {'usage {host="h0"}': 0.5})


def test_push_errors_name_the_line_and_exit_1(server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    t0 = now_ms() - 60_000
    rows = [json.dumps({"time": t0 + i, "v": i}) for i in range(6)]
    rows[4] = json.dumps({"time": t0 + 4, "v": "four"})  # rejects its batch (lines 4-6)
    rows.insert(1, "{not json")  # skipped locally
    path.write_text("\n".join(rows) + "\n")
    r = run("push", "cli/bad", str(path), "--url", server.url, "--batch", "3")
    assert r.returncode == 1
    assert f"{path}:2: malformed JSON" in r.stderr
    assert f"{path}:6: field 'v' is a string here but a number before" in r.stderr
    assert summary(r.stdout) == (3, 2)
    assert [v["v"] for _, v in points(server, "cli/bad")] == [0, 1, 2]


def test_push_to_unreachable_server_fails_fast_enough(tmp_path: Path) -> None:
    from tests.conftest import free_port

    path = tmp_path / "a.csv"
    path.write_text("v\n1\n")
    t = time.monotonic()
    r = run("push", "x", str(path), "--url", f"http://127.0.0.1:{free_port()}", "--retry", "0.5")
    assert r.returncode == 1 and "connection refused" in r.stderr and "livedata serve" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert time.monotonic() - t < 5  # no retries before the first answer: a server that is not there is said


def test_streaming_stdin_is_pushed_as_it_comes(server: LiveServer) -> None:
    """``my_sensor | livedata push sensors/kitchen -``: each line goes out without waiting for a batch."""
    p = subprocess.Popen([*LIVEDATA, "push", "cli/sensor", "-", "--url", server.url],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin is not None
    try:
        for i in range(3):
            p.stdin.write(json.dumps({"temp": 20 + i}).encode() + b"\n")
            p.stdin.flush()
            deadline = time.monotonic() + 5
            while len(points(server, "cli/sensor")) < i + 1:
                assert time.monotonic() < deadline, "the line was not pushed while stdin stayed open"
                time.sleep(0.05)
        out, err = p.communicate(timeout=10)  # closes stdin: the end of input
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert summary(out.decode()) == (3, 0)
    assert [v["temp"] for _, v in points(server, "cli/sensor")] == [20, 21, 22]


def test_follow_a_growing_file(server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "grow.csv"
    path.write_text("temp\n1\n")
    p = subprocess.Popen([*LIVEDATA, "push", "cli/follow", str(path), "--url", server.url, "--follow"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while len(points(server, "cli/follow")) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with path.open("a") as f:
            f.write("2\n3\n")
        while len(points(server, "cli/follow")) < 3:
            assert time.monotonic() < deadline + 5
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert summary(out.decode()) == (3, 0)


def test_tail_prints_a_point_pushed_meanwhile(server: LiveServer) -> None:
    t0 = now_ms() - 5_000
    run("push", "cli/tail", "-", "--url", server.url, stdin=json.dumps({"time": t0, "temp": 1.5}).encode())
    p = subprocess.Popen([*LIVEDATA, "tail", "cli/tail", "--url", server.url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.stdout is not None
    try:
        first = p.stdout.readline().decode()
        assert first == f"{iso_ms(t0)} temp=1.5\n"  # from the last minute
        r = run("push", "cli/tail", "-", "--url", server.url,
                stdin=json.dumps({"time": t0 + 1, "temp": 2, "note": "hi"}).encode())
        assert r.returncode == 0
        second = p.stdout.readline().decode()
        assert second == f'{iso_ms(t0 + 1)} temp=2 note="hi"\n'
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
    assert p.returncode == 0


def test_tail_unknown_param_is_an_error(server: LiveServer) -> None:
    r = run("tail", "random-walk", "--param", "colour=red", "--url", server.url, timeout=15)
    assert r.returncode == 1 and "unknown param 'colour'" in r.stderr


# --- pure helpers ------------------------------------------------------------------------------------


def test_detect_format() -> None:
    assert detect_format('{"temp": 1}') == "ndjson"
    assert detect_format("[{}]") == "ndjson"
    assert detect_format("cpu,host=a usage=1 1") == "lp"
    assert detect_format("weather temp=1") == "lp"
    assert detect_format("# comment") == "lp"
    assert detect_format("time,temp,hum") == "csv"
    assert detect_format("temp") == "csv"


def test_csv_values() -> None:
    assert [csv_value(v) for v in ["1", "-2", "1.5", "1e3", "true", "FALSE", "", "abc", "2024-01-01T00:00:00Z"]] == [
        1, -2, 1.5, 1000.0, True, False, None, "abc", "2024-01-01T00:00:00Z"]


def test_format_frame() -> None:
    f = Frame("c", "s1", "p", True, [0, 1, 5], {"a": [1.5, None, 2], "b": ["x", True, None]},
              [Field("a", "number"), Field("b", "string")], newest_before=2)
    assert format_frame(f) == ('1970-01-01T00:00:00.000Z a=1.5 b="x" (late)\n'
                               '1970-01-01T00:00:00.001Z b=true (late)\n1970-01-01T00:00:00.005Z a=2\n')
    assert format_frame(f, as_json=True).splitlines()[0] == '{"time":0,"a":1.5,"b":"x","late":true}'
    assert "late" not in format_frame(f, as_json=True).splitlines()[2]


def test_tail_max_points_prints_buckets_of_a_finite_range(server: LiveServer) -> None:
    t0 = (now_ms() - 600_000) // 60_000 * 60_000
    body = "".join(json.dumps({"time": t0 + 10 * i, "v": i % 100}) + "\n" for i in range(6000))
    pushed = run("push", "cli/buckets", "-", "--url", server.url, stdin=body.encode())
    assert pushed.returncode == 0, pushed.stderr
    r = run("tail", "cli/buckets", "--url", server.url, "--from", str(t0), "--to", str(t0 + 59_999),
            "--max-points", "6", "--json", timeout=20)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    # 60 s / 6 = 10 s buckets, two rows each: the min and the max of every bucket, in time order
    assert [p["time"] for p in rows] == [t0 + k * 5000 for k in range(12)]
    assert all({p["v"] for p in rows[k:k + 2]} == {0, 99} for k in range(0, 12, 2))
    bad = run("tail", "cli/buckets", "--url", server.url, "--max-points", "0", timeout=20)
    assert bad.returncode == 1 and "max_points must be 1..100000" in bad.stderr
