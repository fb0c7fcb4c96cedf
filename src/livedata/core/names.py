"""Channel and field names: what is allowed, how a measurement becomes a channel, URL escaping.

A name is any printable Unicode text: letters of any script, digits, punctuation, spaces, emoji.
Not allowed anywhere in a name are control characters (U+0000 to U+001F, U+007F to U+009F),
the line and paragraph separators U+2028 / U+2029 and lone surrogates (which are not characters:
a JSON ``"\\ud800"`` without its pair). Channel names use ``/`` as the hierarchy separator, so a
channel's parts between slashes must not be empty, ``.`` or ``..``. Lengths: see
:mod:`livedata.core.limits`.

In URLs a channel is written with each part percent-encoded (RFC 3986), the slashes kept:
``sensors/température 1`` is ``sensors/temp%C3%A9rature%201`` (:func:`channel_path`).

Line protocol and OTLP name channels after what they carry, by one rule
(:func:`child_channel`): ``<base>/<name>``, the name taken as it is. Spaces, commas, quotes,
colons and non-ASCII letters stay; a ``/`` inside the name adds a level (``km/h`` under ``ha``
is ``ha/km/h``); a name that would make an empty, ``.`` or ``..`` part, or hold a character
above, is refused with an error that says so.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import quote

from livedata.core.limits import MAX_CHANNEL_CHARS, MAX_FIELD_CHARS

__all__ = [
    "InvalidName",
    "channel_path",
    "channel_problem",
    "check_channel",
    "check_name",
    "child_channel",
    "name_problem",
    "show",
]

_BAD_CHAR_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffd]")


class InvalidName(ValueError):
    """A channel or field name that is not allowed; the message says why and what to do."""


def show(text: str, limit: int = 60) -> str:
    """``repr`` of a user-supplied name for a message, shortened if long."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def name_problem(name: str) -> tuple[int, str] | None:
    """The index and a description of the first character not allowed in a name, or None."""
    m = _BAD_CHAR_RE.search(name)
    if m is None:
        return None
    code = ord(m.group())
    if 0xD800 <= code <= 0xDFFF:
        return m.start(), (f"a lone surrogate U+{code:04X}, which is not a character (send UTF-8 text; "
                           "in JSON, a \\uD8xx escape must be followed by its \\uDCxx pair)")
    if code == 0xFFFD:  # what a decoder makes of bytes that are not UTF-8: the name the client meant is lost
        return m.start(), "U+FFFD, the replacement character (the name was not valid UTF-8: send UTF-8 text)"
    return m.start(), f"the control character U+{code:04X} (names must be printable)"


def check_name(name: Any, what: str = "field name", limit: int = MAX_FIELD_CHARS) -> str:
    """``name`` if it is a valid field name (or label key/value, with ``what`` saying which)."""
    if not isinstance(name, str):
        raise InvalidName(f"a {what} must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidName(f"a {what} must not be empty")
    if len(name) > limit:
        raise InvalidName(f"{what} {show(name)} is {len(name)} characters long; the limit is {limit}")
    problem = name_problem(name)
    if problem is not None:
        raise InvalidName(f"{what} {show(name)} holds {problem[1]} (at character {problem[0] + 1})")
    return name


def channel_problem(name: str) -> str | None:
    """Why ``name`` is not a valid channel name, or None if it is."""
    if not name:
        return "a channel name must not be empty"
    if len(name) > MAX_CHANNEL_CHARS:
        return f"it is {len(name)} characters long; the limit is {MAX_CHANNEL_CHARS}"
    problem = name_problem(name)
    if problem is not None:
        return f"it holds {problem[1]} (at character {problem[0] + 1})"
    for part in name.split("/"):
        if not part:
            return "it has an empty part ('/' at the start or end, or '//'): '/' separates levels"
        if part == "." or part == "..":
            return f"{part!r} is not allowed as a level between slashes"
    return None


def check_channel(name: Any) -> str:
    """``name`` if it is a valid channel name, else raise :class:`InvalidName` saying why."""
    if not isinstance(name, str):
        raise InvalidName(f"a channel name must be a string, not {type(name).__name__}")
    problem = channel_problem(name)
    if problem is not None:
        raise InvalidName(f"invalid channel name {show(name)}: {problem}")
    return name


def child_channel(base: str, name: str, what: str = "measurement") -> str:
    """The channel for ``name`` (a measurement, an OTLP metric) under ``base``: ``base/name``.

    Raises :class:`InvalidName` when the result is not a valid channel name, naming ``what``.
    """
    channel = f"{base}/{name}"
    problem = channel_problem(channel)
    if problem is not None:
        raise InvalidName(f"{what} {show(name)} makes the channel name {show(channel)}, which is not allowed: "
                         f"{problem}")
    return channel


def channel_path(name: str) -> str:
    """``name`` for a URL path: each part percent-encoded (UTF-8), the ``/`` between parts kept."""
    return "/".join(quote(part, safe="") for part in name.split("/"))
