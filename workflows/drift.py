"""Which apps drifted from their desired state (pure): the reconcile sweep enqueues a job for each."""

from __future__ import annotations

from dataclasses import dataclass

from orchestry.workflows.converge import Desired, Seen, plan_app


@dataclass(frozen=True)
class AppState:
    name: str
    status: str  # registered, running, stopped, failed, deleting
    desired: Desired


def drifted(apps: list[AppState], observed: dict[str, list[Seen]], busy: set[str]) -> list[tuple[str, str]]:
    """(app name, why) for every app that needs a job: containers differ from the plan, an app being
    deleted has no job, or containers belong to no app (orphans). Busy apps and failed apps are left to
    their job and to the user respectively; an app whose only issue is waiting is not drift.
    `busy` names the apps that have a queued or running job."""
    out: list[tuple[str, str]] = []
    known = {a.name for a in apps}
    for app in apps:
        if app.name in busy or app.status == "failed":
            continue
        if app.status == "deleting":
            out.append((app.name, "deletion has no job"))
            continue
        plan = plan_app(app.desired, observed.get(app.name, []))
        if plan.starts or plan.stops:
            out.append((app.name, f"{len(plan.starts)} to start, {len(plan.stops)} to stop"))
    for name in sorted(set(observed) - known - busy):
        out.append((name, f"{len(observed[name])} orphan container(s)"))
    return out
