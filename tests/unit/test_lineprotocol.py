import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from livedata.core import lineprotocol as lp
from livedata.core.lineprotocol import (
    PRECISIONS,
    Line,
    LineProtocolError,
    Value,
    encode_line,
    parse,
    parse_line,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one(text: str, precision: str = "ns") -> Line:
    line = parse_line(text, precision)
    assert line is not None
    return line


def error(text: str, precision: str = "ns") -> LineProtocolError:
    with pytest.raises(LineProtocolError) as info:
        parse(text, precision)
    return info.value


def typed(fields: tuple[tuple[str, Value], ...]) -> list[tuple[str, type, Value]]:
    return [(k, type(v), v) for k, v in fields]


# --------------------------------------------------------------------------------------------
# Basics


def test_reference_line() -> None:
    assert parse("cpu,host=a,region=eu usage=12.5,idle=80i 1700000000000000000") == [
        Line("cpu", (("host", "a"), ("region", "eu")), (("usage", 12.5), ("idle", 80)), 1_700_000_000_000)
    ]


def test_tags_sorted_by_key_and_fields_keep_their_order() -> None:
    line = one("m,z=1,a=2,m=3 z=1,a=2i,m=t")
    assert line.tags == (("a", "2"), ("m", "3"), ("z", "1"))
    assert typed(line.fields) == [("z", float, 1.0), ("a", int, 2), ("m", bool, True)]


def test_no_tags_single_field_no_timestamp() -> None:
    assert one("m v=1") == Line("m", (), (("v", 1.0),), None)


def test_fast_constructed_line_equals_and_hashes_like_dataclass_line() -> None:
    a = one("m,t=x v=1i 5000000")
    b = Line("m", (("t", "x"),), (("v", 1),), 5)
    assert a == b
    assert hash(a) == hash(b)
    assert type(a) is Line
    with pytest.raises(AttributeError):
        a.measurement = "n"  # type: ignore[misc]


def test_empty_body_blank_lines_comments_and_crlf() -> None:
    assert parse("") == []
    assert parse("\n\n  \n") == []
    body = "# header\r\n\r\ncpu v=1 1000000\r\n  # indented comment\r\ncpu v=2 2000000\r\n"
    assert [(p.fields, p.time_ms) for p in parse(body)] == [((("v", 1.0),), 1), ((("v", 2.0),), 2)]


def test_comment_lines_count_for_line_numbers() -> None:
    err = error("# one\n\ncpu v=1\n# four\ncpu v=abc")
    assert err.line == 5


def test_multiple_spaces_leading_and_trailing_spaces() -> None:
    expected = Line("m", (("t", "x"),), (("v", 1.0),), 7)
    assert one("   m,t=x   v=1    7000000   ") == expected
    assert parse("m,t=x  v=1  7000000 \r\n") == [expected]


def test_tab_is_not_a_separator() -> None:
    err = error("cpu\tv=1")
    assert "missing fields" in str(err)
    assert "invalid field value '1\\t'" in str(error("cpu v=1\t"))
    assert one("cpu\tx,t=a\tb v=1") == Line("cpu\tx", (("t", "a\tb"),), (("v", 1.0),), None)


def test_measurement_may_contain_equals_and_quotes() -> None:
    assert one("a=b v=1").measurement == "a=b"
    assert one('"m",t="x" "f"=1').measurement == '"m"'
    assert one('"m",t="x" "f"=1').tags == (("t", '"x"'),)
    assert one('"m",t="x" "f"=1').fields == (('"f"', 1.0),)


# --------------------------------------------------------------------------------------------
# Escapes


@pytest.mark.parametrize(
    ("text", "measurement"),
    [
        (r"my\,m v=1", "my,m"),
        (r"my\ m v=1", "my m"),
        (r"my\=m v=1", r"my\=m"),  # '=' needs no escape in a measurement: the backslash is literal
        (r"my\xm v=1", r"my\xm"),
        (r"my\\m v=1", r"my\\m"),
        (r"my\\,m v=1", r"my\,m"),  # literal backslash, then an escaped comma
        (r"\ m v=1", " m"),
        (r"\#m v=1", r"\#m"),
    ],
)
def test_measurement_escapes(text: str, measurement: str) -> None:
    assert one(text).measurement == measurement


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        (r"m,a\,b=c v=1", (("a,b", "c"),)),
        (r"m,a\=b=c v=1", (("a=b", "c"),)),
        (r"m,a\ b=c v=1", (("a b", "c"),)),
        (r"m,a\xb=c v=1", ((r"a\xb", "c"),)),
        (r"m,k=a\,b v=1", (("k", "a,b"),)),
        (r"m,k=a\=b v=1", (("k", "a=b"),)),
        (r"m,k=a\ b v=1", (("k", "a b"),)),
        (r"m,k=a\xb v=1", (("k", r"a\xb"),)),
        (r"m,k=a\\\ b v=1", (("k", r"a\\ b"),)),  # two literal backslashes, then an escaped space
        (r"m,k=a\\,b v=1", (("k", r"a\,b"),)),  # a literal backslash, then an escaped comma
        (r"m,k=\ ,j=\, v=1", (("j", ","), ("k", " "))),
    ],
)
def test_tag_escapes(text: str, tags: tuple[tuple[str, str], ...]) -> None:
    assert one(text).tags == tags


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (r"m a\,b=1", "a,b"),
        (r"m a\=b=1", "a=b"),
        (r"m a\ b=1", "a b"),
        (r"m a\xb=1", r"a\xb"),
        (r"m a\\==1", "a\\="),  # a literal backslash, then an escaped '='
        (r"m a\\\==1", r"a\\="),
        (r"m a\\b=1", r"a\\b"),  # a backslash before a backslash is literal
    ],
)
def test_field_key_escapes(text: str, key: str) -> None:
    assert one(text).fields[0][0] == key


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('"hello world"', "hello world"),
        ('"a,b=c d"', "a,b=c d"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"C:\path\to"', r"C:\path\to"),  # backslash before another char is literal
        (r'"ends with \\"', "ends with \\"),
        (r'"\\\""', '\\"'),
        ('""', ""),
        ('"# not a comment"', "# not a comment"),
        ('"t"', "t"),
        ('"12i"', "12i"),
        ('"tab\there"', "tab\there"),
        ('"ünïcødé ✓"', "ünïcødé ✓"),
    ],
)
def test_string_field_values(raw: str, value: str) -> None:
    line = one(f"m,t=x s={raw},n=1i 1000000")
    assert typed(line.fields) == [("s", str, value), ("n", int, 1)]
    assert line.time_ms == 1


