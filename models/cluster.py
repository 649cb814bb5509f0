"""The leader lease and the controller nodes that compete for it.

The lease is one row, timed by the database's clock (PostgreSQL's `clock_timestamp()`; SQLite is one node,
so the local clock is the database's). `term` grows on every acquisition and is the fencing token: job
claims and job outcomes are conditioned on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Exists, String, bindparam, exists, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, affected, aware, utcnow
from orchestry.workflows.lease import lease_action

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
    # What this node's nginx serves (every node routes: controller/mirror.py), for the leader's drains.
    routes_generation: Mapped[int | None] = mapped_column(BigInteger, doc="routing table its nginx confirmed")
    routes_reported_at: Mapped[datetime | None] = mapped_column()
    inflight: Mapped[dict[str, Any] | None] = mapped_column(doc="address -> requests its nginx has open there")
    # Its nginx's traffic counters (cumulative), for the leader's metrics: traffic enters at every node.
    traffic: Mapped[dict[str, Any] | None] = mapped_column()
    traffic_at: Mapped[datetime | None] = mapped_column()


def db_now(session: Session) -> datetime:
    """The database's clock (every node agrees on it), as an aware UTC datetime."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value
    return utcnow()


class Previous(NamedTuple):
    holder: str
    term: int
    expires_at: datetime
    lapsed: bool  # False: this node's own lease, given up when it stepped down (or its process restarted)


class Held(NamedTuple):
    """The lease as this node holds it after `acquire_or_renew`."""

    term: int
    expires_at: datetime
    acquired_at: datetime  # when this term began (the database's clock)
    new_term: bool  # taken just now, not renewed
    previous: Previous | None  # who held it before, when taken over from an expired lease


class Lost(NamedTuple):
    """Another node holds the lease (or nobody, with `holder` None), until `expires_at` by the database's clock."""

    holder: str | None
    expires_at: datetime | None
    now: datetime


def acquire_or_renew(session: Session, node: str, seconds: float, term: int | None = None) -> Held | Lost:
    """Hold the lease for `seconds` more: renew it if ours (at `term`) and unexpired, else take it if free,
    expired, or ours from an earlier leadership (`term` None: this node does not lead now).

    Returns `Held` while this node leads, `Lost` (whoever holds it, until when) otherwise. An expired lease
    is never renewed: taking it again starts a new term, so anything fenced by the old term stays fenced.
    The row is locked first, so the holder read here is the one replaced (the previous leader, for events).
    """
    if term is not None:  # leading: one statement, twice a second (issue 10); the election only if it fails
        renewed = renew(session, node, seconds, term)
        if renewed is not None:
            return renewed
    dialect = session.get_bind().dialect.name
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(LeaderLease)
    session.execute(ins.values(name=LEASE_NAME, term=0).on_conflict_do_nothing(index_elements=["name"]))
    row = session.execute(
        select(LeaderLease.holder, LeaderLease.term, LeaderLease.expires_at, LeaderLease.acquired_at)
        .where(LeaderLease.name == LEASE_NAME)
        .with_for_update()
    ).one()
    now = db_now(session)
    expires = now + timedelta(seconds=seconds)
    action = lease_action(row.holder, row.expires_at, int(row.term), node, term, now)
    if action == "renew":  # the row is locked and ours: the one renewal statement, as on the fast path
        renewed = renew(session, node, seconds, int(row.term))
        if renewed is not None:
            return renewed
    if action in ("renew", "wait"):
        return Lost(row.holder, row.expires_at, now)
    new_term = int(row.term) + 1
    session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == LEASE_NAME)
        .values(holder=node, term=new_term, acquired_at=now, renewed_at=now, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    previous = None
    if row.holder is not None and row.expires_at is not None:  # not released: it lapsed, or was ours
        previous = Previous(row.holder, int(row.term), row.expires_at, lapsed=row.expires_at <= now)
    return Held(new_term, expires, now, True, previous)


# Built once: the renewal runs twice a second for as long as a node leads, and building the statement (and its
# cache key) each time cost more than running it (issue 10). Executed on the session's connection, not through
# the ORM's bulk-update path.
_RENEW = (
    update(LeaderLease)
    .where(
        LeaderLease.name == LEASE_NAME,
        LeaderLease.holder == bindparam("holder_"),
        LeaderLease.term == bindparam("term_"),
        LeaderLease.expires_at > bindparam("now_"),
    )
    .values(renewed_at=bindparam("now_"), expires_at=bindparam("until_"))
    .returning(LeaderLease.acquired_at)
)


def renew(session: Session, node: str, seconds: float, term: int) -> Held | None:
    """Extend the live lease this node holds at `term`: the renewal `lease_action` would choose, as one
    conditioned UPDATE (it locks the row, as the election's locking read does). None when the lease is no
    longer ours and live: the caller then runs the election, which says who holds it."""
    now = db_now(session)
    expires = now + timedelta(seconds=seconds)
    params = {"holder_": node, "term_": term, "now_": now, "until_": expires}
    acquired = session.connection().execute(_RENEW, params).first()
    if acquired is None:
        return None
    return Held(term, expires, acquired[0] or now, False, None)


def release(session: Session, node: str, term: int) -> bool:
    """Give the lease up at once (clean shutdown), so another node takes over without waiting."""
    res = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == LEASE_NAME, LeaderLease.holder == node, LeaderLease.term == term)
        .values(holder=None, expires_at=db_now(session))
        .execution_options(synchronize_session=False)
    )
    return affected(res) == 1


