"""``livedata serve --config``: a bad file is one line naming file and key, exit 2, nothing starts;
flags and LIVEDATA_* variables win over the file."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import LiveServer, free_port


def serve(args: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livedata.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("text", "key"), [
    ("port = 70000\n", "port"),
    ("[[sources.mqtt]]\nurl = 'mqtt://127.0.0.1:1883'\ntopics = ['a/#/b']\n", "sources.mqtt[0].topics[0]"),
    ("[[sources.mqtt]]\nurl = 'mqtt://127.0.0.1:1883'\ntopics = ['a']\nchannel = '{topic[x]}'\n",
     "sources.mqtt[0].channel"),
    ("[[sources.stream]]\nurl = 'gopher://x'\nchannel = 'c'\n", "sources.stream[0].url"),
    ("[sources]\nmqtt = 'yes'\n", "sources.mqtt"),
    ("retention = 'an hour'\n", "retention"),
])
def test_a_bad_config_file_exits_2_with_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "livedata.toml"
    path.write_text(text)
    port = free_port()
    r = serve(["--config", str(path), "--port", str(port)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"livedata: {path}: {key}: "), lines[0]
    assert r.stdout == ""
    with pytest.raises(OSError):  # nothing was started
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("port = 8080\n[[sources.mqtt]\n")
    r = serve(["--config", str(path)])
    assert r.returncode == 2 and f"{path}: not valid TOML" in r.stderr and "line 2" in r.stderr
    r = serve(["--config", str(tmp_path / "nope.toml")])
    assert r.returncode == 2 and "cannot read the config file" in r.stderr
    r = serve([], env={"LIVEDATA_CONFIG": str(tmp_path / "nope.toml")})
    assert r.returncode == 2 and "nope.toml" in r.stderr


def test_the_port_flag_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "livedata.toml"
    file_port, flag_port = free_port(), free_port()
    path.write_text(f'port = {file_port}\nmax_subscriptions = 3\nlog_level = "warning"\n')
    srv = LiveServer(["--config", str(path)], port=flag_port, env={"LIVEDATA_MAX_SUBSCRIPTIONS": "7"}).start()
    try:
        with urllib.request.urlopen(f"{srv.url}/api/health", timeout=5) as r:
            assert r.status == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{file_port}/api/health", timeout=1)
    finally:
        srv.stop()
