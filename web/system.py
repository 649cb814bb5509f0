"""/health (liveness, the database's reads and writes, this node's components) and the OpenAPI document."""

from __future__ import annotations

import ipaddress
import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from orchestry import __version__
from orchestry.models.health import probe_database
from orchestry.models.tokens import any_tokens, authenticate
from orchestry.web.context import ctx, session
from orchestry.web.openapi import build_document, operation
from orchestry.web.schemas import ComponentOut, ErrorOut, HealthOut
from orchestry.workflows.components import ComponentState, overall

bp = Blueprint("system", __name__)
log = logging.getLogger("orchestry.web")


@bp.get("/health")
@operation(
    "Liveness: the API answers; the database reads and writes; this node's components (nginx, Docker) are up",
    tag="system",
    responses={200: HealthOut, 503: HealthOut},
)
def health() -> tuple[Response, int]:
    settings = ctx().settings
    db = probe_database(ctx().sessions, settings.node_id)
    if db.read_error is not None:
        log.warning("health check: database unreachable", extra={"error": db.read_error})
    elif db.write_error is not None:
        log.warning("health check: database refuses writes", extra={"error": db.write_error})
    observed = ctx().components
    seen = dict(observed()) if observed is not None else {}
    now = time.monotonic()
    components = {name: _component(state, now) for name, state in sorted(seen.items()) if name != "database"}
    earlier = seen.get("database")
    components["database"] = ComponentOut(
        state="up" if db.ok else "down",
        for_seconds=_age(earlier.since, now) if earlier is not None and earlier.up == db.ok else None,
        error=db.error,
    )
    if settings.nginx == "off":
        components["nginx"] = ComponentOut(state="off", for_seconds=None)
    status, code = overall({n: {"up": True, "down": False}.get(c.state) for n, c in components.items()}, db.ok)
    if not _may_see_errors():  # /health is public: the reasons (hosts, paths) only for the node's own users
        components = {n: c.model_copy(update={"error": None}) for n, c in components.items()}
    out = HealthOut(
        status=status,  # type: ignore[arg-type]
        version=__version__,
        node=settings.node_id,
        database="ok" if db.ok else "unreachable" if db.read_error else "read-only",
        database_read="ok" if db.read_error is None else "failed",
        database_write="ok" if db.ok else "not tried" if db.read_error else "failed",
        components=dict(sorted(components.items())),
    )
    return jsonify(out.model_dump()), code


def _may_see_errors() -> bool:
    """A caller on this machine, or one with a valid token (none needed while no token exists)."""
    try:
        if ipaddress.ip_address(request.remote_addr or "").is_loopback:
            return True
    except ValueError:
        pass
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    try:
        db = session()
        if not any_tokens(db):
            return True
        return scheme.lower() == "bearer" and authenticate(db, presented.strip()) is not None
    except SQLAlchemyError:
        return False


def _component(state: ComponentState, now: float) -> ComponentOut:
    name = "unknown" if state.up is None else "up" if state.up else "down"
    return ComponentOut(state=name, for_seconds=_age(state.since, now), error=state.error)  # type: ignore[arg-type]


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else round(max(0.0, now - since), 1)


@bp.get("/api/v1/openapi.json")
@operation("This document", tag="system", responses={200: "application/json"})
def openapi() -> Response:
    doc = current_app.extensions.get("orchestry.openapi")
    if doc is None:
        doc = build_document(current_app, title="Orchestry API", version=__version__, error_model=ErrorOut)
        current_app.extensions["orchestry.openapi"] = doc
    return jsonify(doc)
