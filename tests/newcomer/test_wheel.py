"""``pip install`` from a checkout: the wheel builds in a fresh venv and carries the live view."""

from __future__ import annotations

import subprocess
import venv
import zipfile
from pathlib import Path

from tests.browser.conftest import VIEWER_JS, require_built
from tests.conftest import ROOT


def test_wheel_builds_in_a_fresh_venv_with_the_live_view(tmp_path: Path) -> None:
    require_built(VIEWER_JS)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    out = tmp_path / "wheels"
    r = subprocess.run([str(python), "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = out.glob("livedata-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("livedata/server/static/index.html", "livedata/server/static/dist/viewer.js",
                 "livedata/server/static/dist/viewer.css", "livedata/server/static/dist/uPlot.min.css",
                 "livedata/py.typed", "livedata/cli.py"):
        assert path in names, f"{path} is not in {wheel.name}"
    assert not any(n.startswith(("tests/", "benchmarks/", "grafana-plugin/")) for n in names)
    # The wheel installs and its command runs (dependencies from the index, as `pip install .` does).
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(env_dir / "bin" / "livedata"), "-V"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().startswith("livedata "), r
    r = subprocess.run([str(python), "-c", "import livedata.server.app as a; print(a.STATIC)"],
                       capture_output=True, text=True, timeout=60)
    static = Path(r.stdout.strip())
    assert (static / "dist" / "viewer.js").is_file() and str(env_dir) in str(static), static
