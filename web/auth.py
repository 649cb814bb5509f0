"""Bearer tokens with two roles: `viewer` reads, `operator` also writes.

While no token exists the API is open (it binds loopback by default, and `serve` refuses another
address without a token). Once any token exists, every request but the liveness probe needs one.
"""

from __future__ import annotations

from flask import g, request

from orchestry.models.tokens import any_tokens, authenticate
from orchestry.web.context import session
from orchestry.web.errors import ApiError

PUBLIC = frozenset({"/health", "/api/v1/openapi.json"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_request() -> None:
    if request.path in PUBLIC:
        return
    db = session()
    if not any_tokens(db):
        g.actor, g.role = "anonymous", "operator"
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="orchestry"'}
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401, "unauthorized", "this controller needs an API token (Authorization: Bearer ...)", headers=challenge
        )
    token = authenticate(db, presented.strip())
    if token is None:
        raise ApiError(401, "unauthorized", "the API token is not valid (revoked or mistyped)", headers=challenge)
    g.actor, g.role = f"token:{token.name}", token.role
    if request.method not in READ_METHODS and token.role != "operator":
        raise ApiError(403, "forbidden", f"token {token.name!r} has role {token.role!r}; writes need 'operator'")
