"""Every error the API gives is JSON: {"error": code, "detail": message, "fields": [...]}.

Handlers raise `ApiError`; Werkzeug's own HTTP errors (404, 405, 413, ...) are rewritten in the same
shape; a database that cannot be reached (down, restarting, refusing connections) is a 503
`database_unavailable` with a `Retry-After`, logged in one line, since the request may simply be retried
once it is back; anything else unexpected is logged with its traceback and answered as a plain 500 without
internals.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger("orchestry.web")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        fields: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.fields = fields or []
        self.headers = headers or {}


def field(path: str, rule: str, **extra: Any) -> dict[str, Any]:
    return {"field": path, "rule": rule, "message": f"{path}: {rule}", **extra}


def bad_request(path: str, rule: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{path}: {rule}", [field(path, rule)])


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {name!r} does not exist")


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "unavailable",
}


def error_response(err: ApiError) -> Response:
    resp = jsonify({"error": err.error, "detail": err.detail, "fields": err.fields})
    resp.status_code = err.status
    for key, value in err.headers.items():
        resp.headers[key] = value
    return resp


DATABASE_RETRY_AFTER = "2"


def database_outage(exc: BaseException) -> bool:
    """Is this the database being unreachable (not a bug, not a constraint)? Connection refused or lost,
    the server shutting down, no free connection in the pool: retrying later can succeed."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def database_unavailable(exc: BaseException) -> ApiError:
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = first[0] if first else type(exc).__name__
    busy = any(word in reason for word in ("locked", "lock timeout", "statement timeout"))
    what = "the database is busy" if busy else "the database cannot be reached"
    return ApiError(
        503,
        "database_unavailable",
        f"{what} ({reason}); nothing was changed: retry later (with the same Idempotency-Key)",
        headers={"Retry-After": DATABASE_RETRY_AFTER},
    )


def install(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 404:
            detail = "no such route; see /api/v1/openapi.json"
        elif status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            detail = f"request body is larger than the limit of {limit} bytes"
        headers = {}
        if status == 405:
            allowed = exc.get_headers()
            headers = {k: v for k, v in allowed if k.lower() == "allow"}
            detail = f"method not allowed here; allowed: {headers.get('Allow', '')}"
        return error_response(ApiError(status, _CODES.get(status, "http_error"), detail, headers=headers))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if database_outage(exc):
            log.warning("database unavailable", extra={"error": str(exc).strip().splitlines()[0][:300]})
            return error_response(database_unavailable(exc))
        log.exception("unhandled error in request", extra={"error_type": type(exc).__name__})
        return error_response(ApiError(500, "internal", "internal error; see the controller's log"))
