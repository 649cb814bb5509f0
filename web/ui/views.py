"""The dashboard's pages, their live fragments, the chart data and the operators' actions.

A page renders its live parts through the same template include that its fragment endpoint (`.../live`,
`/ui/apps/rows`, ...) renders, and the script swaps the fragment in every few seconds while the tab is
visible: one short request each time, never a held thread (the API's follow streams have a bounded pool;
the dashboard takes nothing from it).
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, redirect, render_template, request
from markupsafe import Markup, escape
from pydantic import ValidationError
from werkzeug.wrappers import Response as BaseResponse

from orchestry.models import jobs as jobq
from orchestry.models.apps import get_revision
from orchestry.models.base import aware
from orchestry.models.cluster import db_now
from orchestry.models.events import query_events
from orchestry.models.jobs import JOB_KINDS, JOB_STATUSES
from orchestry.models.metrics import app_series, current
from orchestry.models.routing import stored_generation
from orchestry.models.tokens import authenticate
from orchestry.runtime.types import EngineUnavailable
from orchestry.spec.redact import redact_env
from orchestry.web.app_metrics import fresh_since, metrics_summary
from orchestry.web.apps import app_detail, app_list, revision_list
from orchestry.web.cluster import cluster_status
from orchestry.web.context import app_or_404, close_session, ctx, session
from orchestry.web.errors import ApiError
from orchestry.web.health import app_health
from orchestry.web.jobs import job_out
from orchestry.web.logs import followed, format_line
from orchestry.web.operations import (
    check_restartable,
    live_app,
    restart_app,
    rollback_app,
    rollback_target,
    scale_app,
    scale_target,
    start_app,
    stop_app,
)
from orchestry.web.scaling import decision_history, policy_out, set_policy
from orchestry.web.schemas import JobOut, JobsQuery, validation_fields
from orchestry.web.sse import event_stream
from orchestry.web.ui.access import (
    CSRF_FIELD,
    UiError,
    can_act,
    new_nonce,
    set_token_cookie,
)
from orchestry.web.ui.fragments import fragment
from orchestry.workflows.dashboard import (
    DEFAULT_RANGE,
    RANGES,
    Sample,
    ago,
    duration,
    millis,
    number,
    safe_next,
    thin,
)

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
NAME = "<string(maxlength=253):name>"
JOBS_FILTERS = ("app", "status", "kind", "limit")
_JOB_CHOICES = {"statuses": JOB_STATUSES, "kinds": JOB_KINDS, "limits": (20, 50, 200, 1000)}
LOG_LINES = 200  # per replica, and shown in all
STREAM_KEEPALIVE_SECONDS = 15.0  # a followed log stream whose viewer left ends within this, even when quiet
SERIES = ("rps", "p95_ms", "cpu_percent", "memory_percent", "ready_replicas")


# -- rendering helpers ----------------------------------------------------------------------------------------


def _now() -> datetime:
    if "ui_now" not in g:
        g.ui_now = db_now(session())
    now: datetime = g.ui_now
    return now


@bp.app_template_filter("ago")
def _ago(value: datetime | None) -> Markup:
    """A relative time, the absolute one on hover; the script keeps the text current."""
    if value is None:
        return Markup('<span class="muted">never</span>')
    at = aware(value)
    iso = at.isoformat(timespec="seconds").replace("+00:00", "Z")
    title = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    # a live fragment says the absolute time (the script makes it relative): the same data, the same ETag
    text = title if g.get("ui_fragment") else ago(at, _now())
    return Markup('<time datetime="{}" title="{}" data-rel>{}</time>').format(iso, title, text)


@bp.app_template_filter("num")
def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return number(value, unit, digits)


@bp.app_template_filter("ms")
def _ms(value: float | None) -> str:
    return millis(value)


@bp.app_template_filter("dur")
def _dur(value: float | None) -> str:
    return duration(value)


def _job_seconds(job: JobOut) -> float | None:
    if job.started_at is None:
        return None
    end = job.finished_at or _now()
    return (aware(end) - aware(job.started_at)).total_seconds()


def _page(template: str, **values: Any) -> str:
    return render_template(
        template,
        can_act=can_act(),
        csrf=g.get("csrf", ""),
        csrf_field=CSRF_FIELD,
        open_mode=g.get("ui_open", False),
        who=g.get("token_name"),
        role=g.get("role"),
        node=ctx().settings.node_id,
        job_seconds=_job_seconds,
        **values,
    )


def _fragment() -> bool:
    return bool(request.headers.get("X-Requested-With"))


@bp.errorhandler(UiError)
def _ui_error(err: UiError) -> BaseResponse | tuple[str, int]:
    if err.location is not None:
        return redirect(err.location, 303)
    if _fragment():
        return str(escape(f"{err.title}: {err.detail}")), err.status
    return _page("error.html", title=err.title, detail=err.detail, status=err.status), err.status


@bp.errorhandler(ApiError)
def _api_error(err: ApiError) -> tuple[str, int]:
    """What the API would answer as JSON (404 app, 409 conflict, 422 bound, 503 database), as a page."""
    title = err.error.replace("_", " ")
    if _fragment():
        return str(escape(f"{title}: {err.detail}")), err.status
    return _page("error.html", title=title, detail=err.detail, status=err.status), err.status


# -- access ---------------------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str | tuple[str, int]:
    target = safe_next(request.values.get("next"))
    if g.get("ui_open"):
        return redirect(target, 303)
    if request.method == "GET":
        return _page("login.html", next=target, error=None)
    presented = (request.form.get("token") or "").strip()
    token = authenticate(session(), presented) if presented else None
    if token is None:
        error = "That token is not valid (revoked or mistyped)." if presented else "Enter an API token."
        return _page("login.html", next=target, error=error), 401
    response = redirect(target, 303)
    set_token_cookie(response, presented)
    new_nonce(response)
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    response = redirect("/ui/login", 303)
    set_token_cookie(response, None)
    return response


# -- apps -----------------------------------------------------------------------------------------------------


def _app_rows() -> list[dict[str, Any]]:
    """The apps table: the API's list joined with its metrics summary (the same functions, by name)."""
    figures = {a.app: a for a in metrics_summary().apps}
    rows = []
    for app in app_list().apps:
        m = figures.get(app.name)
        rows.append(
            {
                "name": app.name,
                "status": app.status,
                "type": app.type,
                "revision": app.revision,
                "desired": app.desired_replicas,
                "ready": m.ready_replicas if m else 0,
                "mode": app.mode,
                "rps": m.rps if m else None,
                "p95_ms": m.p95_ms if m else None,
                "cpu_percent": m.cpu_percent if m else None,
                "memory_percent": m.memory_percent if m else None,
                "updated_at": app.updated_at,
            }
        )
    return rows


