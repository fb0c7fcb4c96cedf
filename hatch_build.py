"""Wheel build hook: a wheel without the live view's bundle would serve a blank page at ``/``.

The bundle (src/livedata/server/static/dist/) is built by ``make plugin`` and is not in git; the
wheel takes it as an artifact (pyproject.toml). A standard wheel build stops with a sentence
when it is missing; editable installs (``make install``, before the plugin is built) do not need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUNDLE = Path("src/livedata/server/static/dist/viewer.js")


class LiveViewBundle(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        if not (Path(self.root) / BUNDLE).is_file():
            raise RuntimeError(f"{BUNDLE} is missing: run `make plugin` first, so the wheel carries the live view")
