"""Parser test cases from InfluxData's repositories, as data (see build_lp_corpus.py and docs/ingest.md)."""

from __future__ import annotations

import base64
import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
FILES = ("lineprotocol.json", "lineprotocol-fuzz.json")
"""Case files by name; a large one is stored gzipped (``<name>.gz``) and read as the name."""


@cache
def load(name: str) -> list[dict[str, Any]]:
    packed = HERE / f"{name}.gz"
    text = gzip.decompress(packed.read_bytes()).decode() if packed.exists() else (HERE / name).read_text()
    cases: list[dict[str, Any]] = json.loads(text)["cases"]
    return cases


def body(case: dict[str, Any]) -> bytes:
    text = case["input"]
    return base64.b64decode(text["base64"]) if isinstance(text, dict) else text.encode()


def label(case: dict[str, Any]) -> str:
    src = case["sources"][0]
    return f"#{case['id']} {src['repo']} {src['file']} {src['case']}"[:120]


def typed(kind: str, value: Any) -> tuple[str, Any]:
    """A corpus field value as (python type name, value): uint and int are both Python ints."""
    return {"float": "float", "int": "int", "uint": "int", "bool": "bool", "str": "str"}[kind], value
