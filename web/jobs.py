"""/api/v1/jobs: the job queue and its history, with each job's steps, attempts, timings and outcome."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from orchestry.models import jobs as jobq
from orchestry.web.context import query, session
from orchestry.web.errors import not_found
from orchestry.web.openapi import operation
from orchestry.web.schemas import Accepted, ErrorOut, JobList, JobOut, JobsQuery

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")


def job_out(job: jobq.Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        app=job.app_name,
        status=job.status,
        args=job.args,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        steps=job.steps,
        history=job.history or [],
        result=job.result,
        error=job.error,
        owner=job.owner,
        term=job.term,
        created_by=job.created_by,
        created_at=job.created_at,
        run_after=job.run_after,
        started_at=job.started_at,
        finished_at=job.finished_at,
        url=f"/api/v1/jobs/{job.id}",
    )


def accepted(job: jobq.Job, *, created: bool, message: str) -> tuple[Response, int]:
    """The 202 every enqueueing request answers: the job, where to follow it (also as Location)."""
    out = job_out(job)
    resp = jsonify(Accepted(job=out, url=out.url, created=created, message=message).model_dump(mode="json"))
    resp.headers["Location"] = out.url
    return resp, 202


@bp.get("")
@operation("Jobs, newest first", tag="jobs", query=JobsQuery, responses={200: JobList})
def list_jobs() -> Response:
    args = query(JobsQuery)
    jobs = jobq.query_jobs(session(), app_name=args.app, status=args.status, kind=args.kind, limit=args.limit)
    return jsonify(JobList(jobs=[job_out(j) for j in jobs]).model_dump(mode="json"))


@bp.get("/<int:job_id>")
@operation("One job: steps, attempts, timings, result, error", tag="jobs", responses={200: JobOut, 404: ErrorOut})
def show(job_id: int) -> Response:
    job = session().get(jobq.Job, job_id)
    if job is None:
        raise not_found("job", str(job_id))
    return jsonify(job_out(job).model_dump(mode="json"))
