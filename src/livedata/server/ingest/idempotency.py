"""``Idempotency-Key``: checked and digested here, decided by the broker where the write happens.

The broker records the key with a digest of the request in the same atomic step as the write
(:class:`~livedata.brokers.base.Key`), so a retry after *any* failure, including one whose outcome
was unknown (a timeout after Redis applied the write), stores nothing twice, and a key reused for
a different request is refused with the reason. Keys are per channel.
"""

from __future__ import annotations

import hashlib

from livedata.brokers.base import Key

MAX_KEY_LEN = 200


def check_key(raw: str) -> str | None:
    """The reason ``raw`` is not a usable key, or None."""
    if not 0 < len(raw) <= MAX_KEY_LEN:
        return f"Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
    if not raw.isprintable():
        return "Idempotency-Key must be printable characters"
    return None


def request_key(raw: str | None, *parts: str | bytes) -> Key | None:
    """The :class:`Key` of a request: its key and a digest of everything that decides what it stores."""
    if raw is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return Key(raw, h.hexdigest())
