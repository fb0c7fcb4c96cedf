"""Fenced code blocks of README.md and docs/*.md, and how each one is run.

Every block is run as a reader would paste it, against a real ``livedata serve`` (only
``localhost:8080`` is changed to the test server's address). A block that cannot run says so
with a marker on the line right above its fence, which this extractor reads:

``<!-- snippet: skip (why) -->``
    Not run. The reason is required: a config file for another program (nginx, grafana.ini), a
    diagram, a synopsis, a transcript whose files are the reader's own, servers on fixed ports.

``<!-- snippet: long-running -->``
    Runs until stopped (a stream, ``livedata tail``): it is run for a few seconds, must print
    something and no error, and is then stopped with SIGTERM.

How a block runs depends on its language: ``bash``/``sh``/``shell`` with ``bash -e``;
``console`` runs its ``$ `` lines (the rest is example output); ``python`` with the project's
interpreter; ``json`` must parse (as one document, or one document per line); ``toml`` is a
livedata config file (``livedata serve --config FILE``) and must load with livedata's own loader,
so an unknown key or a bad value fails (a TOML file for another program, such as Telegraf's, needs
a ``skip`` marker). Any other language, or none, needs a ``skip`` marker: no block is left out
silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from livedata.config import Config

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("README.md", "docs/*.md")
RUNNABLE = {"bash", "sh", "shell", "console", "python", "json", "toml"}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<kind>[\w-]+)\s*(?P<rest>.*?)\s*-->\s*$")
MARKERS = ("skip", "long-running")


@dataclass(frozen=True)
class Snippet:
    path: str
    """Relative to the repository root."""
    line: int
    """The line of the opening fence (1-based)."""
    lang: str
    code: str
    marker: str | None = None
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


class MarkerError(ValueError):
    pass


def extract(path: Path) -> list[Snippet]:
    """The fenced blocks of one Markdown file, with the marker above each (if any)."""
    rel = str(path.relative_to(ROOT))
    lines = path.read_text().splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            text = lines[i]
            body.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
            i += 1
        i += 1  # the closing fence
        marker = reason = None
        prev = lines[start - 1] if start > 0 else ""
        mk = _MARKER.match(prev)
        if mk:
            marker = mk.group("kind")
            reason = mk.group("rest").strip().strip("()").strip(" -—:")
            if marker not in MARKERS:
                raise MarkerError(f"{rel}:{start}: unknown snippet marker {marker!r} (known: {', '.join(MARKERS)})")
            if marker == "skip" and not reason:
                raise MarkerError(f"{rel}:{start}: 'snippet: skip' needs a reason: <!-- snippet: skip (why) -->")
        out.append(Snippet(rel, start + 1, lang, "\n".join(body) + "\n", marker, reason or ""))
    return out


def all_snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            found.extend(extract(path))
    return found


def console_commands(code: str) -> list[str]:
    """The ``$ `` lines of a console block (with ``\\`` continuations), without the prompt."""
    commands: list[str] = []
    current: list[str] | None = None
    for line in code.splitlines():
        if current is not None:
            current.append(line)
            if not line.rstrip().endswith("\\"):
                commands.append("\n".join(current))
                current = None
            continue
        if line.startswith("$ "):
            cmd = line[2:]
            if cmd.rstrip().endswith("\\"):
                current = [cmd]
            else:
                commands.append(cmd)
    return commands


def localize(code: str, base_url: str) -> str:
    """Point a snippet at the test server instead of ``localhost:8080``."""
    host = base_url.split("://", 1)[1]
    return re.sub(r"(?<![\w.])(?:localhost|127\.0\.0\.1):8080\b", host, code)


def check_config(code: str, workdir: Path) -> Config:
    """Load a ``toml`` block as ``livedata serve --config livedata.toml`` would (no ``LIVEDATA_*``
    variables): an unknown key, a bad value or a bad source raises ``ConfigError``."""
    path = workdir / "livedata.toml"
    path.write_text(code)
    return Config.load(file=str(path), env={})