def test_string_value_last_and_alone() -> None:
    assert one('m s="a b"').fields == (("s", "a b"),)
    assert one('m s="a b" 2000000').time_ms == 2
    assert one('m a="x",b="y, z"').fields == (("a", "x"), ("b", "y, z"))


# --------------------------------------------------------------------------------------------
# Field values


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", 1.0),
        ("1.5", 1.5),
        ("-1.5e3", -1500.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1E5", 1e5),
        ("1e+5", 1e5),
        ("1e-5", 1e-5),
        ("-0", -0.0),
        ("007", 7.0),
        ("1.7976931348623157e308", 1.7976931348623157e308),
    ],
)
def test_floats(raw: str, value: float) -> None:
    assert typed(one(f"m v={raw}").fields) == [("v", float, value)]
    assert typed(one(f'm s="x",v={raw}').fields)[1] == ("v", float, value)  # scanner path too


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3i", 3),
        ("-3i", -3),
        ("0i", 0),
        ("-0i", 0),
        ("9223372036854775807i", 2**63 - 1),
        ("-9223372036854775808i", -(2**63)),
        ("3u", 3),
        ("0u", 0),
        ("18446744073709551615u", 2**64 - 1),
    ],
)
def test_integers(raw: str, value: int) -> None:
    assert typed(one(f"m v={raw}").fields) == [("v", int, value)]
    assert typed(one(f'm s="x",v={raw}').fields)[1] == ("v", int, value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [(s, True) for s in ("t", "T", "true", "True", "TRUE")]
    + [(s, False) for s in ("f", "F", "false", "False", "FALSE")],
)
def test_booleans(raw: str, value: bool) -> None:
    assert typed(one(f"m v={raw}").fields) == [("v", bool, value)]
    assert typed(one(f'm s="x",v={raw}').fields)[1] == ("v", bool, value)


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "tRue",
        "yes",
        "+1",
        "1_000",
        "inf",
        "-inf",
        "nan",
        "NaN",
        "Infinity",
        "0x10",
        "1e",
        ".",
        "-",
        "e5",
        "1.2.3",
        "--1",
        "\u0661\u0662",  # Arabic-Indic digits: float() and int() accept them, line protocol does not
        "\uff11",  # fullwidth digit one
        "i",
        "u",
        "1.5i",
        "+1i",
        "1_0i",
        "--1i",
        "-1u",
        "+1u",
        "1.0u",
        "\uff11u",
        "1iu",
        "'x'",
        "1=2",
    ],
)
def test_invalid_values(raw: str) -> None:
    err = error(f"m v={raw}")
    assert (
        err.reason
        == f"invalid field value {raw!r} for field 'v' (expected a number, 12i, 12u, \"string\" or true/false)"
    )
    assert err.column == 5
    err = error(f'm s="x",v={raw}')
    assert err.column == 11


