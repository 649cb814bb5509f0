"""Events: the audit trail users read — who did what, to which app, when, with details.

Events name their app by name (no foreign key) so they outlive the app they describe. Each event recorded is
also noted in its session (`take_recorded`), so whatever must happen with it (a webhook's delivery,
operations/webhooks.py) is added to the same transaction when it commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, utcnow


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_app_name_created_at", "app_name", "created_at"),
        Index("ix_events_type_created_at", "type", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    type: Mapped[str] = mapped_column(String(48))
    app_name: Mapped[str | None] = mapped_column(String(63))
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


def record(
    session: Session,
    type_: str,
    message: str,
    *,
    actor: str,
    app_name: str | None = None,
    **details: Any,
) -> Event:
    """Add an event to the session; it is written with the change it describes (same transaction)."""
    event = Event(type=type_, message=message, actor=actor, app_name=app_name, details=details)
    session.add(event)
    session.info.setdefault(RECORDED, []).append(event)
    return event


RECORDED = "orchestry.recorded_events"


def take_recorded(session: Session) -> list[Event]:
    """The events recorded in this session since the last call (some may have been rolled back since)."""
    taken: list[Event] = session.info.pop(RECORDED, [])
    return taken


def query_events(
    session: Session,
    *,
    app_name: str | None = None,
    type_: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[Event]:
    """Newest first. `type_` matches exactly or as a dotted prefix ("app" matches "app.registered")."""
    stmt = select(Event)
    if app_name is not None:
        stmt = stmt.where(Event.app_name == app_name)
    if type_:
        stmt = stmt.where((Event.type == type_) | Event.type.startswith(type_ + ".", autoescape=True))
    if since is not None:
        stmt = stmt.where(Event.created_at >= since)
    return list(session.scalars(stmt.order_by(Event.created_at.desc(), Event.id.desc()).limit(limit)))


def recent_times(session: Session, app_name: str, event_type: str, limit: int = 20) -> list[datetime]:
    """When the app's last `limit` events of a type happened, newest first (a backoff's input)."""
    return list(
        session.scalars(
            select(Event.created_at)
            .where(Event.app_name == app_name, Event.type == event_type)
            .order_by(Event.created_at.desc())
            .limit(limit)
        )
    )


def detail_values(session: Session, event_type: str, key: str) -> dict[str, list[float]]:
    """Per app, the numeric `details[key]` of every event of `event_type` (the wake latencies of app.woke,
    for Prometheus): a handful of rows per app and day, each read as a whole row's details."""
    values: dict[str, list[float]] = {}
    for app_name, details in session.execute(
        select(Event.app_name, Event.details).where(Event.type == event_type, Event.app_name.is_not(None))
    ):
        value = (details or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values.setdefault(str(app_name), []).append(float(value))
    return values
