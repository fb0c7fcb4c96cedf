"""Client values in error sentences: short, and never walked.

A client's value may be a string of megabytes, hold lone surrogates, or be a list nested 900
deep (the JSON decoders' limit): ``repr`` of that recurses as deep, from an already deep stack.
:func:`shown` renders strings and numbers (cut to ``limit`` characters) and names containers by
their type only.
"""

from __future__ import annotations

from typing import Any


def shown(value: Any, limit: int = 60) -> str:
    """``value`` for an error sentence: a string or number as ``repr`` (cut), a container by type."""
    if isinstance(value, str):
        return repr(value[:limit])
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    return f"a {type(value).__name__}"


__all__ = ["shown"]
