"""Replicas: one row per container Orchestry runs for an app (a slot of the app at a revision)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, case, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.apps import App, AppRevision
from orchestry.models.base import Base, affected, aware, utcnow
from orchestry.models.changes import QUIET

REPLICA_STATES = ("pending", "starting", "running", "draining", "stopping", "exited", "failed")
HEALTH_STATES = ("unknown", "healthy", "unhealthy")


class Replica(Base):
    __tablename__ = "replicas"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128), unique=True, doc="container name")
    container_id: Mapped[str | None] = mapped_column(String(80))
    host: Mapped[str | None] = mapped_column(String(64))
    host_name: Mapped[str | None] = mapped_column(String(255), doc="the Swarm host it runs on (None: docker)")
    port: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    health: Mapped[str] = mapped_column(String(16), default="unknown")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, default=0)
    last_check_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    drain_started_at: Mapped[datetime | None] = mapped_column(doc="left rotation, waiting to be stopped")
    ports: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="container port -> port on 127.0.0.1")
    started_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def address(self) -> str | None:
        return address_of(self.host, self.port)


def address_of(host: str | None, port: int | None) -> str | None:
    """The `host:port` a replica is published at (None until it has both)."""
    return f"{host}:{port}" if host and port else None


def replicas_of(session: Session, app_id: int) -> list[Replica]:
    return list(session.scalars(select(Replica).where(Replica.app_id == app_id).order_by(Replica.slot)))


def replica_counts(session: Session) -> dict[int, int]:
    """app id -> how many replica rows it has, every app in one query (apps without any are absent)."""
    rows = session.execute(select(Replica.app_id, func.count()).group_by(Replica.app_id))
    return {app_id: int(n) for app_id, n in rows}


def replicas_by_host(session: Session) -> dict[str, tuple[int, int]]:
    """Swarm host name -> (replicas running there, those healthy), in one query (docker runtime: empty)."""
    healthy = func.sum(case((Replica.health == "healthy", 1), else_=0))
    rows = session.execute(
        select(Replica.host_name, func.count(), healthy)
        .where(Replica.host_name.is_not(None), Replica.state == "running")
        .group_by(Replica.host_name)
    )
    return {str(name): (int(n), int(ok or 0)) for name, n, ok in rows}


def count_replicas(session: Session, app_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Replica).where(Replica.app_id == app_id)) or 0


def sync_observed(session: Session, app_id: int, observed: list[dict[str, object]]) -> None:
    """Make the app's replica rows mirror what the engine reports (health fields are kept).

    `observed` holds dicts with name, slot, revision, container_id, host, port, state, started_at, ports, and
    host_name on the swarm runtime.
    """
    rows = {r.name: r for r in session.scalars(select(Replica).where(Replica.app_id == app_id))}
    seen = set()
    for obs in observed:
        name = str(obs["name"])
        seen.add(name)
        row = rows.get(name)
        if row is None or row.container_id != obs["container_id"]:
            if row is not None:
                session.delete(row)
                session.flush()
            row = Replica(app_id=app_id, name=name)
            session.add(row)
        for key in ("slot", "revision", "container_id", "host", "port", "state", "ports"):
            setattr(row, key, obs[key])
        row.host_name = str(obs["host_name"]) if obs.get("host_name") else None
        row.started_at = latest(row.started_at, obs["started_at"])
    for name, row in rows.items():
        if name not in seen:
            session.delete(row)


def latest(known: datetime | None, observed: object) -> datetime | None:
    """The start time of one container, as precisely as any observation gave it.

    Docker's list gives the creation time in whole seconds, its inspect the start time to the nanosecond; both
    only ever fall short of the real start, so the later one is the better. The health check's initial delay
    counts from it: a truncated time would let the first check come up to a second early."""
    seen = observed if isinstance(observed, datetime) else None
    if known is None or seen is None:
        return seen or known
    return max(aware(known), aware(seen))


def address_of_container(session: Session, container_id: str) -> str | None:
    """The `host:port` a replica's container is published at, by the container's id (None: unknown)."""
    row = session.execute(
        select(Replica.host, Replica.port).where(Replica.container_id == container_id).limit(1)
    ).first()
    return address_of(row[0], row[1]) if row is not None else None


def mark_exited(session: Session, container_id: str) -> bool:
    """Docker announced the container's death: its row says so at once, so routing drops it before the
    job that replaces it observes anything (that job's observation then agrees). True when a row changed."""
    result = session.execute(
        update(Replica).where(Replica.container_id == container_id, Replica.state == "running").values(state="exited")
    )
    return affected(result) > 0


def start_draining(session: Session, app_id: int, names: list[str], now: datetime) -> None:
    """Mark the named replicas of the app as leaving rotation (those not already draining)."""
    session.execute(
        update(Replica)
        .where(Replica.app_id == app_id, Replica.name.in_(names), Replica.drain_started_at.is_(None))
        .values(drain_started_at=now)
        .execution_options(synchronize_session=False)
    )


# What the health sweep reads of a replica (columns, not entities: hundreds of rows every tick). Columns 5 to 10
# are its health (controller/health.py `_stored`); 11 is its host (None on the docker runtime).
HEALTH_COLUMNS = (
    Replica.id,
    Replica.name,
    Replica.ports,
    Replica.started_at,
    Replica.created_at,
    Replica.health,
    Replica.consecutive_successes,
    Replica.consecutive_failures,
    Replica.last_check_at,
    Replica.last_error,
    Replica.last_latency_ms,
    Replica.host,
)


def health_rows(session: Session, app: str | None = None) -> list[Any]:
    """The replicas the health sweep checks (running, not draining, of running or failed apps; of `app` only
    when given): HEALTH_COLUMNS, then the app's name, its revision's id and content hash."""
    stmt = (
        select(*HEALTH_COLUMNS, App.name, AppRevision.id, AppRevision.content_hash)
        .join(App, App.id == Replica.app_id)
        .join(AppRevision, (AppRevision.app_id == App.id) & (AppRevision.number == Replica.revision))
        .where(App.status.in_(("running", "failed")), Replica.state == "running", Replica.drain_started_at.is_(None))
    )
    if app is not None:
        stmt = stmt.where(App.name == app)
    return list(session.execute(stmt).all())


def health_rows_for_update(session: Session, ids: list[int]) -> list[Any]:
    """HEALTH_COLUMNS of the replicas `ids`, locked: re-read in the transaction that writes their health."""
    return list(session.execute(select(*HEALTH_COLUMNS).where(Replica.id.in_(ids)).with_for_update()).all())


def mark_healthy(session: Session, ids: list[int]) -> None:
    """Replicas of apps without a check: running is healthy."""
    session.execute(update(Replica).where(Replica.id.in_(ids)).values(health="healthy"))


def write_health(session: Session, changes: list[dict[str, Any]]) -> None:
    """Health columns of many replicas in one executemany by primary key (each dict holds its `id`). Quiet
    (models.changes): the health sweep, their only writer, keeps what it wrote over the rows it read."""
    session.execute(update(Replica), changes, execution_options={QUIET: True})


def running_replica_columns(session: Session, app_ids: Iterable[int]) -> list[Any]:
    """(app id, name, container id, host, port, health, drain started) of the running replicas with a container
    of these apps, by app and slot: columns, not entities (every replica, every metrics collection)."""
    return list(
        session.execute(
            select(
                Replica.app_id,
                Replica.name,
                Replica.container_id,
                Replica.host,
                Replica.port,
                Replica.health,
                Replica.drain_started_at,
            )
            .where(Replica.app_id.in_(list(app_ids)), Replica.state == "running", Replica.container_id.is_not(None))
            .order_by(Replica.app_id, Replica.slot)
        ).all()
    )
