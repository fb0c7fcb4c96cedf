"""Parser test cases from InfluxData's repositories, as data (see build_lp_corpus.py and docs/ingest.md)."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
FILES = ("lineprotocol.json", "lineprotocol-fuzz.json")


@cache
def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((HERE / name).read_text())["cases"]
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