@bp.get("/")
def apps_page() -> str:
    return _page("apps.html", rows=_app_rows())


@bp.get("/apps/rows")
def apps_rows() -> Response:
    return fragment(lambda: render_template("_apps_rows.html", rows=_app_rows()))


def _app_live(name: str) -> dict[str, Any]:
    detail = app_detail(name)
    health = {r.name: r for r in app_health(name).replicas}
    # The current figures as the API's metrics endpoint reads them (its window means and history are not shown)
    app_row, replica_rows = current(session(), app_or_404(name).id, fresh_since(session())[1])
    per_replica = {r.replica_name: r for r in replica_rows}
    jobs = [job_out(j) for j in jobq.query_jobs(session(), app_name=name, limit=8)]
    wanted = request.args.get("job", type=int)
    job = next((j for j in jobs if j.id == wanted), None)
    if job is None and wanted is not None:
        found = session().get(jobq.Job, wanted)
        job = job_out(found) if found is not None and found.app_name == name else None
    job = job or (jobs[0] if jobs else None)
    return {
        "app": detail,
        "health": health,
        "current": app_row,
        "interval": ctx().settings.metrics_seconds,
        "runtime": ctx().settings.runtime,
        "per_replica": per_replica,
        "jobs": jobs,
        "job": job,
        "events": query_events(session(), app_name=name, limit=15),
        "ready": sum(1 for r in health.values() if r.in_rotation),
    }