def test_invalid_value_message_matches_the_documented_example() -> None:
    err = error("m temp=1\nm temp=2\nm,host=a temp=abc 1")
    assert str(err) == (
        "line 3: invalid field value 'abc' for field 'temp' (expected a number, 12i, 12u, \"string\" or true/false)"
    )
    assert (err.line, err.column) == (3, 15)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        ("9223372036854775808i", "64-bit signed integer"),
        ("-9223372036854775809i", "64-bit signed integer"),
        ("99999999999999999999999i", "64-bit signed integer"),
        ("18446744073709551616u", "64-bit unsigned integer"),
        ("1e400", "64-bit float"),
        ("-1e400", "64-bit float"),
        ("1" * 400, "64-bit float"),
    ],
)
def test_out_of_range_values(raw: str, what: str) -> None:
    err = error(f"m v={raw}")
    assert "out of range" in err.reason
    assert what in err.reason
    assert err.column == 5


# --------------------------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize(
    ("precision", "raw", "ms"),
    [
        ("ns", "1700000000123456789", 1700000000123),
        ("ns", "0", 0),
        ("ns", "999999", 0),
        ("ns", "-1", -1),  # floor, not truncation
        ("ns", "-1000000", -1),
        ("ns", "-1000001", -2),
        ("ns", "9223372036854775807", 9223372036854),
        ("ns", "-9223372036854775808", -9223372036855),
        ("us", "1700000000123456", 1700000000123),
        ("us", "1999", 1),
        ("us", "-1", -1),
        ("us", "-1500", -2),
        ("ms", "1700000000123", 1700000000123),
        ("ms", "-5", -5),
        ("s", "1700000000", 1700000000000),
        ("s", "-5", -5000),
        ("s", "0", 0),
    ],
)
def test_timestamp_precisions(precision: str, raw: str, ms: int) -> None:
    assert one(f"m v=1 {raw}", precision).time_ms == ms
    assert one(f'm v="x" {raw}', precision).time_ms == ms
    assert parse(f"m v=1 {raw}\r\n", precision)[0].time_ms == ms


def test_missing_timestamp_is_none() -> None:
    assert one("m v=1").time_ms is None
    assert one("m v=1   ").time_ms is None
    assert one('m v="a b"').time_ms is None


@pytest.mark.parametrize("raw", ["12a", "1.5", "+5", "1e9", "--5", "5-", "-", "\uff10", "0x10", "1_000"])
def test_bad_timestamp(raw: str) -> None:
    err = error(f"m v=1 {raw}")
    assert err.reason == f"invalid timestamp {raw!r} (expected an integer number of nanoseconds)"
    assert err.column == 7
    assert "seconds)" in error(f"m v=1 {raw}", "s").reason


@pytest.mark.parametrize(
    ("precision", "raw"),
    [
        ("ns", "9223372036854775808"),
        ("ns", "-9223372036854775809"),
        ("us", "9223372036854776"),
        ("ms", "9223372036855"),
        ("ms", "-9223372036855"),
        ("s", "9223372037"),
        ("s", "1700000000000000000"),
    ],
)
def test_timestamp_out_of_range(precision: str, raw: str) -> None:
    for text in (f"m v=1 {raw}", f'm v="x" {raw}'):
        err = error(text, precision)
        assert (
            err.reason
            == f"timestamp {raw!r} is out of range (times must fit a 64-bit count of nanoseconds: years 1677 to 2262)"
        )
        assert err.column == len(text) - len(raw) + 1


def test_timestamp_range_limits() -> None:
    assert one("m v=1 9223372036854775", "us").time_ms == 9223372036854
    assert one("m v=1 9223372036854", "ms").time_ms == 9223372036854
    assert one("m v=1 -9223372036854", "ms").time_ms == -9223372036854
    assert one("m v=1 9223372036", "s").time_ms == 9223372036000
    assert one("m v=1 -9223372036", "s").time_ms == -9223372036000


def test_trailing_text_after_timestamp() -> None:
    err = error("m v=1 123 456")
    assert err.reason == "unexpected text '456' after the timestamp"
    assert err.column == 11