def holds_lease(node: str, term: int, now: Any) -> Exists:
    """A condition for a statement: `node` still holds the lease of `term` at `now` (the database's clock).
    A write carrying it changes nothing once another term began or this one lapsed."""
    return exists().where(
        LeaderLease.name == LEASE_NAME,
        LeaderLease.holder == node,
        LeaderLease.term == term,
        LeaderLease.expires_at > now,
    )


def current_lease(session: Session) -> LeaderLease | None:
    return session.scalars(select(LeaderLease).where(LeaderLease.name == LEASE_NAME)).one_or_none()


_BEAT = (
    update(ControllerNode)
    .where(ControllerNode.node_id == bindparam("node_"))
    .values(address=bindparam("address_"), version=bindparam("version_"), heartbeat_at=bindparam("at_"))
)


def heartbeat(session: Session, node: str, address: str, version: str) -> None:
    """This node is alive (once a second): one UPDATE of its row (built once, as _RENEW), added the first time."""
    now = db_now(session)
    params = {"node_": node, "address_": address, "version_": version, "at_": now}
    if affected(session.connection().execute(_BEAT, params)) == 0:
        session.add(ControllerNode(node_id=node, address=address, version=version, started_at=now, heartbeat_at=now))


class RouteReport(NamedTuple):
    node: str
    generation: int
    inflight: dict[str, int]


def report_routes(session: Session, node: str, generation: int, inflight: dict[str, int]) -> None:
    """This node's nginx serves `generation` and has `inflight` requests open (read after confirming it)."""
    session.execute(
        update(ControllerNode)
        .where(ControllerNode.node_id == node)
        .values(routes_generation=generation, routes_reported_at=db_now(session), inflight=inflight)
        .execution_options(synchronize_session=False)
    )


def route_reports(session: Session, fresh_seconds: float, exclude: str | None = None) -> list[RouteReport]:
    """The nodes whose nginx reported within `fresh_seconds` (by the database's clock): the others are gone,
    or their nginx is, and no longer take traffic the leader must wait for."""
    since = db_now(session) - timedelta(seconds=fresh_seconds)
    rows = session.execute(
        select(ControllerNode.node_id, ControllerNode.routes_generation, ControllerNode.inflight).where(
            ControllerNode.routes_reported_at >= since, ControllerNode.routes_generation.is_not(None)
        )
    ).all()
    return [
        RouteReport(node, int(generation), {str(k): int(v) for k, v in (inflight or {}).items()})
        for node, generation, inflight in rows
        if node != exclude
    ]


def report_traffic(session: Session, node: str, counters: dict[str, Any]) -> None:
    """This node's nginx traffic counters as just read (`GET /_orchestry/stats`)."""
    session.execute(
        update(ControllerNode)
        .where(ControllerNode.node_id == node)
        .values(traffic=counters, traffic_at=db_now(session))
        .execution_options(synchronize_session=False)
    )


def traffic_reports(
    session: Session, fresh_seconds: float, exclude: str | None = None
) -> dict[str, tuple[float, dict[str, Any]]]:
    """node -> (when its counters were read, as epoch seconds by the database's clock, the counters)."""
    since = db_now(session) - timedelta(seconds=fresh_seconds)
    rows = session.execute(
        select(ControllerNode.node_id, ControllerNode.traffic_at, ControllerNode.traffic).where(
            ControllerNode.traffic_at >= since, ControllerNode.traffic.is_not(None)
        )
    ).all()
    return {
        node: (aware(at).timestamp(), body) for node, at, body in rows if node != exclude and isinstance(body, dict)
    }


def short_locks(session: Session, renew_seconds: float) -> None:
    """PostgreSQL: never wait long for the lease row, and never let a paused holder keep it locked."""
    if session.get_bind().dialect.name != "postgresql":
        return
    ms = max(100, int(renew_seconds * 1000))
    session.execute(text(f"SET LOCAL lock_timeout = {ms}"))
    session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {max(1000, 3 * ms)}"))