@bp.get(f"/apps/{NAME}")
def app_page(name: str) -> str:
    live = _app_live(name)
    chosen = request.args.get("range", DEFAULT_RANGE)
    return _page(
        "app.html",
        **live,
        policy=policy_out(name),
        decisions=decision_history(name, limit=10).decisions,
        revisions=list(reversed(revision_list(name).revisions)),
        ranges=list(RANGES),
        range=chosen if chosen in RANGES else DEFAULT_RANGE,
        job_param=request.args.get("job", ""),
    )


@bp.get(f"/apps/{NAME}/live")
def app_live(name: str) -> Response:
    return fragment(lambda: _page("_app_live.html", **_app_live(name)))


@bp.get(f"/apps/{NAME}/series")
def app_chart(name: str) -> Response:
    """The charts' data: the app's samples over the range, thinned, and the autoscaler's changes in it."""
    return fragment(lambda: json.dumps(_chart(name), separators=(",", ":")), "application/json")


def _chart(name: str) -> dict[str, Any]:
    label = request.args.get("range", DEFAULT_RANGE)
    if label not in RANGES:
        raise ApiError(400, "invalid_parameter", f"range: must be one of {', '.join(RANGES)}")
    app = app_or_404(name)
    now = _now()
    since = now - timedelta(seconds=RANGES[label])
    samples = [Sample(at.timestamp(), values) for at, values in app_series(session(), app.id, since)]
    points = thin(samples, since.timestamp(), now.timestamp())
    changes = [
        {
            "t": int(aware(d.at).timestamp() * 1000),
            "current": d.current,
            "target": d.target,
            "direction": d.direction,
            "reason": d.reason,
        }
        for d in decision_history(name, limit=200).decisions
        if aware(d.at) >= since
    ]
    return {
        "from": int(since.timestamp() * 1000),
        "to": int(now.timestamp() * 1000),
        "series": list(SERIES),
        "points": [[int(p.at * 1000), *p.values] for p in points],
        "decisions": changes,
    }


# -- actions --------------------------------------------------------------------------------------------------


def _confirm(name: str, action: str, question: str, fields: dict[str, str], button: str = "") -> str | None:
    """A destructive action runs only once confirmed: the first POST answers a page that asks (and carries
    `fields` on, so what runs is what the question named)."""
    if request.form.get("confirm") == "yes":
        return None
    button = button or f"Yes, {action} {name}"
    return _page("confirm.html", name=name, action=action, question=question, fields=fields, button=button)


def _replicas_field(required: bool) -> int | None:
    raw = (request.form.get("replicas") or "").strip()
    if not raw and not required:
        return None
    if not raw.isdigit():
        raise ApiError(422, "invalid", "replicas: must be a whole number (0 or more)")
    return int(raw)


def _started(name: str, job_id: int) -> BaseResponse:
    return redirect(f"/ui/apps/{name}?job={job_id}#job", 303)


@bp.post(f"/apps/{NAME}/scale")
def scale(name: str) -> BaseResponse | str:
    replicas = _replicas_field(required=True) or 0
    if replicas == 0:
        scale_target(name, replicas)  # refused (below minReplicas, say) before it is asked
        if page := _confirm(name, "scale", f"Scale {name} to 0 replicas? It stops serving.", {"replicas": "0"}):
            return page
    queued, _note = scale_app(name, replicas)
    return _started(name, queued.job.id)


