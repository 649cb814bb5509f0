"""App operations: up, down, scale, delete, rollback, restart. Each validates, writes the desired state and
enqueues the job that converges to it, in one transaction, and answers 202 with the job's URL. No request
touches Docker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, request
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from orchestry.models import jobs as jobq
from orchestry.models.apps import App, get_revision
from orchestry.models.scaling import scaling_section
from orchestry.operations.registration import restore_revision
from orchestry.operations.request import request_operation
from orchestry.web import idempotency as idem
from orchestry.web.context import actor, app_or_404, ctx, json_body, query, session, wake_dispatcher
from orchestry.web.errors import ApiError, field
from orchestry.web.jobs import accepted
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import Accepted, DeleteQuery, ErrorOut, ReplicasBody, RollbackBody, UpBody
from orchestry.workflows.converge import RUNNING_STATUSES
from orchestry.workflows.revision import replicas_problem
from orchestry.workflows.rollout import RevisionRef, rollback_choice

bp = Blueprint("operations", __name__, url_prefix="/api/v1/apps")
NAME = "<string(maxlength=253):name>"
M = TypeVar("M", bound=BaseModel)
ACCEPTED_RESPONSES: dict[int, Any] = {202: Accepted, 404: ErrorOut, 409: ErrorOut, 415: ErrorOut, 422: ErrorOut}


def _idempotency() -> tuple[str, str] | None:
    """The request's scoped Idempotency-Key and its fingerprint; None without the header; 400 if malformed."""
    key = request.headers.get(idem.HEADER)
    if key is None:
        return None
    problem = idem.key_problem(key)
    if problem is not None:
        raise ApiError(400, "invalid_parameter", f"{idem.HEADER}: {problem}", [field(idem.HEADER, problem)])
    scoped = idem.scoped_key(request.method, request.path, actor(), key)
    query = [(k, v) for k in request.args for v in request.args.getlist(k)]
    return scoped, idem.fingerprint(request.method, request.path, query, request.get_data(cache=True))


def _replayed() -> tuple[Response, int] | None:
    """The job a previous request with this Idempotency-Key created (nothing is changed again); 422 when the
    key was used for a different request."""
    sent = _idempotency()
    if sent is None:
        return None
    job = jobq.by_idempotency_key(session(), sent[0])
    if job is None:
        return None
    if job.request_fingerprint != sent[1]:
        rule = "was already used for a different request (method, path, query or body); use a new key"
        raise ApiError(422, "idempotency_key_reused", f"{idem.HEADER}: {rule}", [field(idem.HEADER, rule)])
    return accepted(job, created=False, message=f"the request with this {idem.HEADER} was already accepted")


def replayable(view: Callable[..., tuple[Response, int]]) -> Callable[..., tuple[Response, int]]:
    """An operation that honours Idempotency-Key (declared so in its `operation`): a request repeating an
    earlier one answers with the job that one created, before the view runs, so nothing is changed again."""
    meta = getattr(view, "__openapi__", None)
    assert meta is not None and meta.idempotency_key, f"{view.__name__}: declare idempotency_key=True"

    @functools.wraps(view)
    def answer_or_replay(*args: Any, **kwargs: Any) -> tuple[Response, int]:
        if (replay := _replayed()) is not None:
            return replay
        return view(*args, **kwargs)

    return answer_or_replay


def live_app(name: str) -> App:
    """The app, 404 when unknown, 409 while it is being deleted."""
    app = app_or_404(name)
    if app.status == "deleting":
        raise ApiError(409, "conflict", f"app {name} is being deleted")
    return app


def _check_bound(section: dict[str, Any], replicas: int) -> None:
    """`replicas` within the policy in force (`section`) and the configured cap."""
    problem = replicas_problem(section, ctx().settings.max_replicas, replicas)
    if problem is not None:
        raise ApiError(422, "invalid", f"replicas: {problem}", [field("replicas", problem)])


def _answer(requested: tuple[jobq.Enqueued, str]) -> tuple[Response, int]:
    """The answer to a requested operation: 202 with its job, or 200 with the live job it joined."""
    queued, note = requested
    return accepted(queued.job, created=queued.created, message=note)