def test_bad_precision() -> None:
    for call in (lambda: parse("", "m"), lambda: parse_line("m v=1", "sec"), lambda: encode_line(one("m v=1"), "h")):
        with pytest.raises(ValueError, match=r"unknown precision .* \(expected one of ns, us, ms, s\)") as info:
            call()
        assert not isinstance(info.value, LineProtocolError)
    assert set(PRECISIONS) == {"ns", "us", "ms", "s"}


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "reason", "column"),
    [
        ("cpu", "missing fields (expected a space and then field_key=value)", 4),
        ("cpu   ", "missing fields (expected a space and then field_key=value)", 4),
        ("cpu,host=a", "missing fields (expected a space and then field_key=value)", 11),
        (r"cpu\ x", "missing fields (expected a space and then field_key=value)", 7),
        ("cpu v", "missing '=' and value after field key 'v'", 6),
        ("cpu v=", "missing value for field 'v'", 7),
        ("cpu v=1,", "empty field key", 9),
        ("cpu v=1,,w=2", "empty field key", 9),
        ("cpu =1", "empty field key", 5),
        ("cpu v=1,=2", "empty field key", 9),
        ("cpu v=1,v=2", "duplicate field key 'v'", 9),
        ('cpu v="a",w=1,v=2i', "duplicate field key 'v'", 15),
        (r"cpu a\ b=1,a\ b=2", "duplicate field key 'a b'", 12),
        ("cpu,=a v=1", "empty tag key", 5),
        ("cpu,host= v=1", "empty value for tag 'host'", 10),
        ("cpu,host v=1", "missing '=' after tag key 'host'", 9),
        ("cpu,host=a,host=b v=1", "duplicate tag key 'host'", 12),
        ("cpu,host=a=b v=1", "unescaped '=' in the value of tag 'host' (write it as \\=)", 11),
        ("cpu,host=a, v=1", "empty tag key", 12),
        (",host=a v=1", "missing measurement name before ','", 1),
        ("  ,host=a v=1", "missing measurement name before ','", 3),
        ('cpu v="abc', "unterminated string value for field 'v' (missing closing \")", 7),
        ('cpu v="abc\\"', "unterminated string value for field 'v' (missing closing \")", 7),
        ('cpu v="abc"x', "unexpected 'x' after the string value of field 'v'", 12),
        ('cpu v="a"1 2', "unexpected '1' after the string value of field 'v'", 10),
        ("cpu v=1 2 3", "unexpected text '3' after the timestamp", 11),
    ],
)
def test_errors(text: str, reason: str, column: int) -> None:
    err = error("ok v=1\n" + text)
    assert err.reason == reason
    assert (err.line, err.column) == (2, column)
    assert str(err) == f"line 2: {reason}"


def test_errors_with_crlf_and_escapes_use_columns_of_the_line() -> None:
    err = error("ok v=1\r\nm,k=a\\ b v=1,w=bad\r\n")
    assert (err.line, err.column) == (2, 16)


def test_parse_is_all_or_nothing_and_stops_at_the_first_bad_line() -> None:
    err = error("m v=1\nm v=2\nm v=x\nm w=y")
    assert err.line == 3
    assert "'x'" in str(err)


def test_long_tokens_are_shortened_in_messages() -> None:
    err = error("m v=" + "x" * 500)
    assert len(str(err)) < 200
    assert "…" in str(err)


def test_error_pickles() -> None:
    err = error("m\nm v=x")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.line, copy.column, copy.reason, str(copy)) == (err.line, err.column, err.reason, str(err))


def test_parse_line() -> None:
    assert parse_line("") is None
    assert parse_line("   ") is None
    assert parse_line("# comment") is None
    assert parse_line("#m v=1") is None
    assert parse_line("m v=1\n") == Line("m", (), (("v", 1.0),), None)
    assert parse_line("m v=1 1\r\n", "s") == Line("m", (), (("v", 1.0),), 1000)
    with pytest.raises(LineProtocolError) as info:
        parse_line("m v=1\nm v=2", lineno=7)
    assert (info.value.line, info.value.column) == (7, 6)
    with pytest.raises(LineProtocolError) as info:
        parse_line("m v=x", lineno=42)
    assert str(info.value).startswith("line 42: ")


def test_head_cache_is_bounded_and_correct() -> None:
    body = "\n".join(f"m,host=h{i} v={i}" for i in range(lp._HEAD_CACHE_MAX + 100))
    points = parse(body)
    assert len(lp._HEAD_CACHE) <= lp._HEAD_CACHE_MAX
    assert points[-1].tags == (("host", f"h{lp._HEAD_CACHE_MAX + 99}"),)
    assert all(p.tags == (("host", f"h{i}"),) for i, p in enumerate(points))
    long_head = "m,k=" + "x" * (lp._HEAD_CACHE_MAX_LEN + 1)
    assert parse(f"{long_head} v=1\n{long_head} v=2")[1].tags == (("k", long_head[4:]),)
    assert long_head not in lp._HEAD_CACHE
    # Cached heads are reused by both paths.
    assert parse('m,host=h5 v=1\nm,host=h5 v="x"') == [
        Line("m", (("host", "h5"),), (("v", 1.0),), None),
        Line("m", (("host", "h5"),), (("v", "x"),), None),
    ]


# --------------------------------------------------------------------------------------------
# Encoding


