"""MQTT topic filters and topic-to-channel templates. Pure.

A template names the channel a message goes to, from its topic::

    {topic}          the whole topic                   sensors/kitchen/temp
    {topic[0]}       one level (0-based; -1 the last)  sensors
    {topic[1:]}      levels from 1 on, joined by /     kitchen/temp
    {topic[:-1]}     all levels but the last           sensors/kitchen
    {{ and }}        a literal brace

Anything else is copied as it is: ``home/{topic[-1]}`` sends ``a/b/temp`` to ``home/temp``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_TOPIC_BYTES: Final = 65_535


class TemplateError(ValueError):
    """A template that cannot be read, or a topic it cannot render."""


def check_filter(text: str) -> str:
    """Return ``text`` if it is a valid MQTT topic filter, else raise ValueError with a sentence.

    ``+`` stands for one whole level, ``#`` for any number of trailing levels (it must be last).
    """
    if not isinstance(text, str) or not text:
        raise ValueError("a topic filter is a non-empty string like sensors/+/temp or sensors/#")
    if len(text.encode()) > MAX_TOPIC_BYTES:
        raise ValueError("a topic filter is at most 65535 bytes")
    if "\x00" in text:
        raise ValueError(f"topic filter {text[:60]!r} contains a NUL character")
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {text[:60]!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {text[:60]!r}: '+' must be a whole level (like a/+/c)")
    return text


def topic_matches(filt: str, topic: str) -> bool:
    """True when ``topic`` matches the topic filter ``filt`` (MQTT rules, incl. ``$`` topics)."""
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False  # wildcards at the first level do not match $SYS-style topics
    f = filt.split("/")
    t = topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True  # matches the parent level too: a/# matches a
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


_PART = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD = re.compile(r"topic(?:\[\s*(-?[0-9]+)\s*\]|\[\s*(-?[0-9]+)?\s*:\s*(-?[0-9]+)?\s*\])?")

Piece = str | tuple[int | None, int | None, bool]
"""Literal text, or (start, stop, single level) of the topic's levels."""


@dataclass(frozen=True, slots=True)
class ChannelTemplate:
    """A compiled channel template (see the module doc)."""

    text: str
    pieces: tuple[Piece, ...]

    @classmethod
    def parse(cls, text: str) -> ChannelTemplate:
        """Raises TemplateError with a sentence when ``text`` is not a template."""
        if not isinstance(text, str) or not text:
            raise TemplateError("a channel template is a non-empty string like {topic} or home/{topic[-1]}")
        pieces: list[Piece] = []
        pos = 0
        for m in _PART.finditer(text):
            if m.start() > pos:
                pieces.append(text[pos:m.start()])
            token = m.group(0)
            if token in ("{{", "}}"):
                pieces.append(token[0])
            elif token in ("{", "}"):
                raise TemplateError(f"template {text!r}: a lone {token!r}; write {token * 2} for a brace")
            else:
                inner = (m.group(1) or "").strip()
                f = _FIELD.fullmatch(inner)
                if f is None:
                    raise TemplateError(f"template {text!r}: unknown {{{inner}}}; use {{topic}}, {{topic[0]}}, "
                                        "{topic[-1]} or {topic[1:]}")
                index, start, stop = f.groups()
                if index is not None:
                    pieces.append((int(index), None, True))
                elif ":" in inner:
                    pieces.append((None if start is None else int(start), None if stop is None else int(stop), False))
                else:
                    pieces.append((None, None, False))
            pos = m.end()
        if pos < len(text):
            pieces.append(text[pos:])
        merged: list[Piece] = []
        for p in pieces:  # join neighbouring literals
            if isinstance(p, str) and merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + p
            else:
                merged.append(p)
        return cls(text, tuple(merged))

    @property
    def literal(self) -> bool:
        """True when the template does not depend on the topic."""
        return all(isinstance(p, str) for p in self.pieces)

    def render(self, topic: str) -> str:
        """The channel for ``topic``.

        Raises:
            TemplateError: the topic has too few levels for a ``{topic[i]}``, or a slice is empty.
        """
        pieces = self.pieces
        if len(pieces) == 1 and not isinstance(pieces[0], str) and pieces[0] == (None, None, False):
            return topic
        levels: list[str] | None = None
        out: list[str] = []
        for p in pieces:
            if isinstance(p, str):
                out.append(p)
                continue
            start, stop, single = p
            if levels is None:
                levels = topic.split("/")
            if single:
                assert start is not None
                if not -len(levels) <= start < len(levels):
                    raise TemplateError(f"topic {topic[:80]!r} has {len(levels)} levels; "
                                        f"the template {self.text!r} needs level {start}")
                out.append(levels[start])
            elif start is None and stop is None:
                out.append(topic)
            else:
                part = levels[start:stop]
                if not part:
                    raise TemplateError(f"topic {topic[:80]!r}: the template {self.text!r} picks no level")
                out.append("/".join(part))
        return "".join(out)


__all__ = ["ChannelTemplate", "TemplateError", "check_filter", "topic_matches"]
