"""Who may see and use the dashboard: the API's tokens and roles, carried by cookies instead of a header.

- The token a user logs in with is kept in an HttpOnly, SameSite=Strict cookie (`Secure` over HTTPS), scoped
  to `/ui/`: a page's script never reads it, another site's page never sends it, the API never accepts it.
- Every write carries a CSRF token (a form field or the `X-CSRF-Token` header), an HMAC of a random nonce
  kept in a second HttpOnly cookie; cross-site writes are refused first (workflows/dashboard.py).
- While no token exists the dashboard is open on loopback exactly as the API is (the same refusals).
- Viewers read everything but secrets (the dashboard shows no env values at all); their writes are a 403.
- Every answer carries a Content-Security-Policy without inline script, and no framing.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote

from flask import Response, g, request
from werkzeug.wrappers import Response as BaseResponse

from orchestry.models.tokens import any_tokens, authenticate
from orchestry.web.auth import READ_METHODS, _public_bind
from orchestry.web.context import session
from orchestry.workflows.access import Refusal, no_token_refusal
from orchestry.workflows.dashboard import csrf_token, form_refusal

TOKEN_COOKIE = "orchestry_ui_token"
NONCE_COOKIE = "orchestry_ui_nonce"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/ui/"
PREFIX = "/ui"
OPEN = ("ui.login", "ui.logout", "ui.static")  # reachable without a token (logout only clears cookies)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class UiError(Exception):
    """A refusal or failure the dashboard answers with a page (or a redirect to `location`)."""

    def __init__(self, status: int, title: str, detail: str, location: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.location = status, title, detail, location


def is_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _refused(refusal: Refusal) -> UiError:
    return UiError(refusal.status, refusal.error.replace("_", " "), refusal.detail)


def check_dashboard_request() -> None:
    """The dashboard's counterpart of web/auth.py's check_request: sets g.actor, g.role, g.csrf."""
    if request.endpoint == "ui.static":
        return
    nonce = request.cookies.get(NONCE_COOKIE) or ""
    if not 20 <= len(nonce) <= 100:
        nonce = ""
    refused = form_refusal(
        request.method,
        scheme=request.scheme,
        host=request.host,
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        nonce=nonce or None,
        sent=request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD),
    )
    if refused is not None:
        raise _refused(refused)
    if not nonce:
        nonce = secrets.token_urlsafe(32)
        g.ui_new_nonce = nonce
    g.csrf = csrf_token(nonce)
    db = session()
    # A valid cookie proves that tokens exist: one query per poll of a logged-in page, not two.
    presented = request.cookies.get(TOKEN_COOKIE)
    token = authenticate(db, presented) if presented else None
    if token is None and not any_tokens(db):  # open on loopback, as the API is
        refused = no_token_refusal(_public_bind(), request.host)
        if refused is not None:
            raise _refused(refused)
        g.actor, g.role, g.ui_open = "anonymous", "operator", True
        return
    g.ui_open = False
    if request.endpoint in OPEN:
        return
    if token is None:
        if request.method in READ_METHODS and not request.headers.get("X-Requested-With"):
            back = quote(request.full_path.rstrip("?"))
            raise UiError(303, "log in", "log in first", location=f"/ui/login?next={back}")
        raise UiError(401, "not logged in", "your session ended (token revoked or logged out): log in again")
    g.actor, g.role, g.token_name = f"token:{token.name}", token.role, token.name
    if request.method not in READ_METHODS and token.role != "operator":
        raise UiError(403, "forbidden", f"token {token.name!r} has role {token.role!r}; actions need 'operator'")


def can_act() -> bool:
    return bool(g.get("role") == "operator")


def set_token_cookie(response: BaseResponse, token: str | None) -> None:
    """Keep `token` (None: forget it) for the dashboard's paths only."""
    if token is None:
        response.delete_cookie(TOKEN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
        return
    response.set_cookie(
        TOKEN_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.is_secure
    )


def new_nonce(response: BaseResponse) -> None:
    """A fresh CSRF nonce (at login: a nonce planted before it is worth nothing after)."""
    g.ui_new_nonce = secrets.token_urlsafe(32)
    g.csrf = csrf_token(g.ui_new_nonce)
    _set_nonce(response, g.ui_new_nonce)


def _set_nonce(response: BaseResponse, nonce: str) -> None:
    response.set_cookie(
        NONCE_COOKIE, nonce, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.is_secure
    )


def headers(response: Response) -> Response:
    """Every dashboard answer: the CSP, no framing, no sniffing, no referrer, pages never cached."""
    if not is_dashboard(request.path):
        return response
    nonce = g.get("ui_new_nonce")
    if nonce and NONCE_COOKIE not in str(response.headers.getlist("Set-Cookie")):
        _set_nonce(response, nonce)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # not no-referrer: Chromium then sends `Origin: null` with the dashboard's own form posts
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response