def test_encode_line() -> None:
    line = Line(
        "cpu load",
        (("host", "a,b"), ("k=v", "x y")),
        (("f", 1.5), ("i", -3), ("u", 2**64 - 1), ("b", True), ("c", False), ("s", 'say "hi" \\ ok'), ("k e=y", 1e16)),
        1_700_000_000_123,
    )
    text = encode_line(line)
    assert text == (
        r"cpu\ load,host=a\,b,k\=v=x\ y f=1.5,i=-3i,u=18446744073709551615u,b=true,c=false,"
        r's="say \"hi\" \\ ok",k\ e\=y=1e+16 1700000000123'
    )
    assert parse_line(text, "ms") == line
    assert encode_line(line, "ns").endswith(" 1700000000123000000")
    assert encode_line(line, "us").endswith(" 1700000000123000")
    assert encode_line(line, "s").endswith(" 1700000000")
    assert encode_line(Line("m", (), (("v", 1),), None)) == "m v=1i"
    assert encode_line(Line("m", (), (("v", 1),), -1), "s") == "m v=1i -1"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (Line("", (), (("v", 1),), None), "measurement must not be empty"),
        (Line("#m", (), (("v", 1),), None), "starts with '#'"),
        (Line("m\\", (), (("v", 1),), None), "ends with a backslash"),
        (Line("m", (("k\\", "v"),), (("v", 1),), None), "ends with a backslash"),
        (Line("m", (("k", "v\\"),), (("v", 1),), None), "ends with a backslash"),
        (Line("m", (), (("v\\", 1),), None), "ends with a backslash"),
        (Line("m\nn", (), (("v", 1),), None), "newline"),
        (Line("m", (), (("v", "a\nb"),), None), "newline"),
        (Line("m", (("", "v"),), (("v", 1),), None), "tag key must not be empty"),
        (Line("m", (("k", ""),), (("v", 1),), None), "must not be empty"),
        (Line("m", (("k", "a"), ("k", "b")), (("v", 1),), None), "duplicate tag key"),
        (Line("m", (), (), None), "at least one field"),
        (Line("m", (), (("", 1),), None), "field key must not be empty"),
        (Line("m", (), (("v", 1), ("v", 2)), None), "duplicate field key"),
        (Line("m", (), (("v", float("nan")),), None), "nan"),
        (Line("m", (), (("v", float("inf")),), None), "inf"),
        (Line("m", (), (("v", 2**64),), None), "64 bits"),
        (Line("m", (), (("v", -(2**63) - 1),), None), "64 bits"),
        (Line("m", (), (("v", 1),), 9223372036855), "years 1677 to 2262"),
        (Line("m", (), (("v", 1),), -9223372036855), "years 1677 to 2262"),
    ],
)
def test_encode_rejects_what_line_protocol_cannot_carry(line: Line, message: str) -> None:
    with pytest.raises(ValueError) as info:
        encode_line(line)
    assert message in str(info.value)


def test_encode_time_range() -> None:
    low = Line("m", (), (("v", 1),), -9223372036854)  # the lowest time_ms parse can produce
    assert parse_line(encode_line(low, "ms"), "ms") == low
    assert encode_line(low, "ns").endswith(" -9223372036854000000")
    with pytest.raises(ValueError, match="out of range"):
        encode_line(low, "s")  # floors to -9223372037 s, which parse would reject
    assert encode_line(Line("m", (), (("v", 1),), -9223372036000), "s").endswith(" -9223372036")


