"""Run one claimed job: call its handler and record the outcome, fenced by the claim's term."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

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
from orchestry.jobs.registry import APP_KINDS, HANDLERS
from orchestry.models import jobs as jobq
from orchestry.models.apps import get_app
from orchestry.models.base import utcnow
from orchestry.models.events import record
from orchestry.runtime.types import Runtime

log = logging.getLogger("orchestry.jobs")
WAIT_LIMIT = timedelta(minutes=10)  # a job that waits longer (a replica never healthy, never drained) fails


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
        args=dict(job.args),
        attempt=job.attempts,
        sessions=sessions,
        runtime=FencedRuntime(runtime, fence, job.id),
        settings=settings,
        fence=fence,
        router=router,
        health=health,
    )
    max_attempts = job.max_attempts
    fields = {"job_id": job_id, "kind": ctx.kind, "app": ctx.app_name, "attempt": ctx.attempt, "term": fence.term}
    handler = HANDLERS.get(ctx.kind)
    started = time.monotonic()
    try:
        if handler is None:
            raise PermanentError(f"no handler for job kind {ctx.kind!r} in this version of Orchestry")
        fence.check()
        result = handler(ctx) or {}
    except NotLeader as exc:
        log.warning("job abandoned: lost leadership", extra={**fields, "reason": str(exc)})
        _hand_back(sessions, fence, job_id)
        return "abandoned"
    except Wait as wait:
        if utcnow() - job.created_at > WAIT_LIMIT:
            error = f"gave up after waiting {WAIT_LIMIT.total_seconds():.0f}s: {wait}"
            _settle(sessions, fence, job_id, "failed", error=error, ctx=ctx)
            return "failed"
        _settle(
            sessions,
            fence,
            job_id,
            "queued",
            run_after=timedelta(seconds=wait.seconds),
            error=f"waiting: {wait}",
            count_attempt=False,
        )
        return "queued"
    except PermanentError as exc:
        log.warning("job failed", extra={**fields, "error": str(exc)})
        _settle(sessions, fence, job_id, "failed", error=str(exc), ctx=ctx)
        return "failed"
    except Exception as exc:  # temporary by default: engine hiccups, database blips, bugs
        message = str(exc) if isinstance(exc, TemporaryError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, TemporaryError):
            log.exception("job raised", extra=fields)
        if ctx.attempt >= max_attempts:
            _settle(
                sessions, fence, job_id, "failed", error=f"gave up after {ctx.attempt} attempts: {message}", ctx=ctx
            )
            return "failed"
        delay = jobq.backoff(ctx.attempt)
        log.info("job will retry", extra={**fields, "error": message, "retry_in_s": delay.total_seconds()})
        _settle(sessions, fence, job_id, "queued", run_after=delay, error=message)
        return "queued"
    _settle(sessions, fence, job_id, "succeeded", result=result)
    log.info("job succeeded", extra={**fields, "ms": round((time.monotonic() - started) * 1000, 1)})
    return "succeeded"


def _settle(
    sessions: sessionmaker[Session],
    fence: Fence,
    job_id: int,
    status: str,
    *,
    run_after: timedelta | None = None,
    error: str | None = None,
    result: dict | None = None,
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
