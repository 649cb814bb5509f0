"""Bearer tokens with two roles: `viewer` reads, `operator` also writes; and the guards against browsers.

While no token exists the API is open on loopback only: a node bound to another address refuses every
request until a token exists (`serve` refuses to start that way; a revoke can still remove the last token),
and an open node answers only requests addressed to a loopback name. Once any token exists, every request
but the liveness probe needs one. Whatever the mode, a write that a browser marks as cross-site, or whose
body is not JSON/YAML with its real media type, is refused (workflows/access.py says why).
"""

from __future__ import annotations

from flask import current_app, g, request

from orchestry.models.tokens import any_tokens, authenticate
from orchestry.web.context import ctx, session
from orchestry.web.errors import ApiError, field
from orchestry.workflows.access import Refusal, is_loopback, no_token_refusal, write_refusal

PUBLIC = frozenset({"/health", "/api/v1/openapi.json"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refuse(refusal: Refusal) -> ApiError:
    return ApiError(refusal.status, refusal.error, refusal.detail, [field(refusal.field, refusal.rule)])


def _public_bind() -> bool:
    """Does this API listen on a non-loopback address? (Read once per app.)"""
    public: bool | None = current_app.config.get("ORCHESTRY_PUBLIC_BIND")
    if public is None:
        public = not is_loopback(ctx().settings.host)
        current_app.config["ORCHESTRY_PUBLIC_BIND"] = public
    return public


def check_request() -> None:
    if request.path in PUBLIC:
        return
    refused = write_refusal(
        request.method,
        scheme=request.scheme,
        host=request.host,
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        media_type=request.headers.get("Content-Type", ""),
        has_body=bool(request.content_length) or request.headers.get("Transfer-Encoding") is not None,
    )
    if refused is not None:
        raise _refuse(refused)
    db = session()
    # One indexed EXISTS per request: a revoke takes effect on the next request, on every node.
    if not any_tokens(db):
        refused = no_token_refusal(_public_bind(), request.host)
        if refused is not None:
            raise _refuse(refused)
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
