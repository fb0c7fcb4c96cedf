"""The line-protocol parser: grammar (Telegraf's), errors with line and column, tables.

InfluxData's own parser test cases are in tests/corpus (test_lp_corpus.py); these are ours.
"""

import math
import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from livedata.core import lineprotocol as lp
from livedata.core.limits import MAX_FIELD_CHARS, MAX_LABELS
from livedata.core.lineprotocol import PRECISIONS, Line, LineProtocolError, Value, parse
from tests.unit.lp_encoder import encode_line

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one(text: str, precision: str = "ns") -> Line:
    points = parse(text, precision)
    assert len(points) == 1
    return points[0]


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


def test_empty_body_blank_lines_and_comments_hold_no_points() -> None:
    assert parse("") == []
    assert parse("\n\n  \n\t\n") == []
    assert parse("# only a comment") == []  # InfluxDB answers 204 to such a body, and so do we
    assert parse("# one\n  # two\r\n\n") == []
    assert parse("#m v=1") == []  # a measurement cannot start with '#': the line is a comment
    body = "# header\r\n\r\ncpu v=1 1000000\r\n  # indented comment\r\ncpu v=2 2000000\r\n"
    assert [(p.fields, p.time_ms) for p in parse(body)] == [((("v", 1.0),), 1), ((("v", 2.0),), 2)]


def test_comment_lines_count_for_line_numbers() -> None:
    err = error("# one\n\ncpu v=1\n# four\ncpu v=abc")
    assert (err.line, err.column) == (5, 7)


def test_whitespace_is_spaces_tabs_vertical_tabs_and_form_feeds() -> None:
    expected = Line("m", (("t", "x"),), (("v", 1.0),), 7)
    assert one("   m,t=x   v=1    7000000   ") == expected
    assert one("\tm,t=x\tv=1\v7000000\f") == expected
    assert parse("m,t=x  v=1  7000000 \r\n") == [expected]
    err = error("cpu\tx,t=a\tb v=1")  # a tab ends the measurement: 'x,t=a' is then a field key
    assert err.line == 1


def test_crlf_and_a_lone_carriage_return() -> None:
    assert parse("m v=1\r\nm v=2\r\n") == [Line("m", (), (("v", 1.0),), None), Line("m", (), (("v", 2.0),), None)]
    assert parse("m v=1\r") == [Line("m", (), (("v", 1.0),), None)]  # at the very end, as Telegraf
    err = error("m v=1\rx")
    assert (err.line, err.column) == (1, 6)
    assert "'\\r'" in err.reason


def test_measurement_may_contain_equals_quotes_and_hash() -> None:
    assert one("a=b v=1").measurement == "a=b"
    assert one("c#1 v=1").measurement == "c#1"
    point = one('"m",t="x" "f"=1')
    assert (point.measurement, point.tags, point.fields) == ('"m"', (("t", '"x"'),), (('"f"', 1.0),))


def test_any_printable_unicode_in_names() -> None:
    point = one("température,pièce=salle\\ de\\ bain valeur=21.5,ünïcødé✓=1i")
    assert point.measurement == "température"
    assert point.tags == (("pièce", "salle de bain"),)
    assert point.fields == (("valeur", 21.5), ("ünïcødé✓", 1))
    assert one("job:http_requests:rate5m value=1").measurement == "job:http_requests:rate5m"


def test_repeated_keys_keep_their_place_and_take_the_last_value() -> None:
    point = one("m,a=1,b=2,a=3 x=1,y=2,x=3i")
    assert point.tags == (("a", "3"), ("b", "2"))
    assert typed(point.fields) == [("x", int, 3), ("y", float, 2.0)]
    assert one('m x=1,x="s"').fields == (("x", "s"),)


# --------------------------------------------------------------------------------------------
# Escapes (each expectation checked against Telegraf's parser)


