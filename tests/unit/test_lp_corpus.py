"""InfluxData's own line-protocol test cases (tests/corpus) against the parser: 100 % agreement.

Each case expects what Telegraf's parser does, or, where marked as a deviation, what livedata
documents that it does instead (docs/ingest.md, "How livedata differs from Telegraf").
"""

from __future__ import annotations

from typing import Any

import pytest

from livedata.core import lineprotocol as lp
from tests.corpus import body, label, load, typed

MAIN = load("lineprotocol.json")


def outcome(case: dict[str, Any]) -> dict[str, Any]:
    try:
        points = lp.parse(lp.decode(body(case)), case["precision"])
    except lp.LineProtocolError as exc:
        return {"error": True, "line": exc.line}
    return {"points": [
        (p.measurement, dict(p.tags), [(k, type(v).__name__, v) for k, v in p.fields], p.time_ms) for p in points
    ]}


def expected(case: dict[str, Any]) -> dict[str, Any]:
    exp = case["expect"]
    if "error" in exp:
        return {"error": True, "line": exp["line"]} if "deviation" in case else {"error": True}
    return {"points": [
        (p["measurement"], p["tags"], [(k, *typed(t, v)) for k, t, v in p["fields"]],
         None if p["time_ns"] is None else p["time_ns"] // 1_000_000)
        for p in exp["points"]
    ]}


def agrees(case: dict[str, Any]) -> bool:
    got, want = outcome(case), expected(case)
    if "error" in want and "line" not in want:
        got.pop("line", None)
    return got == want


@pytest.mark.parametrize("case", MAIN, ids=[label(c) for c in MAIN])
def test_corpus_case(case: dict[str, Any]) -> None:
    assert agrees(case), (outcome(case), expected(case))


def test_fuzz_corpus_cases_all_agree() -> None:
    cases = load("lineprotocol-fuzz.json")
    assert len(cases) > 6000
    failures = [label(c) for c in cases if not agrees(c)]
    assert not failures, f"{len(failures)} of {len(cases)} disagree: {failures[:20]}"


def test_corpus_covers_every_source() -> None:
    files = {(s["repo"], s["file"]) for c in MAIN for s in c["sources"]}
    assert {r for r, _ in files} == {"influxdata/line-protocol", "influxdata/telegraf", "influxdata/influxdb"}
    for needle in ("decoder_test.go", "corpus.json", "parsers/influx/parser_test.go", "machine_test.go",
                   "serializers/influx/influx_test.go", "models/points_test.go", "influxdb_line_protocol/src/lib.rs"):
        assert any(needle in f for _, f in files), needle
    deviations = {c["deviation"] for c in MAIN + load("lineprotocol-fuzz.json") if "deviation" in c}
    assert deviations <= {"invalid-utf8", "control-character-in-name", "name-limits", "timestamp-overflow",
                          "dangling-backslash", "escaped-quote-in-key", "byte-order-mark"}
