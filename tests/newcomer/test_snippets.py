"""Every code block of README.md and docs/ runs as copied, against a real ``livedata serve``.

See ``snippets.py`` for the markers a block that cannot run carries. The blocks run in a fresh
directory (with ``.venv`` linked, so ``.venv/bin/livedata`` works as in a checkout), with
``livedata`` on PATH and ``LIVEDATA_URL`` naming the test server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from livedata.config import FILE_KEYS, ConfigError
from tests.conftest import LiveServer
from tests.newcomer.snippets import RUNNABLE, Snippet, all_snippets, check_config, console_commands, localize

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
SNIPPETS = all_snippets()
RUN_TIMEOUT_S = 60
LONG_RUN_S = 4.0
ERROR_SIGNS = ("Traceback (most recent call last)", '{"error"', "command not found", "No such file")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    s = LiveServer().start()
    yield s
    s.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".venv").symlink_to(VENV)
    return tmp_path


def _env(server: LiveServer) -> dict[str, str]:
    env = {**os.environ, "LIVEDATA_URL": server.url}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("LIVEDATA_TOKEN", None)
    return env


def _command(snippet: Snippet, code: str, workdir: Path) -> list[str]:
    if snippet.lang == "python":
        script = workdir / "snippet.py"
        script.write_text(code)
        return [sys.executable, str(script)]
    if snippet.lang == "console":
        code = "\n".join(console_commands(code))
    return ["bash", "-e", "-c", code]


def _check_output(snippet: Snippet, out: str, err: str) -> None:
    for sign in ERROR_SIGNS:
        assert sign not in out + err, f"{snippet.id}: {sign!r} in the output:\n{out[-2000:]}\n{err[-2000:]}"


def test_every_block_is_found_and_markers_parse() -> None:
    assert len(SNIPPETS) >= 20, [s.id for s in SNIPPETS]
    readme = [s for s in SNIPPETS if s.path == "README.md"]
    assert any(s.lang == "python" for s in readme)


def test_config_blocks_are_checked_by_the_loader(tmp_path: Path) -> None:
    """A config example with a misspelt key or a bad value fails; a good one loads its sources."""
    good = check_config('port = 8081\n[[sources.stream]]\nurl = "http://127.0.0.1:9000/"\nchannel = "seed"\n', tmp_path)
    assert good.port == 8081 and len(good.sources) == 1
    for bad, key in (("prot = 8081\n", "prot"), ('port = "eighty"\n', "port"),
                     ('[[sources.mqtt]]\nurl = "mqtt://127.0.0.1:1883"\ntopic = ["a/#"]\n', "topic"),
                     ("[[outputs.influxdb_v2]]\nurls = []\n", "outputs")):
        with pytest.raises(ConfigError, match=key):
            check_config(bad, tmp_path)


def test_config_table_names_every_key() -> None:
    """docs/sources.md's table of config keys is the loader's list: none missing, none made up."""
    text = (ROOT / "docs/sources.md").read_text()
    table = text.split("| key | type | default | flag |", 1)[1].split("\n\n", 1)[0]
    documented: set[str] = set()
    for row in table.splitlines()[2:]:
        documented.update(re.findall(r"`([a-z0-9_]+)`", row.split("|")[1]))
    assert documented - {"sources"} == set(FILE_KEYS), (
        f"missing from the table: {sorted(set(FILE_KEYS) - documented)}; "
        f"not config keys: {sorted(documented - set(FILE_KEYS) - {'sources'})}")


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs_as_copied(snippet: Snippet, server: LiveServer, workdir: Path) -> None:
    if snippet.marker == "skip":
        assert snippet.reason, f"{snippet.id}: a skipped block needs a reason"
        return  # explicitly marked, with its reason, in the document itself
    assert snippet.lang in RUNNABLE, (
        f"{snippet.id}: a ```{snippet.lang or '(no language)'} block cannot be run: run it some other way, "
        "or mark it <!-- snippet: skip (why) --> on the line above its fence")
    if snippet.lang == "toml":
        try:
            check_config(snippet.code, workdir)
        except ConfigError as exc:
            pytest.fail(f"{snippet.id}: not a valid livedata config file (a file for another program needs "
                        f"<!-- snippet: skip (why) -->): {exc}")
        return
    code = localize(snippet.code, server.url)
    if snippet.lang == "json":
        try:
            json.loads(code)
        except json.JSONDecodeError:
            for line in code.splitlines():
                if line.strip():
                    json.loads(line)  # one document per line, or the test fails here
        return
    if snippet.lang == "console":
        assert console_commands(code), f"{snippet.id}: a console block without '$ ' commands"
    proc = subprocess.Popen(_command(snippet, code, workdir), cwd=workdir, env=_env(server), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    if snippet.marker == "long-running":
        try:
            out, err = proc.communicate(timeout=LONG_RUN_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        else:
            assert proc.returncode == 0, f"{snippet.id} exited with {proc.returncode}:\n{out[-2000:]}\n{err[-2000:]}"
        assert out.strip(), f"{snippet.id}: printed nothing in {LONG_RUN_S} s:\n{err[-2000:]}"
        _check_output(snippet, out, err)
        return
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{snippet.id}: still running after {RUN_TIMEOUT_S} s (mark it long-running?):\n{err[-2000:]}")
    assert proc.returncode == 0, f"{snippet.id} exited with {proc.returncode}:\n{out[-2000:]}\n{err[-2000:]}"
    _check_output(snippet, out, err)
