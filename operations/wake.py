"""A wake asked by a node's nginx (controller/wake.py): one replica for an app at zero, requested like any
scaling action (a decision with its reason, a `scale` job, an event), under the app's lock so that many
nodes asking at once ask once. Running it again while the app wakes changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from orchestry.models import jobs as jobq
from orchestry.models.apps import get_app_for_update
from orchestry.models.scaling import record_decision, scaling_section
from orchestry.operations.request import request_operation
from orchestry.workflows.scaling import ScaleDecision
from orchestry.workflows.wake import wake_decision

WAKE_ACTOR = "wake"


def request_wake(session: Session, name: str, node: str, held: int, waited: float, now: datetime) -> int | None:
    """Wake `name` for the `held` requests `node`'s nginx holds (the oldest for `waited` seconds). Returns
    the scale job enqueued, or None when there was nothing to do (already waking, not allowed to idle...)."""
    app = get_app_for_update(session, name)
    if app is None:
        return None
    live = jobq.live_job(session, name)
    section = scaling_section(session, app)
    decision = wake_decision(name, app.status, app.desired_replicas, section, live.kind if live else None, node, held)
    if decision.target is None:
        return None
    since = now - timedelta(seconds=max(0.0, waited))
    wake = {"node": node, "held": held, "since": since.isoformat()}
    job = request_operation(
        session,
        app,
        "scale",
        actor=f"{WAKE_ACTOR}:{node}",
        desired={"desired_replicas": decision.target},
        args={"replicas": decision.target, "wake": wake},
        event="scaling.out",
        message=f"{name}: 0 → {decision.target}: {decision.reason}",
        details={"current": 0, "target": decision.target, "burst": False, "wake": wake},
    ).job
    scaled = ScaleDecision(0, decision.target, "out", {}, None, decision.reason, decision.target)
    record_decision(session, app, scaled, {"wake": wake}, changed=True, job_id=job.id)
    return job.id
