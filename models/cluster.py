"""The leader lease and the controller nodes that compete for it.

The lease is one row, timed by the database's clock (PostgreSQL's `clock_timestamp()`; SQLite is one node,
so the local clock is the database's). `term` grows on every acquisition and is the fencing token: job
claims and job outcomes are conditioned on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import BigInteger, String, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, affected, utcnow

LEASE_NAME = "controller"


class LeaderLease(Base):
    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    term: Mapped[int] = mapped_column(BigInteger, default=0)
    acquired_at: Mapped[datetime | None] = mapped_column()
    renewed_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()


class ControllerNode(Base):
    __tablename__ = "controller_nodes"

    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


def db_now(session: Session) -> datetime:
    """The database's clock (every node agrees on it), as an aware UTC datetime."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value
    return utcnow()


def acquire_or_renew(session: Session, node: str, seconds: float) -> tuple[int, datetime] | None:
    """Hold the lease for `seconds` more: renew it if ours and unexpired, else take it if free or expired.

    Returns (term, expires_at) while this node leads, None otherwise. An expired lease is never renewed:
    taking it again starts a new term, so anything fenced by the old term stays fenced.
    """
    dialect = session.get_bind().dialect.name
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(LeaderLease)
    session.execute(ins.values(name=LEASE_NAME, term=0).on_conflict_do_nothing(index_elements=["name"]))
    now = db_now(session)
    expires = now + timedelta(seconds=seconds)
    renewed = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == LEASE_NAME, LeaderLease.holder == node, LeaderLease.expires_at > now)
        .values(renewed_at=now, expires_at=expires)
        .returning(LeaderLease.term)
    ).scalar_one_or_none()
    if renewed is not None:
        return int(renewed), expires
    taken = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == LEASE_NAME)
        .where((LeaderLease.holder.is_(None)) | (LeaderLease.expires_at <= now))
        .values(holder=node, term=LeaderLease.term + 1, acquired_at=now, renewed_at=now, expires_at=expires)
        .returning(LeaderLease.term)
    ).scalar_one_or_none()
    return (int(taken), expires) if taken is not None else None


def release(session: Session, node: str, term: int) -> bool:
    """Give the lease up at once (clean shutdown), so another node takes over without waiting."""
    res = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == LEASE_NAME, LeaderLease.holder == node, LeaderLease.term == term)
        .values(holder=None, expires_at=db_now(session))
        .execution_options(synchronize_session=False)
    )
    return affected(res) == 1


def current_lease(session: Session) -> LeaderLease | None:
    return session.scalars(select(LeaderLease).where(LeaderLease.name == LEASE_NAME)).one_or_none()


def heartbeat(session: Session, node: str, address: str, version: str) -> None:
    row = session.get(ControllerNode, node)
    now = db_now(session)
    if row is None:
        session.add(ControllerNode(node_id=node, address=address, version=version, started_at=now, heartbeat_at=now))
    else:
        row.address, row.version, row.heartbeat_at = address, version, now
