"""The routing table's state: the generation last pushed to nginx and the generation nginx confirmed.

Generations only grow, across leaders, so nginx can refuse a stale push from a deposed leader.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.apps import App, AppRevision
from orchestry.models.base import Base, utcnow
from orchestry.models.replicas import Replica
from orchestry.workflows.revision import revision_view
from orchestry.workflows.routing import ReplicaView, RoutedApp
from orchestry.workflows.wake import wake_entry

ROUTING_NAME = "default"


class RoutingState(Base):
    __tablename__ = "routing_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0, doc="last table computed and pushed")
    served_generation: Mapped[int] = mapped_column(BigInteger, default=0, doc="what nginx confirmed serving")
    routes: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="app -> addresses of that generation")
    wake: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default="{}", doc="app -> its wake bounds: requests held while it has no replica"
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def routing_state(session: Session) -> RoutingState:
    row = session.get(RoutingState, ROUTING_NAME, with_for_update=True)
    if row is None:
        row = RoutingState(name=ROUTING_NAME, generation=0, served_generation=0, routes={}, wake={})
        session.add(row)
        session.flush()
    return row


def stored_generation(session: Session) -> int:
    """The generation last stored (0: none yet), read without a lock."""
    value = session.scalar(select(RoutingState.generation).where(RoutingState.name == ROUTING_NAME))
    return int(value or 0)


def routed_apps(session: Session) -> list[RoutedApp]:
    """Every app with what decides its routes: type, status, health check, and its replicas."""
    apps = session.execute(
        select(App.id, App.name, App.status, AppRevision.spec, App.scaling_policy).join(
            AppRevision, (AppRevision.app_id == App.id) & (AppRevision.number == App.revision)
        )
    ).all()
    by_app: dict[int, list[ReplicaView]] = {}
    for r in session.scalars(select(Replica)):
        by_app.setdefault(r.app_id, []).append(
            ReplicaView(r.address, r.state == "running", r.health, r.drain_started_at is not None)
        )
    return [
        RoutedApp(
            name,
            view.type,
            status,
            view.probed,
            tuple(by_app.get(app_id, [])),
            wake_entry(dict(policy) if policy is not None else dict(spec.get("scaling") or {}), spec.get("wake")),
        )
        for app_id, name, status, spec, policy in apps
        for view in (revision_view(spec),)
    ]


class StoredRoutes(NamedTuple):
    generation: int
    routes: dict[str, Any]  # app -> addresses
    wake: dict[str, Any]  # app -> wake bounds (workflows/wake.py)


def stored_routes(session: Session) -> StoredRoutes | None:
    """The generation last stored and its table, read without a lock; None before any."""
    row = session.execute(
        select(RoutingState.generation, RoutingState.routes, RoutingState.wake).where(RoutingState.name == ROUTING_NAME)
    ).one_or_none()
    return None if row is None else StoredRoutes(row.generation, row.routes, dict(row.wake or {}))
