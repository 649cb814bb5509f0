"""Run one claimed job: call its handler and record the outcome, fenced by the claim's term."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import Settings
from orchestry.jobs.base import (
    Fence,
    HealthChecker,
    JobContext,
    NotLeader,
    PermanentError,
    Router,
    TemporaryError,
    Wait,
)
from orchestry.jobs.fenced import FencedRuntime
from orchestry.jobs.registry import APP_KINDS, HANDLERS, inputs
from orchestry.models import jobs as jobq
from orchestry.models.apps import get_app
from orchestry.models.base import utcnow
from orchestry.models.events import record
from orchestry.runtime.types import Runtime
from orchestry.workflows.retry import Decision, Outcome, decide

log = logging.getLogger("orchestry.jobs")


def run_job(
    job: jobq.Claimed,
    *,
    sessions: sessionmaker[Session],
    runtime: Runtime,
    settings: Settings,
    fence: Fence,
    router: Router | None = None,
    health: HealthChecker | None = None,
) -> str:
    """Returns the status the job was left in (succeeded, failed, queued, or `abandoned` if not ours)."""
    job_id = job.id
    ctx = JobContext(
        job_id=job.id,
        kind=job.kind,
        app_name=job.app_name,
        args=inputs(job.kind, job.args),  # the rest of job.args is what was requested, for the history
        attempt=job.attempts,
        sessions=sessions,
        runtime=FencedRuntime(runtime, fence, job.id),
        settings=settings,
        fence=fence,
        router=router,
        health=health,
    )
    fields = {"job_id": job_id, "kind": ctx.kind, "app": ctx.app_name, "attempt": ctx.attempt, "term": fence.term}
    handler = HANDLERS.get(ctx.kind)
    started = time.monotonic()
    try:
        if handler is None:
            raise PermanentError(f"no handler for job kind {ctx.kind!r} in this version of Orchestry")
        fence.check()
        result = handler(ctx) or {}
    except Exception as exc:  # what it means is classify's; what to do about it is the pure retry policy's
        outcome = classify(exc)
        if outcome.kind == "unexpected":
            log.exception("job raised", extra=fields)
        decision = decide(outcome, attempt=ctx.attempt, max_attempts=job.max_attempts, waited=utcnow() - job.created_at)
        return _apply(decision, outcome, sessions=sessions, fence=fence, ctx=ctx, fields=fields)
    _settle(sessions, fence, job_id, "succeeded", result=result)
    log.info("job succeeded", extra={**fields, "ms": round((time.monotonic() - started) * 1000, 1)})
    return "succeeded"


def classify(exc: Exception) -> Outcome:
    """A handler's exception as an outcome of the retry policy (jobs/base.py says what each kind means)."""
    if isinstance(exc, NotLeader):
        return Outcome("not_leader", str(exc))
    if isinstance(exc, Wait):
        return Outcome("wait", str(exc), exc.seconds)
    if isinstance(exc, PermanentError):
        return Outcome("permanent", str(exc))
    if isinstance(exc, TemporaryError):
        return Outcome("temporary", str(exc), exc.seconds or 0.0)
    return Outcome("unexpected", f"{type(exc).__name__}: {exc}")  # temporary by default: engine hiccups, bugs


def _apply(
    decision: Decision,
    outcome: Outcome,
    *,
    sessions: sessionmaker[Session],
    fence: Fence,
    ctx: JobContext,
    fields: dict[str, object],
) -> str:
    """Carry out the retry policy's decision; returns the status the job was left in."""
    if decision.action == "abandon":
        log.warning("job abandoned: lost leadership", extra={**fields, "reason": decision.error})
        _hand_back(sessions, fence, ctx.job_id)
        return "abandoned"
    if decision.action == "fail":
        if outcome.kind == "permanent":
            log.warning("job failed", extra={**fields, "error": decision.error})
        _settle(sessions, fence, ctx.job_id, "failed", error=decision.error, ctx=ctx)
        return "failed"
    if decision.action == "retry":
        log.info(
            "job will retry", extra={**fields, "error": decision.error, "retry_in_s": decision.delay.total_seconds()}
        )
    _settle(
        sessions,
        fence,
        ctx.job_id,
        "queued",
        run_after=decision.delay,
        error=decision.error,
        count_attempt=decision.count_attempt,
    )
    return "queued"


def _settle(
    sessions: sessionmaker[Session],
    fence: Fence,
    job_id: int,
    status: str,
    *,
    run_after: timedelta | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    count_attempt: bool = True,
    ctx: JobContext | None = None,
) -> None:
    try:
        fence.check()
    except NotLeader:
        _hand_back(sessions, fence, job_id)  # its outcome is lost: the next holder runs it again
        return
    now = utcnow()
    with sessions.begin() as session:
        if status == "queued":
            jobq.requeue(
                session,
                job_id,
                node=fence.node,
                term=fence.term,
                run_after=now + (run_after or timedelta()),
                error=error,
                count_attempt=count_attempt,
            )
            return
        if not jobq.finish(
            session, job_id, node=fence.node, term=fence.term, status=status, now=now, result=result, error=error
        ):
            return
        if status == "failed" and ctx is not None:
            record(
                session,
                "job.failed",
                f"{ctx.kind} job {job_id} failed: {error}",
                actor=f"node:{fence.node}",
                app_name=ctx.app_name,
                job_id=job_id,
                kind=ctx.kind,
            )
            if ctx.kind in APP_KINDS and ctx.app_name:
                app = get_app(session, ctx.app_name)
                if app is not None and app.status != "deleting":
                    app.status, app.status_reason = "failed", error


def _hand_back(sessions: sessionmaker[Session], fence: Fence, job_id: int) -> None:
    """The job's fence ended: back to the queue now, not when the next election or check finds it.
    A database error leaves it `running` for the leader's periodic check (`requeue_abandoned`)."""
    try:
        with sessions.begin() as session:
            jobq.abandon(session, job_id, node=fence.node, term=fence.term)
    except SQLAlchemyError as exc:
        log.warning("could not hand an abandoned job back", extra={"job_id": job_id, "error": str(exc).splitlines()[0]})