def enqueue_operation(
    app: App, kind: str, message: str, args: dict[str, Any], desired: dict[str, Any]
) -> tuple[jobq.Enqueued, str]:
    """Request an operation on `app` (its desired state, job and event in one transaction): the job (or the
    live one it joined) and what to tell the caller. 409 on a concurrent request."""
    db = session()
    key, fingerprint = _idempotency() or (None, None)
    try:
        queued = request_operation(
            db,
            app,
            kind,
            actor=actor(),
            desired=desired,
            args=args,
            event=f"app.{kind}",
            message=message,
            details=args,
            idempotency_key=key,
            request_fingerprint=fingerprint,
        )
        db.commit()
    except IntegrityError:
        db.rollback()
        raise ApiError(
            409, "conflict", f"another operation on {app.name} was requested at the same time; retry"
        ) from None
    wake_dispatcher()
    return queued, message if queued.created else f"{message} (joined job {queued.job.id})"


@bp.post(f"/{NAME}/up")
@bp.post(f"/{NAME}/start")
@replayable
@operation(
    "Run the app's replicas",
    tag="operations",
    body=Body(UpBody, ("application/json",), "optional", required=False),
    responses=ACCEPTED_RESPONSES,
    idempotency_key=True,
)
def up(name: str) -> tuple[Response, int]:
    body = json_body(UpBody, required=False)
    return _answer(start_app(name, body.replicas))


def start_app(name: str, replicas: int | None) -> tuple[jobq.Enqueued, str]:
    """`up`: run `replicas` (default: the desired count, else minReplicas) of the current revision."""
    app = live_app(name)
    section = scaling_section(session(), app)  # the policy in force: an API-set minReplicas counts too
    replicas = replicas or app.desired_replicas or max(1, int(section.get("minReplicas", 1)))
    _check_bound(section, replicas)
    desired = {"status": "running", "status_reason": None, "desired_replicas": replicas}
    return enqueue_operation(
        app, "deploy", f"up {name}: {replicas} replica(s) of revision {app.revision}", {"replicas": replicas}, desired
    )


@bp.post(f"/{NAME}/down")
@bp.post(f"/{NAME}/stop")
@replayable
@operation(
    "Stop every replica (the app stays registered)",
    tag="operations",
    responses=ACCEPTED_RESPONSES,
    idempotency_key=True,
)
def down(name: str) -> tuple[Response, int]:
    return _answer(stop_app(name))


def stop_app(name: str) -> tuple[jobq.Enqueued, str]:
    """`down`: stop every replica; the app stays registered."""
    app = live_app(name)
    desired = {"status": "stopped", "status_reason": None, "desired_replicas": 0}
    return enqueue_operation(app, "stop", f"down {name}", {}, desired)


@bp.post(f"/{NAME}/scale")
@replayable
@operation(
    "Set the replica count",
    tag="operations",
    body=Body(ReplicasBody),
    responses=ACCEPTED_RESPONSES,
    idempotency_key=True,
)
def scale(name: str) -> tuple[Response, int]:
    body = json_body(ReplicasBody, required=True)
    return _answer(scale_app(name, body.replicas))


def scale_target(name: str, replicas: int) -> tuple[App, dict[str, Any]]:
    """The app a `scale` to `replicas` may change and its policy in force; raises the API's refusal (404, 409,
    422) before anything is asked or changed (the dashboard checks before it asks for a confirmation)."""
    app = live_app(name)
    section = scaling_section(session(), app)
    _check_bound(section, replicas)
    return app, section


def scale_app(name: str, replicas: int) -> tuple[jobq.Enqueued, str]:
    """`scale`: set the desired replica count (within the policy in force and the cap)."""
    app, section = scale_target(name, replicas)
    desired: dict[str, Any] = {"desired_replicas": replicas}
    if app.status in ("registered", "stopped", "failed"):
        desired.update(status="running", status_reason=None)
    message = f"scale {name} to {replicas}"
    if section.get("mode", "auto") == "auto":
        message += f" (auto mode: the autoscaler may change it; `orchestry scaling {name} --set mode=manual` pins it)"
    return enqueue_operation(app, "scale", message, {"replicas": replicas}, desired)