@pytest.mark.parametrize(
    ("text", "measurement"),
    [
        (r"my\,m v=1", "my,m"),
        (r"my\ m v=1", "my m"),
        (r"my\=m v=1", r"my\=m"),  # '=' needs no escape in a measurement: the backslash stays
        (r"my\xm v=1", r"my\xm"),
        (r"my\\m v=1", r"my\\m"),
        (r"my\\\,m v=1", r"my\\,m"),
        (r"\ m v=1", " m"),
        (r"\#m v=1", r"\#m"),
        (r"c\ pu\ load v=1", "c pu load"),
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
        (r"m,k=a\\\ b v=1", (("k", r"a\\ b"),)),
        (r"m,k=a\\,b v=1", (("k", r"a\,b"),)),  # a backslash, then an escaped comma
        (r"m,k=a\\b v=1", (("k", r"a\\b"),)),
        (r"m,k=\ ,j=\, v=1", (("j", ","), ("k", " "))),
        (r"m,k=a\"b v=1", (("k", r"a\"b"),)),
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
        (r"m a\\\==1", r"a\\="),
        (r"m a\\b=1", r"a\\b"),
    ],
)
def test_field_key_escapes(text: str, key: str) -> None:
    assert one(text).fields[0][0] == key


def test_two_backslashes_before_a_separator() -> None:
    assert error(r"my\\,m v=1").column == 7  # in a measurement '\\' is a pair: ',' starts a tag 'm'
    assert error(r"m a\\==1").reason.startswith("invalid field value '=1'")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('"hello world"', "hello world"),
        ('"a,b=c d"', "a,b=c d"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"ends with \\"', "ends with \\"),
        (r'"\\\""', '\\"'),
        ('""', ""),
        ('"# not a comment"', "# not a comment"),
        ('"t"', "t"),
        ('"12i"', "12i"),
        ('"tab\there"', "tab\there"),
        ('"ünïcødé ✓"', "ünïcødé ✓"),
        ('"line one\nline two"', "line one\nline two"),
        ('"crlf\r\ninside"', "crlf\r\ninside"),
        ('"\n"', "\n"),
        ('"nul\x00"', "nul\x00"),  # string values may hold anything; names may not
    ],
)
def test_string_field_values(raw: str, value: str) -> None:
    body = f"m,t=x s={raw},n=1i 1000000\nm n=2i"
    first, second = parse(body)
    assert typed(first.fields) == [("s", str, value), ("n", int, 1)]
    assert first.time_ms == 1
    assert second.fields == (("n", 2),)


def test_a_backslash_in_a_string_must_escape_something() -> None:
    err = error(r'm s="C:\path"')
    assert (err.line, err.column) == (1, 8)
    assert "backslash" in err.reason and "\\\\" in err.reason
    assert error('m s="\\n"').column == 6  # no \n escape (InfluxDB 2's parser has one; Telegraf's has not)


def test_strings_across_lines_keep_line_numbers_right() -> None:
    body = 'a s="one\ntwo\nthree",v=1 1000000\nb v=2 2000000\nc v=oops'
    err = error(body)
    assert (err.line, err.column) == (5, 5)
    assert [p.measurement for p in parse(body.replace("oops", "3"))] == ["a", "b", "c"]
    err = error('x v=1\ny s="open\nz v=1')
    assert (err.line, err.column) == (2, 5)
    assert err.reason.startswith("unterminated string value for field 's'")


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
        ("1.e5", 1e5),
        ("1E5", 1e5),
        ("1e+5", 1e5),
        ("1e-5", 1e-5),
        ("-0", -0.0),
        ("007", 7.0),
        ("1e-400", 0.0),
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
        "abc", "tRue", "yes", "+1", "1_000", "inf", "-inf", "nan", "NaN", "Infinity", "0x10", "1e", ".", "-",
        "e5", ".e5", "1.2.3", "--1", "1-2",
        "\u0661\u0662",  # Arabic-Indic digits: float() and int() accept them, line protocol does not
        "\uff11",  # fullwidth digit one
        "i", "u", "-i", "1.5i", "+1i", "1_0i", "--1i", "1-1i", "007i", "00i", "-01i", "-1u", "+1u", "1.0u", "01u",
        "\uff11u", "1iu", "'x'", "1=2",
    ],
)
def test_invalid_values(raw: str) -> None:
    err = error(f"m v={raw}")
    assert err.reason == (
        f"invalid field value {raw!r} for field 'v' (expected a number, 12i, 12u, \"string\" or true/false)"
    )
    assert err.column == 5
    assert error(f'm s="x",v={raw}').column == 11