@bp.post(f"/apps/{NAME}/up")
def up(name: str) -> BaseResponse:
    queued, _note = start_app(name, _replicas_field(required=False) or None)
    return _started(name, queued.job.id)


@bp.post(f"/apps/{NAME}/down")
def down(name: str) -> BaseResponse | str:
    app_or_404(name)
    if page := _confirm(name, "down", f"Stop every replica of {name}? It stops serving until started again.", {}):
        return page
    queued, _note = stop_app(name)
    return _started(name, queued.job.id)


@bp.post(f"/apps/{NAME}/restart")
def restart(name: str) -> BaseResponse | str:
    app = live_app(name)
    check_restartable(app)  # refused before asking, not after
    question = (
        f"Restart {name}? Each of its {app.desired_replicas} replica(s) is replaced by a new one, one at a time: "
        "the new one must be healthy before the old one drains."
    )
    if page := _confirm(name, "restart", question, {}):
        return page
    queued, _note = restart_app(name)
    return _started(name, queued.job.id)


@bp.post(f"/apps/{NAME}/rollback")
def rollback(name: str) -> BaseResponse | str:
    raw = (request.form.get("to") or "").strip()
    if raw and not raw.isdigit():
        raise ApiError(422, "invalid", "to: must be a revision number (or empty: the previous revision)")
    app = live_app(name)
    restored = rollback_target(app, int(raw) if raw else None)  # refused before asking, not after
    question = (
        f"Roll {name} back to revision {restored}? A new revision restores its spec and replaces the replicas "
        f"of revision {app.revision} one at a time, each new one healthy before an old one drains."
    )
    button = f"Yes, roll {name} back to revision {restored}"
    if page := _confirm(name, "rollback", question, {"to": str(restored)}, button):
        return page
    queued, _note = rollback_app(name, restored)
    return _started(name, queued.job.id)


@bp.post(f"/apps/{NAME}/mode")
def mode(name: str) -> BaseResponse:
    wanted = request.form.get("mode", "")
    if wanted not in ("auto", "manual"):
        raise ApiError(422, "invalid", "mode: must be auto or manual")
    policy = policy_out(name).policy
    set_policy(name, {**policy, "mode": wanted})
    return redirect(f"/ui/apps/{name}#policy", 303)


# -- jobs -----------------------------------------------------------------------------------------------------


def _jobs_query() -> JobsQuery:
    """The jobs page's filters, validated once: a bad one is a 400 naming it (the API's rules and words)."""
    raw = {k: v.strip() for k, v in request.args.items() if k in JOBS_FILTERS and v.strip()}
    try:
        return JobsQuery.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f["message"] for f in validation_fields(exc))
        raise ApiError(400, "invalid_parameter", problems) from None


def _jobs(args: JobsQuery) -> list[JobOut]:
    found = jobq.query_jobs(session(), app_name=args.app, status=args.status, kind=args.kind, limit=args.limit)
    return [job_out(j) for j in found]


@bp.get("/jobs")
def jobs_page() -> str | tuple[str, int]:
    """The history with its filters. A bad filter answers the page with the filters as given and what is
    wrong with them (the form stays usable), without rows or live refresh."""
    filters = {k: (request.args.get(k) or "").strip() for k in JOBS_FILTERS}
    try:
        args = _jobs_query()
    except ApiError as err:
        return _page("jobs.html", jobs=[], filters=filters, error=err.detail, live=None, **_JOB_CHOICES), err.status
    chosen = args.model_dump(exclude_defaults=True)  # the live refresh asks for exactly the filters in force
    live = "/ui/jobs/rows" + (f"?{urlencode(chosen)}" if chosen else "")
    filters["limit"] = str(args.limit)
    return _page("jobs.html", jobs=_jobs(args), filters=filters, error=None, live=live, **_JOB_CHOICES)


@bp.get("/jobs/rows")
def jobs_rows() -> Response:
    return fragment(lambda: _page("_jobs_rows.html", jobs=_jobs(_jobs_query())))


