"""`GET /api/v1/apps/<name>/metrics` (current values, window means, recent history, per replica) and
`GET /api/v1/metrics` (a JSON summary of every app), read from the samples the leader collects.

"Current" means the app's latest collection if it is fresh (at most `STALE_PERIODS` collection periods old,
and never less than `MIN_STALE_SECONDS`): when no leader collects, the API says so with `current: null`
instead of showing old numbers as if they were live.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from orchestry.models.apps import list_apps
from orchestry.models.cluster import db_now
from orchestry.models.metrics import Averages, MetricSample, current, latest_app_rows, samples_since, window_averages
from orchestry.models.stats import app_stats
from orchestry.web.context import app_or_404, ctx, query, session
from orchestry.web.openapi import operation
from orchestry.web.schemas import ErrorOut, Query, QueryInt, Since

bp = Blueprint("app_metrics", __name__, url_prefix="/api/v1")

WINDOWS = {"1m": 60, "5m": 300, "15m": 900}
DEFAULT_HISTORY = timedelta(minutes=15)
STALE_PERIODS = 5
MIN_STALE_SECONDS = 30.0


class MetricsQuery(Query):
    since: Since | None = Field(
        None, description="history from this ISO 8601 time or duration back from now (default 15m)"
    )
    limit: QueryInt = Field(100, ge=1, le=1000, description="at most this many history points (the newest)")


class Figures(BaseModel):
    cpu_percent: float | None = Field(description="mean of the ready replicas, % of each one's CPU limit")
    memory_percent: float | None = Field(description="mean of the ready replicas, % of each one's memory limit")
    rps: float | None = Field(description="requests per second nginx served for the app")
    p95_ms: float | None = Field(description="95th percentile of the response time nginx saw")
    active_connections: float | None
    error_rate: float | None = Field(description="share of responses that were server errors (0..1)")
    ready_replicas: float | None = Field(description="replicas in rotation (a mean over a window)")


class Point(Figures):
    taken_at: datetime
    samples: int = Field(
        default=1,
        description="collections the point stands for: 1 as taken; past the full-resolution period, a minute's means",
    )


class WindowOut(Figures):
    seconds: int
    samples: int = Field(description="app samples in the window")


class ReplicaMetricsOut(BaseModel):
    name: str
    cpu_percent: float | None = Field(description="% of its CPU limit (of one core without a limit)")
    memory_percent: float | None = Field(description="% of its memory limit (of the host's memory without one)")
    rps: float | None
    cpu_percent_1m: float | None = Field(description="mean over the last minute")
    memory_percent_1m: float | None


class AppMetrics(BaseModel):
    app: str
    collected_at: datetime | None = Field(description="time of the latest fresh collection; null: none")
    interval_seconds: float = Field(description="the leader collects this often")
    current: Figures | None
    replicas: list[ReplicaMetricsOut] = Field(description="each replica's values in the latest collection")
    windows: dict[str, WindowOut] = Field(description="means over the last 1m, 5m and 15m")
    history: list[Point] = Field(description="app samples since `since`, oldest first, the newest `limit`")


class AppMetricsSummary(Figures):
    app: str
    status: str
    desired_replicas: int
    running_replicas: int
    ready_replicas: int = Field(description="replicas in rotation now")
    collected_at: datetime | None


class MetricsTotals(BaseModel):
    apps: int
    running_apps: int
    desired_replicas: int
    running_replicas: int
    ready_replicas: int
    rps: float = Field(description="summed over the apps with a fresh sample")


class MetricsSummary(BaseModel):
    collected_at: datetime | None
    interval_seconds: float
    totals: MetricsTotals
    apps: list[AppMetricsSummary]


def _figures(row: MetricSample | Averages) -> Figures:
    return Figures(
        cpu_percent=row.cpu_percent,
        memory_percent=row.memory_percent,
        rps=row.rps,
        p95_ms=row.p95_ms,
        active_connections=row.active_connections,
        error_rate=row.error_rate,
        ready_replicas=row.ready_replicas,
    )


def fresh_since(db: Session) -> tuple[datetime, datetime]:
    """(now, the oldest collection time that still counts as current)."""
    now = db_now(db)
    period = ctx().settings.metrics_seconds
    return now, now - timedelta(seconds=max(MIN_STALE_SECONDS, STALE_PERIODS * period))


@bp.get("/apps/<string(maxlength=253):name>/metrics")
@operation(
    "An app's metrics: current values, window means (1m, 5m, 15m), recent history, each replica",
    tag="metrics",
    query=MetricsQuery,
    responses={200: AppMetrics, 404: ErrorOut},
)
def app_metrics(name: str) -> Response:
    args = query(MetricsQuery)
    db = session()
    app = app_or_404(name)
    now, fresh = fresh_since(db)
    app_row, replica_rows = current(db, app.id, fresh)
    means = {label: window_averages(db, app.id, now - timedelta(seconds=seconds)) for label, seconds in WINDOWS.items()}
    windows = {
        label: WindowOut(seconds=WINDOWS[label], samples=whole.samples, **_figures(whole).model_dump())
        for label, series in means.items()
        if (whole := series.get(None)) is not None
    }
    minute = means["1m"]
    since = args.since or now - DEFAULT_HISTORY
    history = samples_since(db, app.id, since, app_rows_only=True, limit=args.limit, newest_first=True)
    out = AppMetrics(
        app=name,
        collected_at=app_row.taken_at if app_row else None,
        interval_seconds=ctx().settings.metrics_seconds,
        current=_figures(app_row) if app_row else None,
        replicas=[
            ReplicaMetricsOut(
                name=r.replica_name or "",
                cpu_percent=r.cpu_percent,
                memory_percent=r.memory_percent,
                rps=r.rps,
                cpu_percent_1m=minute[r.replica_name].cpu_percent if r.replica_name in minute else None,
                memory_percent_1m=minute[r.replica_name].memory_percent if r.replica_name in minute else None,
            )
            for r in replica_rows
        ],
        windows=windows,
        history=[
            Point(taken_at=r.taken_at, samples=r.samples or 1, **_figures(r).model_dump()) for r in reversed(history)
        ],
    )
    return jsonify(out.model_dump(mode="json"))


@bp.get("/metrics")
@operation(
    "Every app's current metrics and replica counts, with totals (JSON)", tag="metrics", responses={200: MetricsSummary}
)
def summary() -> Response:
    return jsonify(metrics_summary().model_dump(mode="json"))


def metrics_summary() -> MetricsSummary:
    """Every app's current figures and replica counts, with totals (the API's summary, the dashboard's table)."""
    db = session()
    _now, fresh = fresh_since(db)
    latest = latest_app_rows(db, fresh)
    ids = {a.name: a.id for a in list_apps(db)}
    stats = app_stats(db)
    apps = []
    for s in stats:
        row = latest.get(ids[s.name])
        figures = _figures(row).model_dump() if row is not None else dict.fromkeys(Figures.model_fields)
        figures["ready_replicas"] = s.healthy  # from the replica table: current even without a sample
        apps.append(
            AppMetricsSummary(
                app=s.name,
                status=s.status,
                desired_replicas=s.desired,
                running_replicas=s.running,
                collected_at=row.taken_at if row is not None else None,
                **figures,
            )
        )
    totals = MetricsTotals(
        apps=len(stats),
        running_apps=sum(1 for s in stats if s.status == "running"),
        desired_replicas=sum(s.desired for s in stats),
        running_replicas=sum(s.running for s in stats),
        ready_replicas=sum(s.healthy for s in stats),
        rps=sum(a.rps or 0.0 for a in apps),
    )
    collected = [a.collected_at for a in apps if a.collected_at is not None]
    return MetricsSummary(
        collected_at=max(collected) if collected else None,
        interval_seconds=ctx().settings.metrics_seconds,
        totals=totals,
        apps=apps,
    )
