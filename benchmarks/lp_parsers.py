"""livedata's line-protocol parser beside the ``line-protocol-parser`` C extension (PyPI 2.0.1).

The numbers behind the decision in docs/ingest.md ("Why livedata has its own parser"). The
package is not a dependency: install it into a scratch virtualenv with livedata's ``src`` on
``PYTHONPATH`` and run ``python -m benchmarks.lp_parsers``. It prints

- lines/s parsing one by one (``parse_line``) and, for livedata, into its columnar tables;
- the same into livedata's tables, the package's dicts turned into columns in Python (what
  adopting it would mean end to end);
- agreement with the corpus of InfluxData's parser tests (tests/corpus/lineprotocol.json);
- whether ``parse_line`` on bytes with invalid UTF-8 in a string value survives (it runs in a
  child process, since it may take the interpreter down).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livedata.core import lineprotocol as lp

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "lineprotocol.json"

try:
    import line_protocol_parser as lpp  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - the package is optional
    lpp = None

BASE = 1_700_000_000_000_000_000
BODIES = {
    "bench (1 field)": "".join(f"m,host=h{i % 10} value={(i * 7) % 1000 / 10} {BASE + i * 1_000_000}\n"
                               for i in range(5000)),
    "3 fields": "".join(f"m,host=h{i % 10} a={i % 97}.5,b={i}i,c=t {BASE + i * 1_000_000}\n" for i in range(5000)),
    "telegraf cpu (6 fields)": "".join(
        f"cpu,cpu=cpu{i % 4},host=server01 usage_guest=0,usage_idle=97.{i % 10},usage_iowait=0.1,"
        f"usage_system=1.0{i % 7},usage_user=1.{i % 9},usage_irq=0i {BASE + (i // 4) * 10**9}\n" for i in range(5000)),
    "strings": "".join(f'syslog,host=a,severity=info msg="hello world {i}",code={i}i {BASE + i * 1_000_000}\n'
                       for i in range(5000)),
}


def best(fn: Callable[[], Any], runs: int = 7) -> float:
    out = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def lpp_tables(text: str) -> dict[str, dict[tuple[Any, ...], list[Any]]]:
    """The package's points turned into per-measurement columns, as livedata's ingest needs them."""
    tables: dict[str, dict[tuple[Any, ...], list[Any]]] = {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        p = lpp.parse_line(line)
        cols = tables.setdefault(p["measurement"], {})
        tags = tuple(sorted(p["tags"].items()))
        cols.setdefault((tags, "time"), []).append(p["time"])
        for k, v in p["fields"].items():
            cols.setdefault((tags, k), []).append(v)
    return tables


def speed() -> None:
    print("| body | livedata parse (points) | livedata tables | line-protocol-parser parse_line | lpp + tables |")
    print("|---|---:|---:|---:|---:|")
    for name, text in BODIES.items():
        n = text.count("\n")
        ours_points = n / best(lambda text=text: lp.parse(text))
        ours_tables = n / best(lambda text=text: lp.parse_tables(text))
        if lpp is not None:
            lines = text.splitlines()
            theirs = n / best(lambda lines=lines: [lpp.parse_line(x) for x in lines])
            theirs_tables = n / best(lambda text=text: lpp_tables(text))
            extra = f"{theirs:,.0f} | {theirs_tables:,.0f}"
        else:
            extra = "n/a | n/a"
        print(f"| {name} | {ours_points:,.0f} | {ours_tables:,.0f} | {extra} |")


def agreement() -> None:
    if lpp is None:
        print("line-protocol-parser is not installed: no agreement figures")
        return
    cases = json.loads(CORPUS.read_text())["cases"]  # data, not an import of the tests
    agree = 0
    misses: list[str] = []
    for case in cases:
        text_in = case["input"]
        raw = base64.b64decode(text_in["base64"]) if isinstance(text_in, dict) else text_in.encode()
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            continue  # it would be fed decoded text only (bytes can crash it)
        try:
            got: Any = [lpp.parse_line(line) for line in text.split("\n") if line.strip(" ")
                        and not line.lstrip(" ").startswith("#")]
        except Exception:
            got = None
        want = case["expect"]
        accepted = "points" in want
        ok = (got is None) == (not accepted)
        if ok and accepted and got is not None:
            ok = [(p["measurement"], p["tags"], sorted(p["fields"])) for p in got] == [
                (p["measurement"], p["tags"], sorted(f[0] for f in p["fields"])) for p in want["points"]]
        agree += ok
        if not ok and len(misses) < 8:
            misses.append(repr(text[:60]))
    print(f"line-protocol-parser agrees with the corpus on {agree} of {len(cases)} cases; e.g. not on: {misses}")


CRASH = "import line_protocol_parser as l; l.parse_line(b'm s=\"\\xff\\xfe\" 1'); print('survived')"


def crash() -> None:
    if lpp is None:
        return
    proc = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True)
    print(f"parse_line on bytes with invalid UTF-8 in a string value: exit code {proc.returncode} "
          f"({'survived' if proc.returncode == 0 else 'the interpreter died'}) {proc.stderr.strip()[-200:]}")


if __name__ == "__main__":
    speed()
    agreement()
    crash()