def _job(job_id: int) -> JobOut:
    job = session().get(jobq.Job, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id} does not exist")
    return job_out(job)


@bp.get("/jobs/<int:job_id>")
def job_page(job_id: int) -> str:
    return _page("job.html", job=_job(job_id))


@bp.get("/jobs/<int:job_id>/live")
def job_live(job_id: int) -> Response:
    return fragment(lambda: _page("_job.html", job=_job(job_id)))


# -- cluster --------------------------------------------------------------------------------------------------


def _cluster() -> dict[str, Any]:
    status = cluster_status()
    now = _now()
    return {
        "status": status,
        "stored": stored_generation(session()),
        "ages": {n.node_id: (now - aware(n.heartbeat_at)).total_seconds() for n in status.nodes},
        "lease_left": (aware(status.leader.expires_at) - now).total_seconds() if status.leader.expires_at else None,
    }


@bp.get("/cluster")
def cluster_page() -> str:
    return _page("cluster.html", **_cluster())


@bp.get("/cluster/live")
def cluster_live() -> Response:
    return fragment(lambda: _page("_cluster.html", **_cluster()))


# -- revisions and logs ---------------------------------------------------------------------------------------


@bp.get(f"/apps/{NAME}/diff")
def revision_diff(name: str) -> str:
    """Two revisions' normalised specs side by side as a unified diff (env values redacted for viewers, as
    the API's spec endpoint does)."""
    app = app_or_404(name)
    numbers = []
    for key, default in (("a", app.revision - 1), ("b", app.revision)):
        raw = request.args.get(key, str(default))
        if not raw.isdigit():
            raise ApiError(400, "invalid_parameter", f"{key}: must be a revision number")
        numbers.append(int(raw))
    texts = []
    for number_ in numbers:
        rev = get_revision(session(), app, number_)
        if rev is None:
            raise ApiError(404, "not_found", f"revision {number_} of app {name} does not exist")
        spec = rev.spec if can_act() else redact_env(rev.spec)
        texts.append(json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False).splitlines())
    a, b = numbers
    lines = list(difflib.unified_diff(texts[0], texts[1], f"revision {a}", f"revision {b}", lineterm="", n=3))
    return _page("diff.html", name=name, a=a, b=b, lines=lines, revisions=revision_list(name).revisions)


@bp.get(f"/apps/{NAME}/logs")
def logs_page(name: str) -> str:
    app_or_404(name)
    return _page("logs.html", name=name, count=LOG_LINES)


@bp.get(f"/apps/{NAME}/logs/tail")
def logs_tail(name: str) -> Response:
    """The replicas' last lines, merged (re-read at each poll: no stream is held open)."""
    return fragment(lambda: _logs_tail(name))


@bp.get(f"/apps/{NAME}/logs/stream")
def logs_stream(name: str) -> Response:
    """New log lines as they come, as server-sent events (the logs page follows them; it polls the tail
    instead when this answers 503: all of this node's follow slots, shared with the API's, are taken)."""
    app_or_404(name)
    close_session()
    lines, finish = followed(name, 0)
    body = event_stream(lines, format_line, finish, STREAM_KEEPALIVE_SECONDS, ended=(EngineUnavailable,))
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front (nginx) passes each event on at once
    response.call_on_close(finish)
    return response


def _logs_tail(name: str) -> str:
    app_or_404(name)
    close_session()
    runtime = ctx().runtime
    if runtime is None:
        raise ApiError(503, "unavailable", "this controller has no container engine configured")
    try:
        lines = [format_line(line) for line in runtime.logs(ctx().settings.cluster_name, name, LOG_LINES, False)]
    except EngineUnavailable as exc:
        raise ApiError(503, "unavailable", f"the container engine did not answer: {exc}") from None
    return render_template("_logs.html", lines=lines[-LOG_LINES:])