def test_invalid_value_message() -> None:
    err = error("m temp=1\nm temp=2\nm,host=a temp=abc 1")
    assert str(err) == (
        "line 3, column 15: invalid field value 'abc' for field 'temp' "
        "(expected a number, 12i, 12u, \"string\" or true/false)"
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
        ("ns", "-0", 0),
        ("ns", "0000000000000000001", 0),
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


@pytest.mark.parametrize(
    "raw", ["12a", "1.5", "+5", "1e9", "--5", "5-", "-", "\uff10", "0x10", "1_000", "00000000000000000001"]
)
def test_bad_timestamp(raw: str) -> None:
    err = error(f"m v=1 {raw}")
    assert err.reason == f"invalid timestamp {raw!r} (expected an integer number of nanoseconds, at most 19 digits)"
    assert err.column == 7
    assert "seconds, at" in error(f"m v=1 {raw}", "s").reason


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
        assert err.reason == (
            f"timestamp {raw!r} is out of range (times must fit a 64-bit count of nanoseconds: years 1677 to 2262)"
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
    for call in (lambda: parse("", "min"), lambda: lp.TableParser("sec")):
        with pytest.raises(ValueError, match=r"unknown precision .* \(expected one of ns, us, ms, s, m, h\)") as info:
            call()
        assert not isinstance(info.value, LineProtocolError)
    assert set(PRECISIONS) == {"ns", "us", "ms", "s", "m", "h"}


# --------------------------------------------------------------------------------------------
# Names: printable, bounded


@pytest.mark.parametrize(
    ("text", "column", "what"),
    [
        ("m\x00 v=1", 2, "measurement name"),
        ("m,k\x01=v v=1", 4, "tag key"),
        ("m,k=v\x7f v=1", 6, "value of tag 'k'"),
        ("m a\x1fb=1", 4, "field key"),
        ("m,k=a\\\x02 v=1", 7, "value of tag 'k'"),  # escaped, still a control character
        ("m a\u2028=1", 4, "field key"),
        ("m a\x85=1", 4, "field key"),  # C1 control
    ],
)
def test_control_characters_in_names(text: str, column: int, what: str) -> None:
    variants = [(text, column)]
    if what == "field key":  # the scanner path too: a string field first
        variants.append((text.replace(" ", ' s="x",', 1), column + 6))
    for body, col in variants:
        err = error("ok v=1\n" + body)
        assert (err.line, err.column) == (2, col)
        assert err.reason.startswith(what)
        assert "control character" in err.reason


def test_name_lengths_are_capped() -> None:
    long = "k" * (MAX_FIELD_CHARS + 1)
    assert "the limit is 256" in error(f"m {long}=1").reason
    assert "the limit is 256" in error(f"m,{long}=v v=1").reason
    assert "the limit is 256" in error(f"m,k={long} v=1").reason
    assert len(one(f"m {long[1:]}=1").fields[0][0]) == MAX_FIELD_CHARS
    many = ",".join(f"t{i}=v" for i in range(MAX_LABELS + 1))
    assert f"more than {MAX_LABELS} tags" in error(f"m,{many} v=1").reason
    assert "the limit is 256" in error("m" * 257 + " v=1").reason


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "reason", "column"),
    [
        ("cpu", "missing fields (expected a space and then field_key=value)", 4),
        ("cpu   ", "missing fields (expected field_key=value after the space)", 7),
        ("cpu,host=a", "missing fields (expected a space and then field_key=value)", 11),
        (r"cpu\ x", "missing fields (expected a space and then field_key=value)", 7),
        ("cpu v", "missing '=' and value after field key 'v'", 6),
        ("cpu v=", "missing value for field 'v'", 7),
        ("cpu v=1,", "empty field key", 9),
        ("cpu v=1,,w=2", "empty field key", 9),
        ("cpu =1", "empty field key", 5),
        ("cpu v=1,=2", "empty field key", 9),
        ("cpu,=a v=1", "empty tag key", 5),
        ("cpu,host= v=1", "empty value for tag 'host'", 10),
        ("cpu,host v=1", "missing '=' after tag key 'host'", 9),
        ("cpu,host=a=b v=1", "unescaped '=' in the value of tag 'host' (write it as \\=)", 11),
        ("cpu,host=a, v=1", "empty tag key", 12),
        (",host=a v=1", "missing measurement name before ','", 1),
        ("  ,host=a v=1", "missing measurement name before ','", 3),
        ("cu\\", "unexpected '\\\\' after the measurement and tags (expected a space and then fields)", 3),
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
    assert str(err) == f"line 2, column {column}: {reason}"


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


# --------------------------------------------------------------------------------------------
# Bodies as bytes


def test_decode_utf8_bom_and_invalid_bytes() -> None:
    assert lp.decode(b"m v=1\n") == "m v=1\n"
    assert lp.decode(b"\xef\xbb\xbfm v=1") == "m v=1"  # a byte-order mark is dropped
    with pytest.raises(LineProtocolError) as info:
        lp.decode("ok v=1\nm,k=é v=1,s=\"".encode() + b"\xff\xfe" + b'"\n')
    assert (info.value.line, info.value.column) == (2, 14)
    assert "byte 0xff" in info.value.reason
    with pytest.raises(LineProtocolError) as info:
        lp.decode(b"m v=1\n\xed\xa0\x80 v=1")  # an encoded surrogate is not UTF-8
    assert (info.value.line, info.value.column) == (2, 1)


def test_head_cache_is_bounded_and_correct() -> None:
    body = "\n".join(f"m,host=h{i} v={i}" for i in range(lp._HEAD_CACHE_MAX + 100))
    points = parse(body)
    assert len(lp._HEAD_CACHE) <= lp._HEAD_CACHE_MAX
    assert points[-1].tags == (("host", f"h{lp._HEAD_CACHE_MAX + 99}"),)
    assert all(p.tags == (("host", f"h{i}"),) for i, p in enumerate(points))
    long_head = "m,k=" + "x" * (lp._HEAD_CACHE_MAX_LEN - 3)  # a 257-character head
    assert parse(f"{long_head} v=1\n{long_head} v=2")[1].tags == (("k", long_head[4:]),)
    assert long_head not in lp._HEAD_CACHE
    # Cached heads are reused by both paths.
    assert parse('m,host=h5 v=1\nm,host=h5 v="x"') == [
        Line("m", (("host", "h5"),), (("v", 1.0),), None),
        Line("m", (("host", "h5"),), (("v", "x"),), None),
    ]


# --------------------------------------------------------------------------------------------
# Properties

SPECIAL = st.sampled_from(list(',= \\"#é✓'))
CHARS = st.one_of(SPECIAL, st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")))
TEXT = st.text(st.one_of(CHARS, st.sampled_from(list("\n\r\t\x00\x7f\u2028"))), max_size=12)
# Names line protocol can carry: a backslash never ends a name nor comes before an escaped
# character, since the grammar would read it as part of an escape.
NAME = st.text(CHARS, min_size=1, max_size=12).map(lambda s: s.replace("\\", "\\x"))
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
    measurement = draw(NAME)
    if measurement.startswith("#"):
        measurement = "m" + measurement
    return Line(measurement, tuple(sorted(tags.items())), tuple(fields.items()), draw(TIMES))


def encodable(line: Line, precision: str = "ms") -> str:
    try:
        return encode_line(line, precision)
    except ValueError:
        assume(False)
        raise


@SETTINGS
@given(lines(), st.sampled_from(["ms", "ns", "us"]))
def test_round_trip(line: Line, precision: str) -> None:
    text = encodable(line, precision)
    (back,) = parse(text, precision)
    assert back == line
    assert typed(back.fields) == typed(line.fields)


@SETTINGS
@given(st.lists(lines(), max_size=5), st.sampled_from(["\n", "\r\n"]))
def test_round_trip_body(points: list[Line], newline: str) -> None:
    body = newline.join(encodable(p) for p in points) + newline
    assert parse(body, "ms") == points


@SETTINGS
@given(lines())
def test_round_trip_seconds_floors_time(line: Line) -> None:
    assume(line.time_ms is None or line.time_ms >= -9223372036000)
    (back,) = parse(encodable(line, "s"), "s")
    assert back.time_ms == (None if line.time_ms is None else line.time_ms // 1000 * 1000)


PIECES = st.sampled_from(
    [
        "cpu", "m", ",", "=", " ", "  ", "\\", '"', "#", "\r", "\t", "\v", "host", "a", "v", "1", "12.5", "-", ".",
        "e", "E", "+", "i", "u", "t", "true", "FALSE", "0", "00", "1700000000000000000", "9223372036854775808",
        "18446744073709551616", "1e400", "_", "é", "\u0661", "\x00", "\n", "\r\n",
    ]
)
# Near-valid lines: the right structure, made of pieces that are often (not always) valid.
PLAIN_WORD = st.sampled_from(["a", "b", "host", "t", "é", "x1"])
ODD_WORD = st.lists(
    st.sampled_from(["a", "b", "\\", "\\,", "\\ ", "\\=", "\\\\", ",", "=", " ", '"', "#", "\t"]),
    max_size=3,
).map("".join)
WORD = st.one_of(PLAIN_WORD, PLAIN_WORD, PLAIN_WORD, ODD_WORD)
GOOD_VALUES = [
    "1", "12.5", "-1.5e3", "1.", ".5", "3i", "-3i", "3u", "t", "FALSE", '"a b"', '"x\\"y"', '"a,b=c"', '"\\\\"',
    '"two\nlines"',
]
BAD_VALUES = ["+1", "-3u", "tRue", "abc", "1e400", "9223372036854775808i", "", '"', '""x', "1 2", "007i", '"\\x"']
VALUE_TOKENS = st.one_of(st.sampled_from(GOOD_VALUES), st.sampled_from(GOOD_VALUES), st.sampled_from(BAD_VALUES))
EQ = st.sampled_from(["=", "=", "=", "=", "=", "", "=="])
FIELD = st.tuples(WORD, EQ, VALUE_TOKENS).map("".join)
TAG = st.tuples(WORD, EQ, WORD).map("".join)
HEAD = st.tuples(WORD, st.lists(TAG, max_size=3)).map(lambda h: h[0] + "".join("," + t for t in h[1]))
STRUCTURED = st.tuples(
    st.sampled_from(["", "", "", " ", "#", "\t"]),
    HEAD,
    st.sampled_from([" ", " ", " ", "  ", "", "\t"]),
    st.lists(FIELD, min_size=1, max_size=3).map(",".join),
    st.sampled_from(["", " 1700000000000000000", " -1", " 0", " 12a", "  5", " 9223372036854775808", " 1 2"]),
    st.sampled_from(["", "", " ", "\r"]),
).map("".join)
GRAMMARISH = st.one_of(STRUCTURED, STRUCTURED, st.lists(PIECES, max_size=25).map("".join), st.text(max_size=40))


def scan_all(body: str, precision: str = "ns") -> list[Line]:
    """The body read by the scanner alone, line by line (no fast path, no head cache)."""
    out: list[Line] = []
    i = 0
    while i <= len(body):
        try:
            point, end = lp._scan(body, i, PRECISIONS[precision])
        except lp._Bad as exc:
            raise lp._error_at(body, exc.index, exc.reason) from None
        if point is not None:
            out.append(Line(point[0], point[1], tuple(point[2].items()), point[3]))
        i = end + 1
    return out


@SETTINGS
@given(st.lists(GRAMMARISH, max_size=6), st.sampled_from(list(PRECISIONS)))
def test_fuzz_fast_path_agrees_with_scanner(texts: list[str], precision: str) -> None:
    body = "\n".join(texts)
    lp._HEAD_CACHE.clear()
    failure: LineProtocolError | None = None
    try:
        want = scan_all(body, precision)
    except LineProtocolError as exc:
        failure = exc
    if failure is None:
        got = parse(body, precision)
        assert got == want
        assert [typed(p.fields) for p in got] == [typed(p.fields) for p in want]
    else:
        err = error(body, precision)
        assert (err.line, err.column, err.reason) == (failure.line, failure.column, failure.reason)
        assert 1 <= err.line <= body.count("\n") + 1


@SETTINGS
@given(GRAMMARISH, st.sampled_from(list(PRECISIONS)))
def test_fuzz_only_line_protocol_errors(text: str, precision: str) -> None:
    failure: LineProtocolError | None = None
    try:
        result = parse(text, precision)
    except LineProtocolError as exc:
        failure = exc
    if failure is not None:
        lines_ = text.split("\n")
        assert 1 <= failure.line <= len(lines_)
        assert 1 <= failure.column <= len(lines_[failure.line - 1]) + 1
        assert str(failure).startswith(f"line {failure.line}, column {failure.column}: ")
        return
    for point in result:
        try:
            text2 = encode_line(point, "ms")
        except ValueError:
            continue
        assert parse(text2, "ms") == [point]  # whatever parses re-encodes to the same point


TOKENS = st.one_of(
    st.text(st.sampled_from(list("0123456789.-+eEiutrTRfalsFALS_ x\u0661")), min_size=1, max_size=12),
    st.text(min_size=1, max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: f"{n}{'iu'[n % 2]}"),
    st.floats().map(repr),
)

_FLOAT_RE = __import__("re").compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE = __import__("re").compile(r"-?(?:0|[1-9][0-9]*)i")
_UINT_RE = __import__("re").compile(r"(?:0|[1-9][0-9]*)u")


@SETTINGS
@given(TOKENS)
def test_value_grammar_matches_the_written_grammar(token: str) -> None:
    """``_value`` against the grammar as Telegraf's parser writes it (regular expressions)."""
    try:
        got: Value | None = lp._value(token)
    except lp._BadValue:
        got = None
    if _FLOAT_RE.fullmatch(token):
        f = float(token)
        assert got == (f if abs(f) != float("inf") else None)
        assert got is None or type(got) is float
    elif _INT_RE.fullmatch(token):
        n = int(token[:-1])
        assert got == (n if -(2**63) <= n < 2**63 else None)
    elif _UINT_RE.fullmatch(token):
        n = int(token[:-1])
        assert got == (n if n < 2**64 else None)
    elif token in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
        assert got is (token[0] in "tT")
    else:
        assert got is None


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
    i = 0
    while i <= len(body):  # the scanner alone, point by point, so the first problem of any kind wins
        try:
            point, end = lp._scan(body, i, PRECISIONS[precision])
        except lp._Bad as exc:
            raise lp._error_at(body, exc.index, exc.reason) from None
        if point is not None:
            points.append((body.count("\n", 0, i) + 1, Line(point[0], point[1], tuple(point[2].items()), point[3])))
            reference_tables(points)
        i = end + 1
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


def test_parsing_in_slices_pauses_and_equals_one_shot() -> None:
    body = "".join(f"m,h=h{i % 3} v={i} {1_000_000 * (i // 3)}\n" for i in range(100))
    body += 'm s="a string\nacross\nslices",v=1\n' * 5
    parser = lp.TableParser("ns")
    pauses = list(parser.slices(body, 7))
    lines = len(body.split("\n"))
    # A pause every 7 lines of work; each of the 4 series (h0, h1, h2 and the untagged m) counts
    # SERIES_COST lines more when it starts.
    assert pauses == sorted(pauses) and lines // 7 <= len(pauses) <= (lines + 4 * lp.SERIES_COST) // 7
    assert table_view(parser.tables) == table_view(lp.parse_tables(body)) == expected_view(body)
    assert parser.lines == 105


def test_lines_that_start_series_make_slices_shorter() -> None:
    """A slice is work, not lines: 8,000 lines of distinct tag sets held the loop 90 ms in one
    slice of PARSE_SLICE_LINES; lines that each start a series pause about SERIES_COST times as often."""
    same = "".join(f"m,h=a v={i} {i}\n" for i in range(4000))
    distinct = "".join(f"m,h=h{i} v={i} {i}\n" for i in range(4000))
    few = list(lp.TableParser("ns").slices(same, 100))
    many = list(lp.TableParser("ns").slices(distinct, 100))
    assert 39 <= len(few) <= 40 and len(many) >= 39 * lp.SERIES_COST
    assert many[-1] < 4000 and few[-1] < 4000


def test_kind_change_error_has_a_column() -> None:
    with pytest.raises(LineProtocolError) as info:
        lp.parse_tables('m a=1,v=1 1\nm a=2,v="x" 2\n')
    assert (info.value.line, info.value.column) == (2, 7)


@SETTINGS
@given(st.lists(GRAMMARISH, max_size=6), st.sampled_from(list(PRECISIONS)))
def test_fuzz_tables_agree_with_parse(texts: list[str], precision: str) -> None:
    assert_tables_agree("\n".join(texts), precision)


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


# --------------------------------------------------------------------------------------------
# The plain path (whole slices of plain lines at once) against the line path


def full_view(tables: list[lp.Table]) -> list[tuple[object, ...]]:
    """Everything a table holds, column order, value types and the sign of zero included."""
    return [
        (t.measurement, t.first_line, t.lines, t.untimed, t.times,
         [(k, c.tags, c.key, c.kind, c.rows, [(type(v), repr(v)) for v in c.values]) for k, c in t.columns.items()])
        for t in tables
    ]


def both_paths(body: str, precision: str = "ns", size: int = lp.PARSE_SLICE_LINES) -> list[tuple[object, ...]]:
    """The body read with and without the plain path: the same tables, or the same error."""
    views: list[object] = []
    for plain in (True, False):
        parser = lp.TableParser(precision, plain=plain)
        try:
            for _ in parser.slices(body, size):
                pass
            views.append(full_view(parser.tables))
        except LineProtocolError as exc:
            views.append((exc.line, exc.column, exc.reason))
    assert views[0] == views[1]
    return views[0]  # type: ignore[return-value]


PLAIN_HEAD = st.tuples(
    st.sampled_from(["cpu", "mem", "température", "job:rate5m", "m"]),
    st.lists(st.sampled_from(["host=a", "host=b", "cpu=0", "region=eu"]), max_size=3, unique=True),
).map(lambda h: h[0] + "".join("," + t for t in h[1]))
PLAIN_FIELD = st.sampled_from([
    "v=1", "v=2.5", "v=-1.5e-3", "v=-0", "v=-0.0", "v=1e400", "v=01", "v=.5", "v=1.", "v=1e5", "v=+1",
    "u=3i", "u=7u", "u=1", "u=-0i", "b=t", "b=FALSE", "b=1", "w=12", "w=1..2", "w=-", "w=", "=1", "w=1=2",
    "x\u00e9=4", "k=nan", "k=inf",
])
PLAIN_STAMP = st.sampled_from([
    " 1000000", " 1000000", " 2000000", " 3000000", " -1000000", " 0", " 007", " 9223372036854775807",
    " 9223372036854775808", " -9223372036854775808", " 1,2", " 1e5", " -", " 1-2", "", "  5", " 5 ",
    " 00000000000000000001", " -0000000000000000001",
])
PLAIN_LINE = st.one_of(
    st.tuples(PLAIN_HEAD, st.lists(PLAIN_FIELD, min_size=1, max_size=3).map(",".join), PLAIN_STAMP)
    .map(lambda p: f"{p[0]} {p[1]}{p[2]}"),
    st.sampled_from(["", "# a comment", "m,host=a v=1 1 2", "m,,host=a v=1 1", "m,host= v=1 1", " m v=1 1"]),
)
SIMPLE_LINE = st.tuples(  # always valid: the plain path takes every slice of these
    st.sampled_from(["cpu", "cpu,host=a", "cpu,host=b", "mem,host=a", "cpu,region=eu,host=a", "cpu,host=a,region=eu"]),
    st.lists(st.sampled_from(["v=1", "u=2.5", "w=-3e2", "v=4"]), min_size=1, max_size=3, unique=True).map(",".join),
    st.sampled_from(["1000000", "2000000", "3000000", "2000000"]),
).map(" ".join)


@SETTINGS
@given(st.lists(PLAIN_LINE, max_size=12), st.sampled_from(list(PRECISIONS)), st.sampled_from([1, 2, 3, 2048]),
       st.booleans(), st.sampled_from(["", "", "m v=1 1000000\n", "cpu,host=a u=2 0\n"]))
def test_plain_path_agrees_with_line_path(texts: list[str], precision: str, size: int, newline: bool,
                                          first: str) -> None:
    # ``first``: a line of one field, so that the plain path is tried on what follows
    both_paths(first + "\n".join(texts) + ("\n" if newline else ""), precision, size)


@SETTINGS
@given(st.lists(SIMPLE_LINE, min_size=1, max_size=30), st.sampled_from([1, 4, 2048]))
def test_plain_path_agrees_on_valid_bodies(texts: list[str], size: int) -> None:
    body = "cpu v=0 1000000\n" + "\n".join(texts) + "\n"
    view = both_paths(body, "ns", size)
    assert isinstance(view, list) and sum(t[2] for t in view) == len(texts) + 1  # type: ignore[misc]
    assert full_view(lp.parse_tables(body)) == view
    assert table_view(lp.parse_tables(body)) == expected_view(body)


def test_plain_path_takes_the_usual_bodies() -> None:
    """Bodies of one field per line (one measurement or several, times repeated by a gather) are
    read by the plain path; a body whose first line has several fields goes to the line path,
    which reads those as fast (measured in benchmarks/lp_parsers.py)."""
    t0 = 1_700_000_000_000_000_000
    bodies = [
        ("".join(f"m,host=h{i % 10} value={i / 10} {t0 + i * 1_000_000}\n" for i in range(5000)), "ns", True),
        ("".join(f"cpu,cpu=cpu{i % 4} user={i}.5 {1_700_000_000 + i // 4}\n"
                 f"mem,host=a used={i}i {1_700_000_000 + i // 4}\n" for i in range(1000)), "s", True),
        ("".join(f"temp,room=r{i % 3} c=2{i % 10}.5 {t0 + i * 1_000_000}\n" for i in range(30))
         + "temp,room=r1 c=1,h=40 99\n", "ns", True),  # a later line of two fields: still plain
        ("".join(f"cpu,cpu=cpu{i % 4} user={i}.5,system=2,idle=97.5 {1_700_000_000 + i // 4}\n"
                 for i in range(400)), "s", False),
    ]
    for body, precision, plain in bodies:
        parser = lp.TableParser(precision)
        taken = spy_on_plain(parser)
        for _ in parser.slices(body, 2048):
            pass
        assert (bool(taken) and all(taken)) == plain
        assert full_view(parser.tables) == both_paths(body, precision)


def spy_on_plain(parser: lp.TableParser) -> list[bool]:
    """What each call of the parser's plain path answered."""
    taken: list[bool] = []
    plain = parser._plain

    def spy(*args: object) -> bool:
        taken.append(plain(*args))  # type: ignore[arg-type]
        return taken[-1]

    parser._plain = spy  # type: ignore[method-assign]
    return taken


@SETTINGS
@given(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.sampled_from(["", "-"]), st.integers(0, 10**30), st.integers(0, 10**30),
              st.sampled_from(["", "e", "E", "e-", "e+"]), st.integers(0, 400))
    .map(lambda p: f"{p[0]}{p[1]}.{p[2]}" + (f"{p[3]}{p[4]}" if p[3] else "")),
    st.integers(-(10**30), 10**30).map(str),
))
def test_msgspec_reads_numbers_as_float_does(token: str) -> None:
    """The plain path reads floats with msgspec's JSON decoder: it must agree with float()."""
    try:
        got = lp._FLOATS.decode(f"[{token}]")[0]
    except Exception:  # out of range: the plain path then asks float() itself
        return
    want = float(token)
    assert got == want
    assert math.copysign(1, got) == math.copysign(1, want) or token == "-0"  # the plain path checks -0 itself
