"""Metric samples, per app (replica_name NULL) or per replica, kept for a retention period.

Wide rows (one column per metric) keep window queries to a single indexed range scan on
(app_id, taken_at). Every row of one collection carries the same `taken_at`, so "the current values" of an
app are the rows at its latest app row's time. Retention deletes the oldest rows in bounded batches through
the taken_at index, so it never holds a long lock.

Samples are kept as taken for the full-resolution period (an hour); after it a minute's app rows become one
row of their means (`samples`: how many it stands for) and the replica rows go. At 40 apps x 5 replicas every
2 s that is 40 rows a minute kept for the day instead of 7,200 (10 M rows a day). Window means weigh each
row by the samples it stands for, so a window across the boundary means what it meant before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    case,
    cast,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql import Subquery

from orchestry.models.base import Base, affected, aware, utcnow
from orchestry.workflows.metrics import FIGURES, LatencyHistogram, accumulate, period_means
from orchestry.workflows.scaling import MetricWindow, ReplicaSample

PURGE_BATCH = 5_000
ROLLUP_SECONDS = 60  # past the full-resolution period, an app's samples are kept as one mean per minute


class MetricSample(Base):
    __tablename__ = "metric_samples"
    __table_args__ = (
        Index("ix_metric_samples_app_id_taken_at", "app_id", "taken_at"),  # window queries: one range scan
        Index("ix_metric_samples_taken_at", "taken_at"),  # retention: the oldest rows first, without a scan
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    replica_name: Mapped[str | None] = mapped_column(String(128))
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    memory_percent: Mapped[float | None] = mapped_column(Float)
    rps: Mapped[float | None] = mapped_column(Float)
    p95_ms: Mapped[float | None] = mapped_column(Float)
    active_connections: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)
    ready_replicas: Mapped[int | None] = mapped_column(Integer)
    samples: Mapped[int | None] = mapped_column(Integer, doc="rows a rolled-up row stands for; NULL: one, as taken")


class AppRequestHistogram(Base):
    """An app's request-latency histogram, cumulative since Orchestry started counting (never purged while
    the app exists): what `/metrics` exposes as `orchestry_app_request_duration_seconds`."""

    __tablename__ = "app_request_histograms"

    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    bounds: Mapped[list[float]] = mapped_column(JSON, doc="bucket upper bounds, ms")
    counts: Mapped[list[int]] = mapped_column(JSON, doc="requests per bucket, the overflow last")
    sum_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


def add_latencies(session: Session, app_id: int, bounds: tuple[float, ...], counts: tuple[int, ...], ms: float) -> None:
    """Add one interval's latency histogram to the app's cumulative one (the caller's transaction)."""
    row = session.get(AppRequestHistogram, app_id)
    stored = LatencyHistogram(tuple(row.bounds), tuple(row.counts), row.sum_seconds) if row is not None else None
    merged = accumulate(stored, bounds, counts, ms)
    if merged is None or merged == stored:
        return
    if row is None:
        row = AppRequestHistogram(app_id=app_id)
        session.add(row)
    row.bounds, row.counts, row.sum_seconds, row.updated_at = (
        list(merged.bounds),
        list(merged.counts),
        merged.sum_seconds,
        utcnow(),
    )


def latency_histograms(session: Session) -> list[tuple[int, LatencyHistogram]]:
    rows = session.scalars(select(AppRequestHistogram).order_by(AppRequestHistogram.app_id))
    return [(r.app_id, LatencyHistogram(tuple(r.bounds), tuple(r.counts), r.sum_seconds)) for r in rows]


# -- writing and retention ------------------------------------------------------------------------------------


# Core, built once, on the Table (not the mapped class): the ORM's bulk path cost 5 ms of CPU per 240 rows.
_ADD_SAMPLES = insert(Base.metadata.tables[MetricSample.__tablename__])


def add_samples(session: Session, rows: list[dict[str, Any]]) -> None:
    """Many samples in one INSERT (an executemany of plain rows on the session's connection: no ORM object
    per row, and not the ORM's bulk insert either, which costs twice as much at 240 rows)."""
    if rows:
        session.connection().execute(_ADD_SAMPLES, rows)


def purge_before(session: Session, before: datetime, batch: int = PURGE_BATCH) -> int:
    """Delete up to `batch` of the oldest samples taken before `before`; returns how many went.

    The caller repeats while a full batch went (each batch its own short transaction, if it wants)."""
    oldest = select(MetricSample.id).where(MetricSample.taken_at < before).order_by(MetricSample.taken_at).limit(batch)
    return affected(
        session.execute(
            delete(MetricSample).where(MetricSample.id.in_(oldest)), execution_options={"synchronize_session": False}
        )
    )


def oldest_unrolled(session: Session, since: datetime | None, before: datetime) -> datetime | None:
    """The time of the oldest sample as taken (not rolled up) in [since, before): a range scan of taken_at."""
    m = MetricSample
    stmt = select(func.min(m.taken_at)).where(m.taken_at < before, m.samples.is_(None))
    if since is not None:
        stmt = stmt.where(m.taken_at >= since)
    found = session.scalar(stmt)
    return aware(found) if found is not None else None


def roll_up(session: Session, start: datetime, seconds: float = ROLLUP_SECONDS) -> int:
    """Replace the samples as taken in [start, start + seconds) by one row of means per app (the replicas'
    rows go); returns how many rows went. Run twice, the second finds nothing left to replace."""
    m = MetricSample
    taken = (m.taken_at >= start, m.taken_at < start + timedelta(seconds=seconds), m.samples.is_(None))
    figures = [getattr(m, name) for name in FIGURES]
    app_rows = session.execute(select(m.app_id, *figures).where(*taken, m.replica_name.is_(None))).all()
    means = period_means(((row[0], tuple(row[1:])) for row in app_rows), start, seconds)
    if means:
        session.connection().execute(_ADD_SAMPLES, means)
    return affected(session.execute(delete(m).where(*taken), execution_options={"synchronize_session": False}))


# -- reading --------------------------------------------------------------------------------------------------


def samples_since(
    session: Session,
    app_id: int,
    since: datetime,
    *,
    until: datetime | None = None,
    app_rows_only: bool = False,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[MetricSample]:
    """The app's samples taken at or after `since` (one range scan of the (app_id, taken_at) index)."""
    stmt = select(MetricSample).where(MetricSample.app_id == app_id, MetricSample.taken_at >= since)
    if until is not None:
        stmt = stmt.where(MetricSample.taken_at <= until)
    if app_rows_only:
        stmt = stmt.where(MetricSample.replica_name.is_(None))
    order = MetricSample.taken_at.desc() if newest_first else MetricSample.taken_at
    stmt = stmt.order_by(order, MetricSample.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def app_series(session: Session, app_id: int, since: datetime) -> list[tuple[datetime, tuple[float | None, ...]]]:
    """The app rows since `since`, oldest first, as (taken_at, (rps, p95_ms, cpu_percent, memory_percent,
    ready_replicas)): the few columns a chart draws, without building an object per row (a day is 43,200)."""
    m = MetricSample
    rows = session.execute(
        select(m.taken_at, m.rps, m.p95_ms, m.cpu_percent, m.memory_percent, m.ready_replicas)
        .where(m.app_id == app_id, m.taken_at >= since, m.replica_name.is_(None))
        .order_by(m.taken_at)
    )
    return [
        (aware(at), (rps, p95, cpu, mem, None if ready is None else float(ready)))
        for at, rps, p95, cpu, mem, ready in rows
    ]


def current(session: Session, app_id: int, since: datetime) -> tuple[MetricSample | None, list[MetricSample]]:
    """The app's latest app row taken at or after `since` and the replica rows of the same collection."""
    app_row = session.scalars(
        select(MetricSample)
        .where(MetricSample.app_id == app_id, MetricSample.taken_at >= since, MetricSample.replica_name.is_(None))
        .order_by(MetricSample.taken_at.desc(), MetricSample.id.desc())
        .limit(1)
    ).one_or_none()
    if app_row is None:
        return None, []
    replicas = session.scalars(
        select(MetricSample)
        .where(
            MetricSample.app_id == app_id,
            MetricSample.taken_at == app_row.taken_at,
            MetricSample.replica_name.is_not(None),
        )
        .order_by(MetricSample.replica_name)
    ).all()
    return app_row, list(replicas)


def _newest(since: datetime) -> Subquery:
    """Each app's latest collection time at or after `since` (its app row's).

    Grouped by `app_id + 0`, not `app_id`: grouping by the column lets SQLite's planner walk the whole
    (app_id, taken_at) index for its order instead of the few recent rows of the taken_at index, a scan of the
    entire history on every call (40 apps x 10 min of samples: 133 ms instead of 10; a day's retention: seconds).
    An expression cannot take its order from an index, so the range scan wins; PostgreSQL plans both alike."""
    app_id = (MetricSample.app_id + 0).label("app_id")
    return (
        select(app_id, func.max(MetricSample.taken_at).label("at"))
        .where(MetricSample.taken_at >= since, MetricSample.replica_name.is_(None))
        .group_by(app_id)
        .subquery()
    )


def latest_rows(session: Session, since: datetime, *, app_rows_only: bool = False) -> list[MetricSample]:
    """Every row of each app's latest collection taken at or after `since` (a range scan of the taken_at
    index: keep `since` recent, a few collection periods back). Per app: its app row, then replicas by name
    (`app_rows_only`: the app rows alone, without loading the replicas' rows)."""
    newest = _newest(since)
    stmt = select(MetricSample).join(
        newest, (MetricSample.app_id == newest.c.app_id) & (MetricSample.taken_at == newest.c.at)
    )
    if app_rows_only:
        stmt = stmt.where(MetricSample.replica_name.is_(None))
    return sorted(session.scalars(stmt), key=lambda r: (r.app_id, r.replica_name is not None, r.replica_name or ""))


def latest_app_rows(session: Session, since: datetime) -> dict[int, MetricSample]:
    """Every app's latest app row taken at or after `since` (see `latest_rows`)."""
    return {row.app_id: row for row in latest_rows(session, since, app_rows_only=True)}


@dataclass(frozen=True)
class Averages:
    """Means over a window of one series: the app's (replica None) or one replica's."""

    replica: str | None
    samples: int
    first: datetime
    last: datetime
    cpu_percent: float | None
    memory_percent: float | None
    rps: float | None
    p95_ms: float | None
    active_connections: float | None
    error_rate: float | None
    ready_replicas: float | None

    @property
    def span_seconds(self) -> float:
        return (self.last - self.first).total_seconds()


def window_averages(
    session: Session, app_id: int, since: datetime, until: datetime | None = None
) -> dict[str | None, Averages]:
    """Means per series (None: the app row) over [since, until]: one range scan, grouped in the database."""
    return windows_averages(session, [app_id], since, until).get(app_id, {})


def windows_averages(
    session: Session, app_ids: Sequence[int], since: datetime, until: datetime | None = None
) -> dict[int, dict[str | None, Averages]]:
    """`window_averages` of many apps over the same window, in one grouped query (the autoscaler's survey)."""
    out: dict[int, dict[str | None, Averages]] = {}
    if not app_ids:
        return out
    m = MetricSample
    weight = func.coalesce(m.samples, 1)  # a rolled-up row weighs the samples it stands for

    def weighted(column: Any) -> Any:
        """The mean over the rows that have the figure, each row weighing its samples (float division)."""
        return func.sum(cast(column, Float) * weight) / func.sum(case((column.is_not(None), weight)))

    stmt = (
        select(
            m.app_id,
            m.replica_name,
            func.sum(weight),
            func.min(m.taken_at),
            func.max(m.taken_at),
            weighted(m.cpu_percent),
            weighted(m.memory_percent),
            weighted(m.rps),
            weighted(m.p95_ms),
            weighted(m.active_connections),
            weighted(m.error_rate),
            weighted(m.ready_replicas),
        )
        .where(m.app_id.in_(list(app_ids)), m.taken_at >= since)
        .group_by(m.app_id, m.replica_name)
    )
    if until is not None:
        stmt = stmt.where(m.taken_at <= until)
    for app_id, name, count, first, last, *means in session.execute(stmt):
        values = [None if v is None else float(v) for v in means]
        out.setdefault(app_id, {})[name] = Averages(name, int(count), aware(first), aware(last), *values)
    return out


def metric_window(
    session: Session, app_id: int, since: datetime, until: datetime | None = None, replicas: Sequence[str] | None = None
) -> MetricWindow:
    """The autoscaler's input: per-replica and app-level means over the window.

    `replicas` limits the per-replica part to those names (the replicas that exist now)."""
    return window_of(window_averages(session, app_id, since, until), replicas)


def window_of(groups: dict[str | None, Averages], replicas: Sequence[str] | None = None) -> MetricWindow:
    """`metric_window` from an app's averages already read."""
    app = groups.get(None)
    per_replica = {
        name: ReplicaSample(
            cpu_percent=a.cpu_percent,
            memory_percent=a.memory_percent,
            rps=a.rps,
            p95_ms=a.p95_ms,
            active_connections=a.active_connections,
        )
        for name, a in groups.items()
        if name is not None and (replicas is None or name in replicas)
    }
    return MetricWindow(
        span_seconds=app.span_seconds if app is not None else 0.0,
        replicas=per_replica,
        rps=app.rps if app is not None else None,
        p95_ms=app.p95_ms if app is not None else None,
        active_connections=app.active_connections if app is not None else None,
    )
