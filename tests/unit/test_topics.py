"""MQTT topic filters and channel templates."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livedata.core.topics import ChannelTemplate, TemplateError, check_filter, topic_matches


@pytest.mark.parametrize(("filt", "topic", "want"), [
    ("sensors/#", "sensors/kitchen/temp", True),
    ("sensors/#", "sensors", True),                      # '#' includes the parent level
    ("sensors/+/temp", "sensors/kitchen/temp", True),
    ("sensors/+/temp", "sensors/kitchen/hum", False),
    ("sensors/+", "sensors/a/b", False),
    ("+/+", "/a", True),                                 # an empty first level is a level
    ("#", "anything/at/all", True),
    ("#", "$SYS/broker/uptime", False),                  # wildcards skip $ topics at level 0
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
])
def test_topic_matching(filt: str, topic: str, want: bool) -> None:
    assert topic_matches(filt, topic) is want


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b", "a/+b", "a\x00b", "x" * 70_000])
def test_bad_filters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="topic filter"):
        check_filter(bad)


def _reference_match(filt: str, topic: str) -> bool:
    if topic.startswith("$") and filt[:1] in "+#":
        return False
    pattern = "/".join("[^/]*" if lvl == "+" else re.escape(lvl) for lvl in filt.split("/"))
    if filt == "#":
        return True
    if filt.endswith("/#"):
        pattern = pattern[: -len("/\\#")] + "(/.*)?"
    return re.fullmatch(pattern, topic) is not None


level = st.sampled_from(["a", "b", "", "$x"])
topic_s = st.lists(level, min_size=1, max_size=4).map("/".join)
filter_s = st.lists(st.sampled_from(["a", "b", "", "+"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"])).filter(bool)


@given(filter_s, topic_s)
def test_matching_agrees_with_a_regex_model(filt: str, topic: str) -> None:
    check_filter(filt)
    assert topic_matches(filt, topic) is _reference_match(filt, topic)


@pytest.mark.parametrize(("template", "topic", "want"), [
    ("{topic}", "sensors/kitchen/temp", "sensors/kitchen/temp"),
    ("{topic[0]}", "sensors/kitchen/temp", "sensors"),
    ("{topic[-1]}", "sensors/kitchen/temp", "temp"),
    ("{topic[1:]}", "sensors/kitchen/temp", "kitchen/temp"),
    ("{topic[:-1]}", "sensors/kitchen/temp", "sensors/kitchen"),
    ("home/{ topic[1] }/{topic[-1]}", "zigbee2mqtt/lamp/x", "home/lamp/x"),
    ("tasmota", "tele/t1/SENSOR", "tasmota"),
    ("a{{b}}", "t", "a{b}"),
])
def test_templates_render(template: str, topic: str, want: str) -> None:
    assert ChannelTemplate.parse(template).render(topic) == want


@pytest.mark.parametrize("bad", ["", "{", "a}", "{topics}", "{topic[x]}", "{topic[1:2:3]}", "{levels[0]}"])
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        ChannelTemplate.parse(bad)


def test_a_topic_too_short_for_the_template_is_an_error() -> None:
    t = ChannelTemplate.parse("{topic[3]}")
    with pytest.raises(TemplateError, match="needs level 3"):
        t.render("a/b")
    with pytest.raises(TemplateError, match="picks no level"):
        ChannelTemplate.parse("{topic[5:]}").render("a/b")


@given(st.lists(st.text("abc-_", min_size=1, max_size=4), min_size=1, max_size=6),
       st.integers(-7, 7), st.integers(-7, 7))
def test_template_pieces_equal_python_indexing(levels: list[str], i: int, j: int) -> None:
    topic = "/".join(levels)
    assert ChannelTemplate.parse("{topic}").render(topic) == topic
    if -len(levels) <= i < len(levels):
        assert ChannelTemplate.parse(f"{{topic[{i}]}}").render(topic) == levels[i]
    else:
        with pytest.raises(TemplateError):
            ChannelTemplate.parse(f"{{topic[{i}]}}").render(topic)
    part = levels[i:j]
    if part:
        assert ChannelTemplate.parse(f"x/{{topic[{i}:{j}]}}").render(topic) == "x/" + "/".join(part)
