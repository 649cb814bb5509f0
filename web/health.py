"""/api/v1/apps/<name>/health: each replica's health; `POST .../health/check` probes them now (a job)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from orchestry.models.apps import get_revision
from orchestry.models.replicas import replicas_of
from orchestry.operations.request import request_operation
from orchestry.web.context import actor, app_or_404, session, wake_dispatcher
from orchestry.web.jobs import accepted
from orchestry.web.openapi import operation
from orchestry.web.schemas import Accepted, AppHealth, ErrorOut, ReplicaHealthOut
from orchestry.workflows.revision import revision_view

bp = Blueprint("health", __name__, url_prefix="/api/v1/apps")
NAME = "<string(maxlength=253):name>"


@bp.get(f"/{NAME}/health")
@operation(
    "Each replica's health: state, last check, latency, consecutive results, last error",
    tag="health",
    responses={200: AppHealth, 404: ErrorOut},
)
def show(name: str) -> Response:
    return jsonify(app_health(name).model_dump(mode="json"))


def app_health(name: str) -> AppHealth:
    """Each replica's health and whether it is in rotation (404 when the app does not exist)."""
    db = session()
    app = app_or_404(name)
    rev = get_revision(db, app)
    spec = rev.spec if rev else None
    probed = revision_view(spec).probed
    check_spec = (spec or {}).get("healthCheck")
    replicas = [
        ReplicaHealthOut(
            name=r.name,
            state=r.state,
            health=r.health,
            in_rotation=r.state == "running" and r.drain_started_at is None and (r.health == "healthy" or not probed),
            draining=r.drain_started_at is not None,
            last_check_at=r.last_check_at,
            last_latency_ms=r.last_latency_ms,
            consecutive_successes=r.consecutive_successes,
            consecutive_failures=r.consecutive_failures,
            last_error=r.last_error,
        )
        for r in replicas_of(db, app.id)
    ]
    return AppHealth(
        app=name, check=check_spec if probed else None, healthy=sum(r.in_rotation for r in replicas), replicas=replicas
    )


@bp.post(f"/{NAME}/health/check")
@operation(
    "Probe every replica of the app now (a `health-check` job); the job's result holds the verdicts",
    tag="health",
    responses={202: Accepted, 404: ErrorOut},
)
def check(name: str) -> tuple[Response, int]:
    db = session()
    app_or_404(name)
    queued = request_operation(db, name, "health-check", actor=actor(), locked=False)
    db.commit()
    wake_dispatcher()
    return accepted(queued.job, created=True, message=f"health check of {name} queued")
