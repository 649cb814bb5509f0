"""Registering specs: apply the registration plan to the apps and revisions tables, with its event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestry.models.apps import App, AppRevision, get_app, get_revision
from orchestry.models.edge import bump_edge
from orchestry.models.events import record
from orchestry.operations.request import request_operation
from orchestry.workflows.converge import RUNNING_STATUSES
from orchestry.workflows.registration import CurrentApp, RegistrationPlan, plan_registration


@dataclass(frozen=True)
class Submission:
    """One validated document of a registration request."""

    name: str
    normalized: dict[str, Any]
    content_hash: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Registered:
    plan: RegistrationPlan
    job_id: int | None  # the rollout of a new revision on a running app


def _highest(session: Session, app: App) -> int:
    """The highest revision number stored for `app` (numbers are never reused, even if history was trimmed)."""
    return session.scalar(select(func.max(AppRevision.number)).where(AppRevision.app_id == app.id)) or 0


def _scaling_section_back(app: App, before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """A new revision whose `scaling` section differs from the one in force puts it in force again: the
    policy set through the API is dropped. True when one was."""
    if app.scaling_policy is None or (before or {}).get("scaling") == after.get("scaling"):
        return False
    app.scaling_policy = None
    return True


def registration_plan(session: Session, sub: Submission) -> tuple[App | None, AppRevision | None, RegistrationPlan]:
    """The app `sub` names, its revision in force and what registering `sub` would do to it. Read only:
    `register` applies the plan, a dry run shows it."""
    app = get_app(session, sub.name)
    if app is None:
        return None, None, plan_registration(sub.name, None, sub.content_hash)
    current = get_revision(session, app)
    state = CurrentApp(app.revision, current.content_hash if current else "", app.status, _highest(session, app))
    return app, current, plan_registration(sub.name, state, sub.content_hash)


def register(session: Session, sub: Submission, *, raw: str, raw_format: str, actor: str) -> Registered:
    """Create, revise or leave the app; the caller's transaction makes it all-or-nothing.

    A running app that gets a new revision is rolled out at once (a `deploy` job in the same transaction).
    """
    app, current, plan = registration_plan(session, sub)
    if plan.action in ("unchanged", "refused"):
        return Registered(plan, None)
    if app is None:
        app = App(name=sub.name, status="registered", desired_replicas=0, revision=plan.revision)
        session.add(app)
        session.flush()
    else:
        if _scaling_section_back(app, current.spec if current else None, sub.normalized):
            record(
                session,
                "scaling.policy",
                f"{app.name}: the new revision's scaling section replaces the policy set through the API",
                actor=actor,
                app_name=app.name,
            )
        app.revision = plan.revision
    session.add(
        AppRevision(
            app_id=app.id,
            number=plan.revision,
            content_hash=sub.content_hash,
            spec=sub.normalized,
            raw=raw,
            raw_format=raw_format,
            warnings=list(sub.warnings),
            created_by=actor,
        )
    )
    record(
        session,
        f"app.{plan.action}",
        plan.message,
        actor=actor,
        app_name=sub.name,
        revision=plan.revision,
        content_hash=sub.content_hash,
        warnings=list(sub.warnings),
    )
    job_id = None
    if plan.action == "revised" and app.status in RUNNING_STATUSES:
        job_id = request_operation(
            session,
            app,
            "deploy",
            actor=actor,
            desired={"status": "running", "status_reason": None},
            args={"revision": plan.revision},
        ).job.id
    return Registered(plan, job_id)


def restore_revision(session: Session, app: App, restore: AppRevision, *, actor: str, reason: str) -> int:
    """Add a revision carrying `restore`'s spec (recorded as `restored_from`) and put it in force; the caller
    enqueues its rollout. History is never rewritten: revision numbers only grow."""
    number = _highest(session, app) + 1
    previous = app.revision
    if app.scaling_policy is not None:  # as for a registration: the restored spec's scaling section is in force
        current = get_revision(session, app)
        _scaling_section_back(app, current.spec if current else None, restore.spec)
    app.revision = number
    bump_edge(session)  # the spec in force changed: its routes (and `tls: auto` hosts) may have
    session.add(
        AppRevision(
            app_id=app.id,
            number=number,
            content_hash=restore.content_hash,
            spec=restore.spec,
            raw=restore.raw,
            raw_format=restore.raw_format,
            warnings=list(restore.warnings),
            created_by=actor,
            restored_from=restore.number,
        )
    )
    record(
        session,
        "app.rolled_back",
        f"app {app.name} rolled back: revision {number} restores revision {restore.number} "
        f"(was revision {previous}); {reason}",
        actor=actor,
        app_name=app.name,
        revision=number,
        restored_from=restore.number,
        previous=previous,
        content_hash=restore.content_hash,
    )
    session.flush()
    return number
