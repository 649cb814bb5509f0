"""/health (liveness and database reachability) and the OpenAPI document."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from orchestry import __version__
from orchestry.web.context import ctx, session
from orchestry.web.openapi import build_document, operation
from orchestry.web.schemas import ErrorOut, HealthOut

bp = Blueprint("system", __name__)
log = logging.getLogger("orchestry.web")


@bp.get("/health")
@operation(
    "Liveness: the API answers and reaches its database", tag="system", responses={200: HealthOut, 503: HealthOut}
)
def health() -> tuple[Response, int]:
    try:
        session().execute(text("SELECT 1"))
        database, status, code = "ok", "ok", 200
    except SQLAlchemyError as exc:
        log.warning("health check: database unreachable", extra={"error": str(exc).splitlines()[0]})
        database, status, code = "unreachable", "degraded", 503
    out = HealthOut(
        status=status,
        version=__version__,
        node=ctx().settings.node_id,  # type: ignore[arg-type]
        database=database,
    )
    return jsonify(out.model_dump()), code


@bp.get("/api/v1/openapi.json")
@operation("This document", tag="system", responses={200: "application/json"})
def openapi() -> Response:
    doc = current_app.extensions.get("orchestry.openapi")
    if doc is None:
        doc = build_document(current_app, title="Orchestry API", version=__version__, error_model=ErrorOut)
        current_app.extensions["orchestry.openapi"] = doc
    return jsonify(doc)