def test_encode_rejects_wrong_types() -> None:
    with pytest.raises(TypeError):
        encode_line(Line("m", (), (("v", None),), None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_line(Line("m", (("k", 1),), (("v", 1),), None))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Properties

SPECIAL = st.sampled_from(list(',= \\"#\t\r\x00\x7f\u2028\u0085é✓'))
CHARS = st.one_of(SPECIAL, st.characters(exclude_characters="\n"))
TEXT = st.text(CHARS, max_size=12)
NAME = st.text(CHARS, min_size=1, max_size=12).filter(lambda s: not s.endswith("\\"))
MEASUREMENT = NAME.filter(lambda s: not s.startswith("#"))
VALUES: st.SearchStrategy[Value] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    TEXT,
)
MAX_MS = (2**63 - 1) // 1_000_000  # time_ms whose ns timestamp still fits an int64
TIMES = st.none() | st.integers(min_value=-MAX_MS, max_value=MAX_MS)


@st.composite
def lines(draw: st.DrawFn) -> Line:
    tags = draw(st.dictionaries(NAME, NAME, max_size=4))
    fields = draw(st.dictionaries(NAME, VALUES, min_size=1, max_size=5))
    return Line(draw(MEASUREMENT), tuple(sorted(tags.items())), tuple(fields.items()), draw(TIMES))


@SETTINGS
@given(lines(), st.sampled_from(["ms", "ns", "us"]))
def test_round_trip(line: Line, precision: str) -> None:
    text = encode_line(line, precision)
    assert "\n" not in text
    back = parse_line(text, precision)
    assert back == line
    assert back is not None and typed(back.fields) == typed(line.fields)


@SETTINGS
@given(st.lists(lines(), max_size=5), st.sampled_from(["\n", "\r\n"]))
def test_round_trip_body(points: list[Line], newline: str) -> None:
    body = newline.join(encode_line(p) for p in points) + newline
    assert parse(body, "ms") == points


@SETTINGS
@given(lines())
def test_round_trip_seconds_floors_time(line: Line) -> None:
    assume(line.time_ms is None or line.time_ms >= -9223372036000)  # see test_encode_time_range
    back = parse_line(encode_line(line, "s"), "s")
    assert back is not None
    assert back.time_ms == (None if line.time_ms is None else line.time_ms // 1000 * 1000)


PIECES = st.sampled_from(
    [
        "cpu",
        "m",
        ",",
        "=",
        " ",
        "  ",
        "\\",
        '"',
        "#",
        "\r",
        "\t",
        "host",
        "a",
        "v",
        "1",
        "12.5",
        "-",
        ".",
        "e",
        "E",
        "+",
        "i",
        "u",
        "t",
        "true",
        "FALSE",
        "0",
        "1700000000000000000",
        "9223372036854775808",
        "18446744073709551616",
        "1e400",
        "_",
        "é",
        "\u0661",
        "\x00",
    ]
)
# Near-valid lines: the right structure, made of pieces that are often (not always) valid.
PLAIN_WORD = st.sampled_from(["a", "b", "host", "t", "é", "x1"])
ODD_WORD = st.lists(
    st.sampled_from(["a", "b", "\\", "\\,", "\\ ", "\\=", ",", "=", " ", '"', "#", "\t"]),
    max_size=3,
).map("".join)
WORD = st.one_of(PLAIN_WORD, PLAIN_WORD, PLAIN_WORD, ODD_WORD)
GOOD_VALUES = [
    "1",
    "12.5",
    "-1.5e3",
    "1.",
    ".5",
    "3i",
    "-3i",
    "3u",
    "t",
    "FALSE",
    '"a b"',
    '"x\\"y"',
    '"a,b=c"',
    '"\\\\"',
]
BAD_VALUES = ["+1", "-3u", "tRue", "abc", "1e400", "9223372036854775808i", "", '"', '""x', "1 2"]
VALUE_TOKENS = st.one_of(st.sampled_from(GOOD_VALUES), st.sampled_from(GOOD_VALUES), st.sampled_from(BAD_VALUES))
EQ = st.sampled_from(["=", "=", "=", "=", "=", "", "=="])
FIELD = st.tuples(WORD, EQ, VALUE_TOKENS).map("".join)
TAG = st.tuples(WORD, EQ, WORD).map("".join)
HEAD = st.tuples(WORD, st.lists(TAG, max_size=3)).map(lambda h: h[0] + "".join("," + t for t in h[1]))
STRUCTURED = st.tuples(
    st.sampled_from(["", "", "", " ", "#"]),
    HEAD,
    st.sampled_from([" ", " ", " ", "  ", "", "\t"]),
    st.lists(FIELD, min_size=1, max_size=3).map(",".join),
    st.sampled_from(["", " 1700000000000000000", " -1", " 0", " 12a", "  5", " 9223372036854775808", " 1 2"]),
    st.sampled_from(["", "", " ", "\r"]),
).map("".join)
GRAMMARISH = st.one_of(STRUCTURED, STRUCTURED, st.lists(PIECES, max_size=25).map("".join), st.text(max_size=40))


@SETTINGS
@given(GRAMMARISH, st.sampled_from(list(PRECISIONS)))
def test_fuzz_only_line_protocol_errors(text: str, precision: str) -> None:
    failure: LineProtocolError | None = None
    try:
        result = parse_line(text, precision)
    except LineProtocolError as exc:
        failure = exc
    if failure is not None:
        assert failure.line == 1
        assert 1 <= failure.column <= len(text) + 1
        assert str(failure).startswith("line 1: ")
    else:
        assert result is None or isinstance(result, Line)
        if result is not None:
            # Whatever parses re-encodes to something that parses to the same point.
            assert parse_line(encode_line(result, "ms"), "ms") == result


@SETTINGS
@given(st.lists(GRAMMARISH, max_size=6))
def test_fuzz_body_equals_line_by_line(texts: list[str]) -> None:
    texts = [t.replace("\n", " ") for t in texts]
    expected: list[Line] = []
    first_error: tuple[int, int, str] | None = None
    for lineno, text in enumerate(texts, 1):
        try:
            point = parse_line(text, lineno=lineno)
        except LineProtocolError as err:
            first_error = (err.line, err.column, err.reason)
            break
        if point is not None:
            expected.append(point)
    body = "\n".join(texts)
    if first_error is None:
        assert parse(body) == expected
    else:
        with pytest.raises(LineProtocolError) as info:
            parse(body)
        assert (info.value.line, info.value.column, info.value.reason) == first_error


@SETTINGS
@given(GRAMMARISH.map(lambda s: s.replace("\\", "").replace('"', "").replace("\n", "").strip(" ").rstrip("\r")))
def test_fast_path_agrees_with_scanner(text: str) -> None:
    if not text:
        return
    fast = lp._parse_fast(text, 1)
    try:
        scanned = lp._parse_scan(text, 1, 1)
    except LineProtocolError:
        assert fast is None
        return
    if fast is not None:
        assert fast == scanned
        assert scanned is not None and typed(fast.fields) == typed(scanned.fields)


@SETTINGS
@given(GRAMMARISH.map(lambda s: s.replace("\\", "").replace("\n", "")))
def test_cached_head_agrees_with_head_scanner(head: str) -> None:
    head = head.split(" ")[0]
    if not head or head.startswith("#"):
        return
    cached = lp._parse_head_fast(head)
    try:
        measurement, tags, end = lp._scan_head(head, 0, 1)
    except LineProtocolError:
        assert cached is None
        return
    if end == len(head):
        assert cached == (measurement, tags)
    else:
        assert cached is None


TOKENS = st.one_of(
    st.text(st.sampled_from(list("0123456789.-+eEiutrTRfalsFALS_ x\u0661")), min_size=1, max_size=12),
    st.text(min_size=1, max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: f"{n}{'iu'[n % 2]}"),
    st.floats().map(repr),
)


@SETTINGS
@given(TOKENS)
def test_fast_value_converter_agrees_with_strict_one(token: str) -> None:
    fast = lp._value_fast(token)
    try:
        strict = lp._value_strict(token)
    except lp._BadValue:
        assert fast is None
    else:
        assert fast is not None
        assert (type(fast), fast) == (type(strict), strict)


# --------------------------------------------------------------------------------------------
# Column-wise parsing: TableParser / parse_tables must agree with parse() plus the row rule

_KINDS = {float: "number", int: "number", bool: "boolean", str: "string"}


def reference_tables(points: list[tuple[int, Line]]) -> list[tuple[str, int, list, dict]]:
    """The documented rule, written plainly from parse()'s Lines: one table per measurement; a
    line fills the table's last row when the time is equal and its fields are free there."""
    tables: dict[str, tuple[str, int, list, dict]] = {}
    for lineno, p in points:
        _name, _first, times, cols = tables.setdefault(p.measurement, (p.measurement, lineno, [], {}))
        row = len(times) - 1
        free = row >= 0 and times[row] == p.time_ms and all(
            not cols.get((p.tags, k)) or cols[(p.tags, k)][1][-1] != row for k, _ in p.fields
        )
        if not free:
            times.append(p.time_ms)
            row += 1
        for key, value in p.fields:
            kind, rows, values = cols.setdefault((p.tags, key), (_KINDS[type(value)], [], []))
            if kind != _KINDS[type(value)]:
                raise LineProtocolError(f"kind change of {key!r}", lineno, 1)
            rows.append(row)
            values.append(value)
    return list(tables.values())


def table_view(tables: list[lp.Table]) -> list[tuple[str, int, list, dict]]:
    return [
        (t.measurement, t.first_line, t.times,
         {k: (c.kind, c.rows, typed_values(c.values)) for k, c in t.columns.items()})
        for t in tables
    ]


def typed_values(values: list[Value]) -> list[tuple[type, Value]]:
    return [(type(v), v) for v in values]


def expected_view(body: str, precision: str = "ns") -> list[tuple[str, int, list, dict]]:
    points: list[tuple[int, Line]] = []
    for lineno, text in enumerate(body.split("\n"), 1):
        point = parse_line(text, precision, lineno)
        if point is not None:
            points.append((lineno, point))
            reference_tables(points)  # the first problem of any kind, in line order
    return [(m, f, t, {k: (kind, rows, typed_values(vals)) for k, (kind, rows, vals) in c.items()})
            for m, f, t, c in reference_tables(points)]


def assert_tables_agree(body: str, precision: str = "ns") -> None:
    failure: LineProtocolError | None = None
    try:
        want = expected_view(body, precision)
    except LineProtocolError as err:
        failure = err
    if failure is None:
        assert table_view(lp.parse_tables(body, precision)) == want
        return
    with pytest.raises(LineProtocolError) as info:
        lp.parse_tables(body, precision)
    assert info.value.line == failure.line
    if "kind change" not in failure.reason:  # a grammar error: the very same error as parse()
        assert (info.value.column, info.value.reason) == (failure.column, failure.reason)


def test_tables_group_by_measurement_and_tag_set() -> None:
    body = "cpu,host=a u=1 1000000\ncpu,host=b u=2 2000000\nmem,host=a free=3i 1000000\ncpu,host=a u=4 3000000\n"
    cpu, mem = lp.parse_tables(body)
    assert (cpu.measurement, cpu.first_line, cpu.lines, cpu.times) == ("cpu", 1, 3, [1, 2, 3])
    a = cpu.columns[((("host", "a"),), "u")]
    b = cpu.columns[((("host", "b"),), "u")]
    assert (a.rows, a.values, a.dense(3)) == ([0, 2], [1.0, 4.0], [1.0, None, 4.0])
    assert (b.rows, b.dense(3)) == ([1], [None, 2.0, None])
    assert (mem.times, mem.columns[((("host", "a"),), "free")].values) == ([1], [3])


def test_one_gather_shares_a_row_and_a_repeated_series_starts_a_new_one() -> None:
    body = (
        "cpu,cpu=cpu0 user=1,sys=2 5000000\n"
        "cpu,cpu=cpu1 user=3,sys=4 5000000\n"  # same time, other series: same row
        "cpu,cpu=cpu0 user=5 5000000\n"  # same time, same series again: a new row, nothing lost
        "cpu,cpu=cpu1 user=6 6000000\n"
    )
    (cpu,) = lp.parse_tables(body)
    assert cpu.times == [5, 5, 6] and cpu.lines == 4
    assert cpu.columns[((("cpu", "cpu0"),), "user")].dense(3) == [1.0, 5.0, None]
    assert cpu.columns[((("cpu", "cpu1"),), "user")].dense(3) == [3.0, None, 6.0]
    assert cpu.columns[((("cpu", "cpu1"),), "sys")].dense(3) == [4.0, None, None]


def test_tag_order_spellings_share_columns_without_overwriting() -> None:
    (m,) = lp.parse_tables("m,a=1,b=2 v=1 1000000\nm,b=2,a=1 v=2 1000000\n")
    col = m.columns[((("a", "1"), ("b", "2")), "v")]
    assert (m.times, col.rows, col.values) == ([1, 1], [0, 1], [1.0, 2.0])


def test_kind_change_in_a_body_names_the_line() -> None:
    with pytest.raises(LineProtocolError) as info:
        lp.parse_tables('m v=1 1\nm v=2 2\nm v="x" 3\n')
    assert info.value.line == 3 and "string here but a number" in info.value.reason


def test_untimed_lines_and_slow_path_lines_mix_with_fast_ones() -> None:
    body = 'm v=1\nm,t=a\\ b v=2\nm s="x y",v=3 7000000\n# comment\n\n'
    (m,) = lp.parse_tables(body)
    assert m.untimed and m.times == [None, 7] and m.lines == 3
    assert m.columns[((), "v")].dense(2) == [1.0, 3.0]
    assert m.columns[((("t", "a b"),), "v")].dense(2) == [2.0, None]


def test_feeding_slices_equals_one_shot() -> None:
    body = "".join(f"m,h=h{i % 3} v={i} {1_000_000 * (i // 3)}\n" for i in range(100))
    parser = lp.TableParser("ns")
    lines_ = body.split("\n")
    for start in range(0, len(lines_), 7):
        parser.feed(lines_[start:start + 7], start + 1)
    assert table_view(parser.tables) == table_view(lp.parse_tables(body)) == expected_view(body)
    assert parser.lines == 100


@SETTINGS
@given(st.lists(GRAMMARISH, max_size=6), st.sampled_from(list(PRECISIONS)))
def test_fuzz_tables_agree_with_parse(texts: list[str], precision: str) -> None:
    assert_tables_agree("\n".join(t.replace("\n", " ") for t in texts), precision)


SERIES_LINES = st.tuples(
    st.sampled_from(["cpu", "mem", "c\\ pu"]),
    st.lists(st.sampled_from(["host=a", "host=b", "cpu=0", "cpu=1", "z=x\\,y"]), max_size=2, unique=True),
    st.lists(st.sampled_from(["u=1", "u=2i", "s=3", 'u="x"', "b=t", "s=-1.5e3"]), min_size=1, max_size=3),
    st.sampled_from(["", " 1000000", " 1000000", " 2000000", " -1000000"]),
).map(lambda p: p[0] + "".join("," + t for t in p[1]) + " " + ",".join(p[2]) + p[3])


@SETTINGS
@given(st.lists(SERIES_LINES, max_size=12), st.sampled_from(["ns", "ms"]))
def test_generated_series_bodies_agree_with_parse(texts: list[str], precision: str) -> None:
    assert_tables_agree("\n".join(texts) + "\n", precision)
