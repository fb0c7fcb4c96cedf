"""The commands a new user reaches for: -V, channels, delete, shell completion."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from livedata import __version__
from tests.conftest import LiveServer

LIVEDATA = [sys.executable, "-m", "livedata.cli"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LIVEDATA, *args], input=stdin, capture_output=True, text=True, timeout=60,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


def test_version() -> None:
    assert run("-V").stdout.strip() == f"livedata {__version__}"


def test_channels_table_and_json_and_delete(server: LiveServer) -> None:
    assert run("push", "newb/room", "-", "--url", server.url, stdin='{"temp": 20}\n{"temp": 21}\n').returncode == 0
    table = run("channels", "--url", server.url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["CHANNEL", "KIND", "FIELDS", "POINTS", "RATE", "LAST", "POINT"]
    room = next(line for line in lines if line.startswith("newb/room"))
    assert room.split()[:4] == ["newb/room", "pushed", "temp", "2"]
    assert any(line.split()[:2] == ["random-walk", "generated"] for line in lines)
    listed = json.loads(run("channels", "--json", "--url", server.url).stdout)
    assert {c["name"] for c in listed["channels"]} >= {"newb/room", "random-walk", "sine"}
    gone = run("delete", "newb/room", "--url", server.url)
    assert gone.returncode == 0 and gone.stdout.strip() == "deleted newb/room", gone.stderr
    assert "newb/room" not in run("channels", "--url", server.url).stdout


def test_bash_completion_loads_and_completes_commands() -> None:
    script = run("completion", "bash").stdout
    probe = (
        f"{script}\n"
        "complete -p livedata\n"
        "COMP_WORDS=(livedata ch); COMP_CWORD=1; COMP_LINE='livedata ch'; COMP_POINT=${#COMP_LINE}\n"
        "fn=$(complete -p livedata | sed -E 's/.*-F ([^ ]+).*/\\1/'); $fn livedata ch livedata\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    r = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout and "channels" in r.stdout.split(), r.stdout


def test_zsh_completion_is_a_compdef() -> None:
    script = run("completion", "zsh").stdout
    assert script.startswith("#compdef livedata") and "channels" in script and "--trusted-proxies" in script
