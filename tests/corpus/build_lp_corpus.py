"""Rebuild tests/corpus/lineprotocol*.json from InfluxData's published parser tests (a maintainer tool).

Not run by the test suite. It needs git checkouts of influxdata/line-protocol, influxdata/telegraf
and influxdata/influxdb (with its master-1.x branch), and a Go toolchain (Debian's golang-go).

1. Inputs: every line-protocol text in
   - influxdata/line-protocol  lineprotocol/testdata/corpus.json (its decode cases; those from its
     fuzzer go to lineprotocol-fuzz.json) and lineprotocol/decoder_test.go (decoderTests),
   - influxdata/telegraf       plugins/parsers/influx/parser_test.go, machine_test.go and
     plugins/serializers/influx/influx_test.go (what the serializer writes must parse),
   - influxdata/influxdb       models/points_test.go on master-1.x (InfluxDB 1.x) and
     core/influxdb_line_protocol/src/lib.rs (InfluxDB 3).
2. Expectations: what Telegraf's own parser does with each input. The script compiles Telegraf's
   generated state machine (plugins/parsers/influx/machine.go, copied into a temporary directory
   from the checkout, never into this repository) with a small handler that does what Telegraf's
   MetricHandler does, and records its points or its error.
3. Where livedata deliberately differs from Telegraf, the case says so (``deviation``, with the
   reason) and ``expect`` holds what livedata does; ``telegraf`` holds what Telegraf does.
   docs/ingest.md lists the classes. For line-protocol corpus cases, ``v2`` records whether
   InfluxDB 2's parser (line-protocol v2) accepts the input, as that corpus says.

Usage: python tests/corpus/build_lp_corpus.py LINE_PROTOCOL_GIT TELEGRAF_GIT INFLUXDB_GIT
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

from livedata.core import lineprotocol as lp  # noqa: E402
from livedata.core.limits import MAX_FIELD_CHARS, MAX_LABELS  # noqa: E402
from livedata.core.names import name_problem  # noqa: E402

ORACLE_GO = r'''
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
)

// What Telegraf's MetricHandler (plugins/parsers/influx/handler.go) does, written down again.
var (
	unescaper     = strings.NewReplacer(`\,`, `,`, `\"`, `"`, `\ `, ` `, `\=`, `=`)
	nameUnescaper = strings.NewReplacer(`\,`, `,`, `\ `, ` `)
	strUnescaper  = strings.NewReplacer(`\"`, `"`, `\\`, `\`)
)

func unescape(b []byte) string {
	if strings.ContainsAny(string(b), " ,=") {
		return unescaper.Replace(string(b))
	}
	return string(b)
}

type Field struct {
	Key  string      `json:"k"`
	Type string      `json:"t"`
	V    interface{} `json:"v"`
}
type Metric struct {
	Name   string            `json:"m"`
	Tags   map[string]string `json:"tags"`
	Fields []Field           `json:"fields"`
	Raw    *string           `json:"raw_time"`
}
type H struct{ m *Metric }

func (h *H) SetMeasurement(name []byte) error {
	n := string(name)
	if strings.ContainsAny(n, " ,") {
		n = nameUnescaper.Replace(n)
	}
	h.m = &Metric{Name: n, Tags: map[string]string{}, Fields: []Field{}}
	return nil
}
func (h *H) AddTag(k, v []byte) error { h.m.Tags[unescape(k)] = unescape(v); return nil }
func (h *H) add(k string, t string, v interface{}) {
	for i := range h.m.Fields {
		if h.m.Fields[i].Key == k {
			h.m.Fields[i] = Field{k, t, v}
			return
		}
	}
	h.m.Fields = append(h.m.Fields, Field{k, t, v})
}
func numErr(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}
func (h *H) AddInt(k, v []byte) error {
	n, err := strconv.ParseInt(strings.TrimSuffix(string(v), "i"), 10, 64)
	if err != nil {
		return numErr(err)
	}
	h.add(unescape(k), "int", strconv.FormatInt(n, 10))
	return nil
}
func (h *H) AddUint(k, v []byte) error {
	n, err := strconv.ParseUint(strings.TrimSuffix(string(v), "u"), 10, 64)
	if err != nil {
		return numErr(err)
	}
	h.add(unescape(k), "uint", strconv.FormatUint(n, 10))
	return nil
}
func (h *H) AddFloat(k, v []byte) error {
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return numErr(err)
	}
	h.add(unescape(k), "float", strconv.FormatFloat(f, 'g', -1, 64))
	return nil
}
func (h *H) AddString(k, v []byte) error {
	s := string(v)
	if strings.ContainsAny(s, `\"`) {
		s = strUnescaper.Replace(s)
	}
	h.add(unescape(k), "str", s)
	return nil
}
func (h *H) AddBool(k, v []byte) error {
	b, err := strconv.ParseBool(string(v))
	if err != nil {
		return errors.New("unparsable bool")
	}
	h.add(unescape(k), "bool", b)
	return nil
}
func (h *H) SetTimestamp(tm []byte) error {
	if _, err := strconv.ParseInt(string(tm), 10, 64); err != nil {
		return numErr(err)
	}
	s := string(tm)
	h.m.Raw = &s
	return nil
}

type Out struct {
	Metrics []*Metric `json:"metrics"`
	Error   string    `json:"error,omitempty"`
	Line    int       `json:"line,omitempty"`
}

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		data, _ := base64.StdEncoding.DecodeString(sc.Text())
		h := &H{}
		m := NewMachine(h)
		m.SetData(data)
		out := Out{Metrics: []*Metric{}}
		for {
			err := m.Next()
			if errors.Is(err, EOF) {
				break
			}
			if err != nil {
				out = Out{Error: err.Error(), Line: m.LineNumber()}
				break
			}
			if h.m != nil {
				out.Metrics = append(out.Metrics, h.m)
				h.m = nil
			}
		}
		enc.Encode(out)
	}
}
'''


def git_show(repo: Path, rev_path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", rev_path], capture_output=True, check=True).stdout.decode()


def build_oracle(telegraf: Path, work: Path) -> Path:
    machine = git_show(telegraf, "HEAD:plugins/parsers/influx/machine.go").replace("package influx", "package main", 1)
    (work / "machine.go").write_text(machine)
    (work / "oracle.go").write_text(ORACLE_GO)
    (work / "go.mod").write_text("module oracle\n\ngo 1.19\n")
    subprocess.run(["go", "build", "-o", "oracle", "."], cwd=work, check=True, env={
        "PATH": "/usr/bin:/bin:/usr/local/go/bin", "HOME": str(work), "GOFLAGS": "-mod=mod", "GOPROXY": "off",
        "GOCACHE": str(work / "cache")})
    return work / "oracle"


# --- Go and Rust string literals ------------------------------------------------------------------

_GO_ESC = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34}


def go_string(src: str, i: int) -> tuple[bytes, int]:
    """The Go string literal at src[i] (raw or interpreted) as bytes, and the index after it."""
    if src[i] == "`":
        j = src.index("`", i + 1)
        return src[i + 1:j].replace("\r", "").encode(), j + 1
    assert src[i] == '"'
    out = bytearray()
    j = i + 1
    while src[j] != '"':
        c = src[j]
        if c != "\\":
            out += c.encode()
            j += 1
            continue
        e = src[j + 1]
        if e in _GO_ESC:
            out.append(_GO_ESC[e])
            j += 2
        elif e == "x":
            out.append(int(src[j + 2:j + 4], 16))
            j += 4
        elif e in "01234567":
            out.append(int(src[j + 1:j + 4], 8))
            j += 4
        elif e == "u":
            out += chr(int(src[j + 2:j + 6], 16)).encode("utf-8", "surrogatepass")
            j += 6
        elif e == "U":
            out += chr(int(src[j + 2:j + 10], 16)).encode()
            j += 10
        else:
            raise ValueError(f"bad escape {src[j:j + 2]!r}")
    return bytes(out), j + 1


def go_concat(src: str, i: int) -> tuple[bytes, int] | None:
    """String literals joined by '+' starting at src[i] (after whitespace), or None."""
    parts: list[bytes] = []
    while True:
        while src[i] in " \t\n":
            i += 1
        if src[i] not in '"`':
            break
        b, i = go_string(src, i)
        parts.append(b)
        k = i
        while src[k] in " \t\n":
            k += 1
        if src[k] != "+":
            break
        i = k + 1
    return (b"".join(parts), i) if parts else None


def rust_string(src: str, i: int) -> tuple[bytes, int] | None:
    m = re.compile(r'r(#*)"').match(src, i)
    if m:
        end = src.index('"' + m.group(1), m.end())
        return src[m.end():end].encode(), end + 1 + len(m.group(1))
    if src[i] != '"':
        return None
    out = []
    j = i + 1
    while src[j] != '"':
        c = src[j]
        if c == "\\":
            e = src[j + 1]
            if e == "\n":  # line continuation: skip the newline and leading whitespace
                j += 2
                while src[j] in " \t":
                    j += 1
                continue
            out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}.get(e))
            if out[-1] is None:
                if e == "u":
                    k = src.index("}", j)
                    out[-1] = chr(int(src[j + 3:k], 16))
                    j = k + 1
                    continue
                if e == "x":
                    out[-1] = chr(int(src[j + 2:j + 4], 16))
                    j += 4
                    continue
                raise ValueError(f"rust escape {src[j:j + 2]!r}")
            j += 2
        else:
            out.append(c)
            j += 1
    return "".join(out).encode(), j + 1


def enclosing(src: str, i: int, pattern: str) -> str:
    names = [m.group(1) for m in re.finditer(pattern, src[:i])]
    return names[-1] if names else ""


# --- inputs ----------------------------------------------------------------------------------------

Case = dict[str, Any]
_PRECISIONS = {"": "ns", "1ns": "ns", "1us": "us", "1µs": "us", "1ms": "ms", "1s": "s"}


def from_lp_corpus(repo: Path) -> tuple[list[Case], list[Case]]:
    data = json.loads(git_show(repo, "HEAD:lineprotocol/testdata/corpus.json"))["decode"]
    main: list[Case] = []
    fuzz: list[Case] = []
    for key, case in sorted(data.items()):
        text = case["input"]["text"]
        raw = base64.b64decode(text["binary"]) if isinstance(text, dict) else text.encode()
        impl = case["input"]["implementation"]
        c = {"input": raw, "precision": _PRECISIONS[case["input"]["precision"]],
             "v2": "reject" if "error" in case["output"] else "accept",
             "source": {"repo": "influxdata/line-protocol", "file": "lineprotocol/testdata/corpus.json",
                        "case": f"{key} (input from {impl})"}}
        (fuzz if impl == "fuzz" else main).append(c)
    return main, fuzz


def from_go_tests(repo: Path, rev: str, path: str, repo_name: str, key_re: str, skip_funcs: tuple[str, ...] = ()
                  ) -> list[Case]:
    src = git_show(repo, f"{rev}:{path}")
    out: list[Case] = []
    for m in re.finditer(key_re, src):
        lit = go_concat(src, m.end())
        if lit is None:
            continue
        func = enclosing(src, m.start(), r"\nfunc (\w+)\(")
        if any(func.startswith(s) for s in skip_funcs):
            continue
        name = enclosing(src[max(0, m.start() - 600):m.start()], 600, r'(?:name|testName):\s*"([^"]*)"')
        prec = enclosing(src[max(0, m.start() - 300):m.start()], 300, r'precision:\s*"([^"]*)"')
        raw = re.sub("∑[¹²³⁴⁵⁶⁷⁸⁹⁰]+".encode(), b"", lit[0]) if "decoder_test" in path else lit[0]
        if "points_test" in path and re.fullmatch(rb"[\w.-]+", raw):
            continue  # a test's name (a struct field), not an input
        out.append({"input": raw, "precision": _PRECISIONS.get(prec, "ns"),
                    "source": {"repo": repo_name, "file": path + (f" ({rev})" if rev != "HEAD" else ""),
                               "case": f"{func}" + (f": {name}" if name else "")}})
    return out


def from_rust_tests(repo: Path, path: str) -> list[Case]:
    src = git_show(repo, f"HEAD:{path}")
    src = src[src.index("mod test"):]
    out: list[Case] = []
    for m in re.finditer(r"(?:let input = |parse_lines\(|parse\(|split_lines\()\s*", src):
        lit = rust_string(src, m.end())
        if lit is None or not lit[0]:
            continue
        func = enclosing(src, m.start(), r"\n\s*fn (\w+)\(")
        out.append({"input": lit[0], "precision": "ns",
                    "source": {"repo": "influxdata/influxdb", "file": path, "case": func}})
    return out


# --- expectations ------------------------------------------------------------------------------------


def telegraf_outcomes(oracle: Path, cases: list[Case]) -> list[dict[str, Any]]:
    stdin = "".join(base64.b64encode(c["input"]).decode() + "\n" for c in cases)
    out = subprocess.run([str(oracle)], input=stdin.encode(), capture_output=True, check=True).stdout
    return [json.loads(line) for line in out.decode().splitlines()]


_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def telegraf_expect(res: dict[str, Any], precision: str) -> dict[str, Any]:
    if "error" in res:
        return {"error": True, "line": res["line"]}
    points = []
    for m in res["metrics"]:
        fields = []
        for f in m["fields"]:
            t, v = f["t"], f["v"]
            v = float(v) if t == "float" else int(v) if t in ("int", "uint") else v
            fields.append([f["k"], t, v])
        raw = m.get("raw_time")
        points.append({"measurement": m["m"], "tags": dict(sorted(m["tags"].items())), "fields": fields,
                       "time_ns": None if raw is None else int(raw) * _NS[precision]})
    return {"points": points}


def livedata_outcome(raw: bytes, precision: str) -> dict[str, Any]:
    try:
        points = lp.parse(lp.decode(raw), precision)
    except lp.LineProtocolError as exc:
        return {"error": True, "line": exc.line}
    out = []
    for p in points:
        fields = []
        for k, v in p.fields:
            t = "bool" if isinstance(v, bool) else "float" if isinstance(v, float) else "str" if isinstance(v, str) \
                else "int"
            fields.append([k, t, v])
        out.append({"measurement": p.measurement, "tags": dict(p.tags), "fields": fields, "time_ms": p.time_ms})
    return {"points": out}


def same(tg: dict[str, Any], ours: dict[str, Any]) -> bool:
    if "error" in tg or "error" in ours:
        return "error" in tg and "error" in ours
    if len(tg["points"]) != len(ours["points"]):
        return False
    for a, b in zip(tg["points"], ours["points"], strict=True):
        fa = [[k, "int" if t == "uint" else t, v] for k, t, v in a["fields"]]
        if (a["measurement"], a["tags"], fa) != (b["measurement"], b["tags"], b["fields"]):
            return False
        if (None if a["time_ns"] is None else a["time_ns"] // 1_000_000) != b["time_ms"]:
            return False
    return True


def deviation(case: Case, tg: dict[str, Any], ours: dict[str, Any]) -> str | None:
    """Why livedata differs from Telegraf on this case (one of the documented classes), or None."""
    raw: bytes = case["input"]
    try:
        raw.decode()
    except UnicodeDecodeError:
        return "invalid-utf8"
    if raw.startswith(b"\xef\xbb\xbf"):
        return "byte-order-mark"
    if "points" in tg:
        names = [n for p in tg["points"] for n in [p["measurement"], *p["tags"], *p["tags"].values()]]
        names += [f[0] for p in tg["points"] for f in p["fields"]]
        if any(name_problem(n) for n in names):
            return "control-character-in-name"
        if any(len(p["tags"]) > MAX_LABELS for p in tg["points"]) or any(len(n) > MAX_FIELD_CHARS for n in names):
            return "name-limits"
        if any(p["time_ns"] is not None and not -(2**63) <= p["time_ns"] < 2**63 for p in tg["points"]):
            return "timestamp-overflow"
        if "error" in ours and raw.rstrip(b" ").endswith(b"\\"):
            return "dangling-backslash"
        if "points" in ours and any('\\"' in n for p in ours["points"]
                                    for n in [*p["tags"], *p["tags"].values(), *(f[0] for f in p["fields"])]):
            return "escaped-quote-in-key"
    return None


def finish(cases: list[Case], oracle: Path) -> list[Case]:
    merged: dict[tuple[bytes, str], Case] = {}
    for c in cases:
        key = (c["input"], c["precision"])
        if key in merged:
            if c["source"] not in merged[key]["sources"]:
                merged[key]["sources"].append(c["source"])
            continue
        merged[key] = {**{k: v for k, v in c.items() if k != "source"}, "sources": [c["source"]]}
    unique = list(merged.values())
    out: list[Case] = []
    for case, res in zip(unique, telegraf_outcomes(oracle, unique), strict=True):
        tg = telegraf_expect(res, case["precision"])
        ours = livedata_outcome(case["input"], case["precision"])
        raw: bytes = case["input"]
        try:
            text: Any = raw.decode()
        except UnicodeDecodeError:
            text = {"base64": base64.b64encode(raw).decode()}
        entry: Case = {"sources": case["sources"], "input": text, "precision": case["precision"]}
        if "v2" in case:
            entry["v2"] = case["v2"]
        if same(tg, ours):
            entry["expect"] = tg
        else:
            why = deviation(case, tg, ours)
            if why is None:
                raise SystemExit(f"livedata disagrees with Telegraf on {raw!r}: telegraf {tg}, livedata {ours}")
            entry["expect"] = ({"error": True, "line": ours["line"]} if "error" in ours else
                               {"points": [{**p, "time_ns": None if p["time_ms"] is None else p["time_ms"] * 1_000_000}
                                           for p in [{k: v for k, v in q.items() if k != "time_ms"} | q
                                                     for q in ours["points"]]]})
            entry["deviation"] = why
            entry["telegraf"] = tg
        out.append(entry)
    for i, e in enumerate(out):
        e["id"] = i + 1
    return out


def main() -> None:
    lpgit, tggit, idbgit = map(Path, sys.argv[1:4])
    lp_main, lp_fuzz = from_lp_corpus(lpgit)
    cases = lp_main
    cases += from_go_tests(lpgit, "HEAD", "lineprotocol/decoder_test.go", "influxdata/line-protocol", r"\btext:\s*")
    cases += from_go_tests(tggit, "HEAD", "plugins/parsers/influx/parser_test.go", "influxdata/telegraf",
                           r"\binput:\s*(?:\[\]byte\()?", skip_funcs=("TestSeries", "TestStreamParserErrorString"))
    cases += from_go_tests(tggit, "HEAD", "plugins/parsers/influx/machine_test.go", "influxdata/telegraf",
                           r"\binput:\s*(?:\[\]byte\()?", skip_funcs=("TestSeries",))
    cases += from_go_tests(tggit, "HEAD", "plugins/serializers/influx/influx_test.go", "influxdata/telegraf",
                           r"\boutput:\s*(?:\[\]byte\()?")
    cases += from_go_tests(idbgit, "master-1.x", "models/points_test.go", "influxdata/influxdb",
                           r"(?:ParsePointsString\(|ParsePoints\(\[\]byte\(|ParsePointsWithPrecision\(\[\]byte\("
                           r"|\btest\(t,|\bline:|\binput:|\{(?=\s*`)|(?<=\[\]string\{)|(?<=,)(?=\s*\n\s*[\"`]))")
    cases += from_rust_tests(idbgit, "core/influxdb_line_protocol/src/lib.rs")
    with tempfile.TemporaryDirectory() as tmp:
        oracle = build_oracle(tggit, Path(tmp))
        main_cases = finish(cases, oracle)
        fuzz_cases = finish(lp_fuzz, oracle)
    about = ("Line-protocol inputs from InfluxData's published parser tests, each with its source; 'expect' is "
             "what Telegraf's parser does with it (its state machine, run by tests/corpus/build_lp_corpus.py), "
             "except where 'deviation' says livedata deliberately differs ('telegraf' then holds Telegraf's "
             "outcome). Fields: [key, type, value], type float|int|uint|bool|str. 'v2': InfluxDB 2's parser "
             "verdict where line-protocol's corpus records it.")
    for name, data in (("lineprotocol.json", main_cases), ("lineprotocol-fuzz.json", fuzz_cases)):
        lines = ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in data)
        text = f'{{"about": {json.dumps(about)},\n"cases": [\n{lines}\n]}}\n'
        if name.endswith("-fuzz.json"):  # 2.3 MB as text: stored gzipped (tests/corpus/__init__.py reads both)
            (HERE / f"{name}.gz").write_bytes(gzip.compress(text.encode(), 9, mtime=0))
        else:
            (HERE / name).write_text(text)
        print(name, len(data), "cases,", sum("deviation" in c for c in data), "deviations")


if __name__ == "__main__":
    main()
