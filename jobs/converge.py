"""Converge one app: observe its containers, plan with `workflows.converge`, act, and repeat until done.

Every app operation (deploy, scale, stop, delete, reconcile) is this loop; they differ only in the desired
state the API wrote before enqueueing them. Running it twice is harmless: the second run observes that
nothing is left to do.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from orchestry.jobs.base import JobContext, PermanentError, TemporaryError, Wait
from orchestry.jobs.replica_request import replica_request
from orchestry.models.apps import App, get_app, get_revision
from orchestry.models.replicas import sync_observed
from orchestry.runtime.types import ContainerFailed, EngineUnavailable, ImageUnavailable, Observed
from orchestry.workflows.converge import Desired, Plan, Seen, plan_app

log = logging.getLogger("orchestry.jobs")
MAX_ROUNDS = 100
RUNNING_STATUSES = ("running", "failed")


@dataclass(frozen=True)
class Target:
    """The desired state read from the database for one round."""

    app_id: int | None
    status: str
    replicas: int
    revision: int
    spec_hash: str
    spec: dict[str, Any]

    @property
    def desired(self) -> Desired:
        return Desired(self.replicas, self.spec_hash)


def read_target(session: Session, name: str) -> Target:
    app = get_app(session, name)
    if app is None:  # deleted, or an orphan: nothing of it should run
        return Target(None, "absent", 0, 0, "", {})
    rev = get_revision(session, app)
    replicas = app.desired_replicas if app.status in RUNNING_STATUSES else 0
    return Target(app.id, app.status, replicas, app.revision, rev.content_hash if rev else "", rev.spec if rev else {})


def observe(ctx: JobContext, name: str) -> list[Observed]:
    try:
        return ctx.runtime.list_replicas(ctx.settings.cluster_name, name)
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot observe the containers of {name}: {exc}") from None


def _seen(observed: list[Observed]) -> list[Seen]:
    return [Seen(o.name, o.slot, o.spec_hash, o.running, o.running) for o in observed]


def _rows(observed: list[Observed]) -> list[dict[str, object]]:
    return [
        {
            "name": o.name,
            "slot": o.slot,
            "revision": o.revision,
            "container_id": o.id,
            "host": o.host,
            "port": o.port,
            "state": o.state,
            "started_at": o.started_at,
            "ports": {str(private): public for private, public in o.ports},
        }
        for o in observed
    ]


def converge(ctx: JobContext) -> dict[str, Any]:
    name = ctx.app_name
    assert name, "app jobs carry the app's name"
    started: list[str] = []
    stopped: list[str] = []
    for _ in range(MAX_ROUNDS):
        with ctx.sessions.begin() as session:
            target = read_target(session, name)
        observed = observe(ctx, name)
        if target.app_id is not None:
            ctx.fence.check()
            with ctx.sessions.begin() as session:
                sync_observed(session, target.app_id, _rows(observed))
        plan = plan_app(target.desired, _seen(observed))
        if plan.done:
            return _finish(ctx, target, observed, started, stopped)
        if plan.wait:
            raise Wait(plan.wait)
        _apply(ctx, target, plan, started, stopped)
    raise TemporaryError(f"{name} did not converge in {MAX_ROUNDS} rounds")


def _apply(ctx: JobContext, target: Target, plan: Plan, started: list[str], stopped: list[str]) -> None:
    ctx.fence.check()
    grace = float(target.spec.get("termination", {}).get("gracePeriodSeconds", 30)) if target.spec else 0.0
    if ctx.args.get("force"):
        grace = 0.0
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(plan.stops), len(plan.starts)))) as pool:
        for stop, outcome in zip(
            plan.stops,
            pool.map(
                lambda s: _attempt(lambda: ctx.runtime.stop_replica(ctx.settings.cluster_name, s.name, grace)),
                plan.stops,
            ),
            strict=True,
        ):
            if outcome is not None:
                raise TemporaryError(f"stopping {stop.name} failed: {outcome}")
            ctx.step(f"stop {stop.name}", reason=stop.reason)
            stopped.append(stop.name)
        if not plan.starts:
            return
        image = target.spec["spec"]["image"]
        try:
            ctx.runtime.ensure_image(image)
        except ImageUnavailable as exc:
            raise PermanentError(str(exc)) from None
        except EngineUnavailable as exc:
            raise TemporaryError(str(exc)) from None
        requests = [
            replica_request(
                cluster=ctx.settings.cluster_name,
                spec=target.spec,
                slot=s.slot,
                revision=target.revision,
                spec_hash=target.spec_hash,
                replicas=target.replicas,
            )
            for s in plan.starts
        ]
        ctx.fence.check()
        results = list(pool.map(lambda r: _attempt(lambda: ctx.runtime.start_replica(r)), requests))
    failures = []
    for req, start, outcome in zip(requests, plan.starts, results, strict=True):
        if isinstance(outcome, Observed):
            ctx.step(
                f"start {req.name}",
                reason=start.reason,
                container=outcome.id[:12],
                address=f"{outcome.host}:{outcome.port}" if outcome.port else None,
            )
            started.append(req.name)
        else:
            ctx.step(f"start {req.name}", status="failed", reason=start.reason, error=str(outcome))
            failures.append(outcome)
    if any(isinstance(f, ImageUnavailable) for f in failures):
        raise PermanentError(str(next(f for f in failures if isinstance(f, ImageUnavailable))))
    if failures:
        # A replica that exits at once may have lost a race (its name, its port) or be broken for good:
        # retry with backoff, and let the job's attempt limit turn a broken one into a failed app.
        raise TemporaryError(f"replica failed to start: {failures[0]}")


def _attempt(fn: Any) -> Any:
    """Run one runtime action; return its result, or the runtime failure it raised (to report per replica)."""
    try:
        result = fn()
        return result if result is not None else None
    except (EngineUnavailable, ContainerFailed, ImageUnavailable) as exc:
        return exc


def _finish(
    ctx: JobContext, target: Target, observed: list[Observed], started: list[str], stopped: list[str]
) -> dict[str, Any]:
    result = {"replicas": len(observed), "revision": target.revision, "started": started, "stopped": stopped}
    if target.app_id is None:
        return result
    ctx.fence.check()
    with ctx.sessions.begin() as session:
        app = session.get(App, target.app_id)
        if app is None:
            return result
        if app.status == "deleting":
            session.delete(app)
            ctx.event(session, "app.deleted", f"app {app.name} deleted; its containers are gone", revision=app.revision)
            result["deleted"] = True
        elif app.status in RUNNING_STATUSES:
            changed = app.status != "running" or started or stopped
            app.status, app.status_reason = "running", None
            if changed:
                ctx.event(
                    session,
                    "app.converged",
                    f"app {app.name}: {len(observed)} replica(s) of revision {app.revision} running",
                    replicas=len(observed),
                    started=started,
                    stopped=stopped,
                )
        elif app.status in ("stopped", "registered") and stopped:
            ctx.event(session, "app.stopped", f"app {app.name} stopped", stopped=stopped)
    return result
