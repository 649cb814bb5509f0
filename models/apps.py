"""Apps and their revisions: what users asked for.

An app row holds the desired state (replica count, status); each registered spec that differs from the
last one becomes a new numbered revision, kept as history with its content hash and the raw document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, and_, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from orchestry.models.base import Base, utcnow

APP_STATUSES = ("registered", "running", "stopped", "failed", "deleting")


class App(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="registered")
    status_reason: Mapped[str | None] = mapped_column(Text)
    desired_replicas: Mapped[int] = mapped_column(Integer, default=0)
    revision: Mapped[int] = mapped_column(Integer, default=1, doc="number of the revision in force")
    restarts: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="rolling restarts asked for (workflows/rollout.py desired_hash)"
    )
    scaling_policy: Mapped[dict[str, Any] | None] = mapped_column(
        doc="the scaling section set through the API, in force instead of the spec's (models/scaling.py)"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    revisions: Mapped[list[AppRevision]] = relationship(
        back_populates="app",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AppRevision.number",
    )


class AppRevision(Base):
    __tablename__ = "app_revisions"
    __table_args__ = (UniqueConstraint("app_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(71))
    spec: Mapped[dict[str, Any]] = mapped_column(doc="normalized spec: defaults filled in")
    raw: Mapped[str] = mapped_column(Text, doc="the body exactly as submitted")
    raw_format: Mapped[str] = mapped_column(String(8))
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    restored_from: Mapped[int | None] = mapped_column(Integer, doc="the revision a rollback restored")

    app: Mapped[App] = relationship(back_populates="revisions")


def get_app(session: Session, name: str) -> App | None:
    return session.scalars(select(App).where(App.name == name)).one_or_none()


def app_status(session: Session, name: str) -> str | None:
    """An app's status as this transaction sees it now (None: no such app)."""
    return session.scalars(select(App.status).where(App.name == name)).one_or_none()


def list_apps(session: Session) -> list[App]:
    return list(session.scalars(select(App).order_by(App.name)))


class AppLine(NamedTuple):
    """What a list of apps shows of one: its row's plain fields and three of its spec's."""

    id: int
    name: str
    status: str
    revision: int
    desired_replicas: int
    updated_at: datetime
    scaling_policy: dict[str, Any] | None
    type: str | None
    image: str | None
    spec_mode: str | None  # the spec's scaling mode (the API's policy, when set, is in force instead)
    spec_min_replicas: int | None  # the spec's minReplicas (likewise)


def app_lines(session: Session) -> list[AppLine]:
    """Every app with the few fields of its current revision a list shows, in one query: the spec's
    fields are read by the database (JSON paths), not by decoding every app's whole document here."""
    current = and_(AppRevision.app_id == App.id, AppRevision.number == App.revision)
    spec = AppRevision.spec
    rows = session.execute(
        select(
            App.id,
            App.name,
            App.status,
            App.revision,
            App.desired_replicas,
            App.updated_at,
            App.scaling_policy,
            spec[("spec", "type")].as_string(),
            spec[("spec", "image")].as_string(),
            spec[("scaling", "mode")].as_string(),
            spec[("scaling", "minReplicas")].as_integer(),
        )
        .outerjoin(AppRevision, current)
        .order_by(App.name)
    )
    return [AppLine(*row) for row in rows]


def get_revision(session: Session, app: App, number: int | None = None) -> AppRevision | None:
    wanted = app.revision if number is None else number
    return session.scalars(
        select(AppRevision).where(AppRevision.app_id == app.id, AppRevision.number == wanted)
    ).one_or_none()


def get_app_for_update(session: Session, name: str) -> App | None:
    """The app's row, locked until the transaction ends (a decision that writes it next)."""
    return session.scalars(select(App).where(App.name == name).with_for_update()).one_or_none()


def running_apps(session: Session) -> dict[int, str]:
    """Running apps: id -> name, by name."""
    rows = session.execute(select(App.id, App.name).where(App.status == "running").order_by(App.name))
    return {app_id: name for app_id, name in rows}


def desired_states(session: Session) -> list[tuple[str, str, int, str, int]]:
    """Every app's name, status, desired replica count, the content hash of its revision in force and its
    restart count (a restart folds into the hash its replicas carry: workflows.rollout.desired_hash)."""
    rows = session.execute(
        select(App.name, App.status, App.desired_replicas, AppRevision.content_hash, App.restarts).join(
            AppRevision, (AppRevision.app_id == App.id) & (AppRevision.number == App.revision)
        )
    ).all()
    return [(name, status, replicas, spec_hash, restarts) for name, status, replicas, spec_hash, restarts in rows]


def current_specs(session: Session) -> dict[str, Any]:
    """Every app's name -> the normalised spec of its revision in force (the edge's routes are read from them)."""
    rows = session.execute(
        select(App.name, AppRevision.spec).join(
            AppRevision, (AppRevision.app_id == App.id) & (AppRevision.number == App.revision)
        )
    ).all()
    return {name: spec for name, spec in rows}


def running_app_inputs(session: Session) -> list[Any]:
    """The autoscaler's survey, one row per running app by name: id, name, desired replicas, the API's
    scaling policy, and its revision in force (id, content hash; None when it has none)."""
    return list(
        session.execute(
            select(App.id, App.name, App.desired_replicas, App.scaling_policy, AppRevision.id, AppRevision.content_hash)
            .outerjoin(AppRevision, (AppRevision.app_id == App.id) & (AppRevision.number == App.revision))
            .where(App.status == "running")
            .order_by(App.name)
        ).all()
    )


def revision_specs(session: Session, ids: list[int]) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, content hash, spec) of the revisions `ids`: revisions never change, so callers may keep them."""
    rows = session.execute(
        select(AppRevision.id, AppRevision.content_hash, AppRevision.spec).where(AppRevision.id.in_(ids))
    ).all()
    return [(rev_id, content_hash, dict(spec)) for rev_id, content_hash, spec in rows]


T = TypeVar("T")


class RevisionMemo(Generic[T]):
    """What a caller derives from revisions' specs, by (revision id, content hash), each read once: a revision
    never changes, but SQLite may give a deleted app's revision id to a new one, so the hash is part of the key.
    Beyond `limit` revisions it starts over (and then reads every revision asked for, not only the new ones)."""

    def __init__(self, derive: Callable[[dict[str, Any]], T], limit: int = 10_000) -> None:
        self.derive, self.limit = derive, limit
        self._items: dict[tuple[int, str], T] = {}

    def load(self, session: Session, keys: Iterable[tuple[int | None, str | None]]) -> dict[tuple[int, str], T]:
        """The derived values of these revisions (a key without a revision is left out)."""
        wanted = {(rev_id, content_hash) for rev_id, content_hash in keys if rev_id is not None and content_hash}
        missing = wanted - self._items.keys()
        if missing and len(self._items) + len(missing) > self.limit:
            self._items.clear()
            missing = wanted
        if missing:
            for rev_id, content_hash, spec in revision_specs(session, sorted({rev_id for rev_id, _ in missing})):
                self._items[(rev_id, content_hash)] = self.derive(spec)
        return {key: self._items[key] for key in wanted if key in self._items}
