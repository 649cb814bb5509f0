"""Read-only aggregates for monitoring: counts and durations straight from the tables (any node can answer)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from orchestry.models.apps import App
from orchestry.models.base import utcnow
from orchestry.models.jobs import Job
from orchestry.models.replicas import Replica


@dataclass(frozen=True)
class AppStat:
    name: str
    status: str
    desired: int
    running: int
    healthy: int


@dataclass(frozen=True)
class JobStat:
    kind: str
    status: str
    count: int
    seconds: float  # summed start-to-finish time of the finished ones


def app_stats(session: Session) -> list[AppStat]:
    rows = session.execute(
        select(
            App.name,
            App.status,
            App.desired_replicas,
            func.count(Replica.id).filter(Replica.state == "running"),
            func.count(Replica.id).filter(
                Replica.state == "running", Replica.health == "healthy", Replica.drain_started_at.is_(None)
            ),
        )
        .outerjoin(Replica, Replica.app_id == App.id)
        .group_by(App.id, App.name, App.status, App.desired_replicas)
        .order_by(App.name)
    ).all()
    return [AppStat(n, s, d if s in ("running", "failed") else 0, r or 0, h or 0) for n, s, d, r, h in rows]


def _span(session: Session) -> Any:
    """A finished job's run time in seconds, as the database computes it (never below 0)."""
    if session.get_bind().dialect.name == "sqlite":  # timestamps are text there: julianday reads them
        span: Any = (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0
        return func.max(span, 0.0)  # SQLite's max of two values
    return func.greatest(func.extract("epoch", Job.finished_at - Job.started_at), 0.0)


SETTLED_SECONDS = 120  # a job row older than this is committed (transactions are short), its id settled


@dataclass
class _Totals:
    """What scrapes already counted of one database: every job with an id up to `upto` that had ended
    (an ended job never changes again), and the ids up to `upto` that had not (`open`, read again)."""

    upto: int = 0
    counts: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    open: set[int] = field(default_factory=set)


_totals: dict[str, _Totals] = {}
_totals_lock = threading.Lock()


def job_stats(session: Session) -> list[JobStat]:
    """Jobs per kind and status with the summed run time of the finished ones.

    Job rows are never purged, so a scrape does not read them all: ended jobs are added up once (by the
    database, on the first scrape of this process) and kept; each later scrape reads only the jobs created
    since (and those still live then), so it costs as much as the jobs of the last minutes, not the table.
    Ids are only taken as settled once their row is SETTLED_SECONDS old: PostgreSQL may commit a lower id
    after a higher one."""
    key = session.get_bind().engine.url.render_as_string(hide_password=True)
    with _totals_lock:
        known = _totals.setdefault(key, _Totals())
        settled_before = utcnow() - timedelta(seconds=SETTLED_SECONDS)
        if known.upto == 0:
            first = session.scalar(select(func.max(Job.id)).where(Job.created_at < settled_before)) or 0
            ended = and_(Job.id <= first, Job.finished_at.is_not(None))
            ran = Job.started_at.is_not(None)
            for kind, status, count, seconds in session.execute(
                select(Job.kind, Job.status, func.count(Job.id), func.sum(case((ran, _span(session)), else_=0.0)))
                .where(ended)
                .group_by(Job.kind, Job.status)
            ):
                known.counts[(kind, status)] = (int(count), float(seconds or 0.0))
            known.open = set(session.scalars(select(Job.id).where(Job.id <= first, Job.finished_at.is_(None))))
            known.upto = first
        counts = dict(known.counts)
        newer = or_(Job.id > known.upto, Job.id.in_(known.open)) if known.open else Job.id > known.upto
        rows = session.execute(
            select(Job.id, Job.kind, Job.status, Job.started_at, Job.finished_at, Job.created_at).where(newer)
        ).all()
        upto, still_open = known.upto, set()
        # Ids settle in order: up to the first row that is not settled yet.
        for row in sorted(rows, key=lambda r: r.id):
            if row.id > known.upto and row.created_at >= settled_before:
                break
            upto = max(upto, row.id)
        for row in rows:
            seconds = 0.0
            if row.finished_at is not None and row.started_at is not None:
                seconds = max(0.0, (row.finished_at - row.started_at).total_seconds())
            count, total = counts.get((row.kind, row.status), (0, 0.0))
            counts[(row.kind, row.status)] = (count + 1, total + seconds)
            if row.id <= upto:
                if row.finished_at is None:
                    still_open.add(row.id)
                else:  # ended and settled: counted for good
                    count, total = known.counts.get((row.kind, row.status), (0, 0.0))
                    known.counts[(row.kind, row.status)] = (count + 1, total + seconds)
        known.upto, known.open = upto, still_open
    return [JobStat(k, s, c, seconds) for (k, s), (c, seconds) in sorted(counts.items())]


def health_counts(session: Session) -> list[tuple[str, str, int]]:
    """(app, health state, replicas) over the running replicas: the health checks' current verdicts."""
    rows = session.execute(
        select(App.name, Replica.health, func.count(Replica.id))
        .join(Replica, Replica.app_id == App.id)
        .where(Replica.state == "running")
        .group_by(App.name, Replica.health)
        .order_by(App.name, Replica.health)
    ).all()
    return [(name, health, int(count)) for name, health, count in rows]