@bp.delete("/<app:name>")  # not /apps/register
@replayable
@operation(
    "Delete the app: stop its replicas, then remove it (its events are kept)",
    tag="operations",
    query=DeleteQuery,
    responses=ACCEPTED_RESPONSES,
    idempotency_key=True,
)
def delete(name: str) -> tuple[Response, int]:
    args = query(DeleteQuery)
    app = app_or_404(name)
    if app.status == "deleting":
        live = jobq.live_job(session(), name)
        if live is not None:
            return accepted(live, created=False, message=f"app {name} is already being deleted")
    options = {key: True for key, on in (("force", args.force), ("volumes", args.volumes)) if on}
    return _answer(
        enqueue_operation(app, "delete", f"delete {name}", options, {"status": "deleting", "desired_replicas": 0})
    )


@bp.post(f"/{NAME}/rollback")
@replayable
@operation(
    "Roll back to an earlier revision: a new revision restoring its spec, rolled out health-gated",
    tag="operations",
    body=Body(RollbackBody, ("application/json",), "optional: `to`, the revision to restore", required=False),
    responses=ACCEPTED_RESPONSES,
    idempotency_key=True,
    description="Without `to`, the previous revision (the newest before the current one with another spec). "
    "The rollback is a new revision that records the one it restored (`restored_from` in the revisions).",
)
def rollback(name: str) -> tuple[Response, int]:
    body = json_body(RollbackBody, required=False)
    return _answer(rollback_app(name, body.to))


def rollback_target(app: App, to: int | None) -> int:
    """The revision a rollback of `app` restores: `to`, or the previous one. 422 (a `to` that does not fit)
    or 409 (no earlier revision) otherwise."""
    refs = [RevisionRef(r.number, r.content_hash, r.restored_from) for r in app.revisions]
    choice = rollback_choice(refs, app.revision, to)
    if choice.problem is not None or choice.restore is None:
        problem = choice.problem or "no revision to restore"
        raise ApiError(
            422 if to is not None else 409,
            "invalid" if to is not None else "conflict",
            f"to: {problem}",
            [field("to", problem)],
        )
    return choice.restore


def rollback_app(name: str, to: int | None) -> tuple[jobq.Enqueued, str]:
    """`rollback`: a new revision restoring revision `to` (default: the previous one), rolled out."""
    app = live_app(name)
    restored = rollback_target(app, to)
    restore = get_revision(session(), app, restored)
    assert restore is not None, "rollback_choice picks a stored revision"
    number = restore_revision(session(), app, restore, actor=actor(), reason=f"asked by {actor()}")
    desired = {"status": "running", "status_reason": None} if app.status == "failed" else {}
    return enqueue_operation(
        app,
        "rollback",
        f"rollback {name}: revision {number} restores revision {restored}",
        {"revision": number, "restored": restored},
        desired,
    )


@bp.post(f"/{NAME}/restart")
@replayable
@operation(
    "Rolling restart of the running revision: one replica at a time, each new one healthy before an old one drains",
    tag="operations",
    responses=ACCEPTED_RESPONSES,
    idempotency_key=True,
)
def restart(name: str) -> tuple[Response, int]:
    return _answer(restart_app(name))


def check_restartable(app: App) -> None:
    """409 unless `app` runs replicas (a restart replaces running ones)."""
    if app.status not in RUNNING_STATUSES or app.desired_replicas < 1:
        rule = f"app {app.name} is not running ({app.status}); `orchestry up {app.name}` starts it"
        raise ApiError(409, "conflict", rule)


def restart_app(name: str) -> tuple[jobq.Enqueued, str]:
    """`restart`: replace every replica of the running revision, one at a time (the restart count is part of
    the replicas' hash)."""
    app = live_app(name)
    check_restartable(app)
    restarts = (app.restarts or 0) + 1
    return enqueue_operation(
        app,
        "restart",
        f"restart {name}: {app.desired_replicas} replica(s) of revision {app.revision}, one at a time",
        {"restart": restarts},
        {"restarts": restarts, "status": "running", "status_reason": None},
    )
