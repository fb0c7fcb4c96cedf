"""py-spy around a running server: record collapsed stacks, then summarise the hot spots.

``start_record`` runs ``py-spy record --format raw`` in the background for the measurement window;
``summarise`` turns the collapsed stacks into the top functions by own time and by inclusive time.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

_RUNNING: list[tuple[subprocess.Popen[bytes], Path]] = []


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_record(pid: int, stem: str, seconds: float, rate: int = 250) -> None:
    exe = py_spy()
    if exe is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return
    out = Path(f"{stem}.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _RUNNING.append((proc, out))


def finish(timeout: float = 60.0) -> list[Path]:
    """Wait for every recording; write ``<stem>.md`` summaries next to them; return those paths."""
    done = []
    while _RUNNING:
        proc, out = _RUNNING.pop()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            md = out.with_suffix(".md")
            md.write_text(summarise(out))
            done.append(md)
    return done


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    short = "/".join(Path(path).parts[-2:]) if path else where
    return f"{name} ({short})"


ACCOUNTING = ("livedata/core/budget.py", "livedata/core/sizes.py")
"""The memory budget's own code: its share of the samples is what the accounting costs."""


def _file_of(frame: str) -> str:
    where = frame.partition(" (")[2].rstrip(")")
    path = where.rpartition(":")[0]
    parts = Path(path).parts
    return "/".join(parts[parts.index("livedata"):]) if "livedata" in parts else "/".join(parts[-2:])


def summarise(path: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    accounting = 0
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        mine = {_file_of(f) for f in stack.split(";") if f}
        for f in mine:
            files[f] += n
        accounting += n if any(a in mine for a in ACCOUNTING) else 0
    if not total:
        return f"# {path.stem}\n\nno samples\n"
    lines = [f"# py-spy: {path.stem}", "", f"{total} samples (idle included; `--nonblocking`).", "",
             "## own time", "", "| % | function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in own.most_common(top)]
    lines += ["", "## inclusive time", "", "| % | function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in incl.most_common(top)]
    lines += ["", "## inclusive time by file", "", "| % | file |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in files.most_common(top)]
    lines += ["", f"Memory budget accounting ({', '.join(ACCOUNTING)}, inclusive): "
              f"{100 * accounting / total:.2f} % of the samples."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
