"""Idempotency-Key: a retried request gets the job the first one created, and nothing else does.

A key is scoped to (method, path, actor), so the same key sent to another app, another operation or by
another caller is a different key. The request is fingerprinted (method, path, query, body): the same key
with a different request is a client error (422), never a silent answer about an unrelated job, as Stripe
does. The database stores the scoped key (a hash: fixed length, no caller's text in an index) and the
fingerprint; these functions are pure, the view reads and writes the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HEADER = "Idempotency-Key"
MAX_LENGTH = 128
RULE = f"must be 1-{MAX_LENGTH} printable ASCII characters"


def key_problem(key: str) -> str | None:
    """Why `key` is not an acceptable Idempotency-Key, or None when it is."""
    if not 0 < len(key) <= MAX_LENGTH or any(not " " <= c <= "~" for c in key):
        return RULE
    return None


def scoped_key(method: str, path: str, actor: str, key: str) -> str:
    """The key as stored: one per (method, path, actor, key)."""
    return "sha256:" + _digest(method.upper(), path, actor, key)


def fingerprint(method: str, path: str, query: Iterable[tuple[str, str]], body: bytes) -> str:
    """What makes two requests "the same request": method, path, query parameters (in any order), body."""
    params = "&".join(f"{k}={v}" for k, v in sorted(query))
    return _digest(method.upper(), path, params, body)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode("utf-8", "surrogateescape")
        h.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no two part lists collide
    return h.hexdigest()
