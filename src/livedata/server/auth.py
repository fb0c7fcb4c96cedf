"""Tokens: write tokens may push (and read), read tokens may subscribe. Constant-time checks."""

from __future__ import annotations

import hmac
from typing import Literal

from livedata.config import Config

Right = Literal["read", "write"]


def _match(token: str, tokens: tuple[str, ...]) -> bool:
    ok = False
    for t in tokens:  # no early exit: time does not depend on which token matched
        ok |= hmac.compare_digest(token.encode(), t.encode())
    return ok


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check(config: Config, token: str | None, right: Right) -> tuple[int, str] | None:
    """None when ``token`` grants ``right``; else (401 or 403, a sentence). Never echoes the token."""
    needed = config.write_tokens if right == "write" else config.read_tokens
    if right == "read" and not config.read_tokens:
        return None
    if right == "write" and not config.write_tokens:
        return None
    if token is None:
        return 401, f"a token is required to {right}: send 'Authorization: Bearer <token>'"
    if _match(token, needed) or (right == "read" and _match(token, config.write_tokens)):
        return None
    known = _match(token, config.read_tokens) or _match(token, config.write_tokens)
    if known:
        return 403, f"this token may not {right}"
    return 401, "unknown token"
