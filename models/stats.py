"""Read-only aggregates for monitoring: counts and durations straight from the tables (any node can answer)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestry.models.apps import App
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


def job_stats(session: Session) -> list[JobStat]:
    rows = session.execute(select(Job.kind, Job.status, func.count(Job.id)).group_by(Job.kind, Job.status)).all()
    finished = session.execute(
        select(Job.kind, Job.status, Job.started_at, Job.finished_at).where(
            Job.finished_at.is_not(None), Job.started_at.is_not(None)
        )
    ).all()
    seconds: dict[tuple[str, str], float] = {}
    for kind, status, started, ended in finished:
        if started is None or ended is None:  # the query excludes them; the columns are nullable
            continue
        seconds[(kind, status)] = seconds.get((kind, status), 0.0) + max(0.0, (ended - started).total_seconds())
    return [JobStat(k, s, c, seconds.get((k, s), 0.0)) for k, s, c in rows]


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
