"""Webhooks and their deliveries.

A webhook's URL and signing secret are sealed with the installation's secret key (config/secretbox.py), as
certificates' keys are: the URL too, since its path is often the credential (Slack's). Only `url_display`
(scheme, host, port) is kept in the clear. Each delivery is one event sent to one webhook: its `key` is the
idempotency key a receiver sees on every attempt. Outcome counters live on the webhook row, so the
Prometheus counter only grows while the delivery history is trimmed to the last KEEP_DELIVERIES.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, affected, utcnow
from orchestry.models.events import Event

KEEP_DELIVERIES = 200  # finished deliveries kept per webhook (the history); older ones are deleted
OUTCOMES = ("delivered", "failed", "retried", "dropped")


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url_ciphertext: Mapped[str] = mapped_column(Text, doc="the URL, Fernet-sealed")
    url_display: Mapped[str] = mapped_column(String(300), doc="scheme://host[:port] only")
    events: Mapped[list[Any]] = mapped_column(default=list, doc="event types, families, or *")
    format: Mapped[str] = mapped_column(String(16), default="json", doc="json | slack")
    secret_ciphertext: Mapped[str] = mapped_column(Text, doc="the HMAC signing secret, Fernet-sealed")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    retried: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        Index("ix_webhook_deliveries_webhook_id_status", "webhook_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(36), unique=True, doc="Orchestry-Delivery: the same on every attempt")
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigInteger, doc="the event sent (none for a test delivery)")
    event_type: Mapped[str] = mapped_column(String(48))
    status: Mapped[str] = mapped_column(String(16), default="pending", doc="pending | delivered | failed | dropped")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_code: Mapped[int | None] = mapped_column(Integer, doc="of the last attempt")
    error: Mapped[str | None] = mapped_column(Text, doc="why the last attempt did not deliver")
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[float | None] = mapped_column(Float, doc="of the last attempt")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


def webhook(session: Session, name: str) -> Webhook | None:
    return session.scalars(select(Webhook).where(Webhook.name == name)).one_or_none()


def list_webhooks(session: Session) -> list[Webhook]:
    return list(session.scalars(select(Webhook).order_by(Webhook.name)))


def count_webhooks(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Webhook)) or 0)


@dataclass(frozen=True)
class Subscriber:
    id: int
    name: str
    events: tuple[str, ...]


def subscribers(session: Session) -> list[Subscriber]:
    """The enabled webhooks and what each subscribes to (read once per transaction that recorded events)."""
    rows = session.execute(select(Webhook.id, Webhook.name, Webhook.events).where(Webhook.enabled.is_(True)))
    return [Subscriber(id_, name, tuple(events or ())) for id_, name, events in rows]


def pending_count(session: Session, webhook_id: int) -> int:
    stmt = select(func.count()).where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == "pending")
    return int(session.scalar(stmt) or 0)


def add_delivery(
    session: Session, webhook_id: int, event_type: str, event_id: int | None, status: str
) -> WebhookDelivery:
    """A delivery row (flushed: its id names the job that sends it)."""
    row = WebhookDelivery(
        key=str(uuid.uuid4()), webhook_id=webhook_id, event_id=event_id, event_type=event_type, status=status
    )
    session.add(row)
    session.flush()
    if status == "dropped":
        count(session, webhook_id, "dropped")
    return row


def count(session: Session, webhook_id: int, outcome: str, by: int = 1) -> None:
    """`by` more `outcome` (delivered, failed, retried, dropped) on the webhook's counter."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown delivery outcome {outcome}")
    column = getattr(Webhook, outcome)
    session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id)
        .values({column: column + by})
        .execution_options(synchronize_session=False)
    )


def deliveries(session: Session, webhook_id: int, limit: int = 50) -> list[WebhookDelivery]:
    """Newest first."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)))


@dataclass(frozen=True)
class ToSend:
    """All a delivery job reads, in one read: the delivery, its webhook's sealed URL and secret, its event."""

    delivery_id: int
    key: str
    status: str
    attempts: int
    webhook_id: int
    webhook: str
    url_ciphertext: str
    secret_ciphertext: str
    format: str
    event_type: str
    created_at: datetime
    event: Event | None
    enabled: bool = True


def to_send(session: Session, delivery_id: int) -> ToSend | None:
    """None when the delivery is gone (its webhook was deleted)."""
    row = session.execute(
        select(WebhookDelivery, Webhook)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id == delivery_id)
    ).one_or_none()
    if row is None:
        return None
    d, w = row
    event = session.get(Event, d.event_id) if d.event_id is not None else None
    return ToSend(
        d.id,
        d.key,
        d.status,
        d.attempts,
        w.id,
        w.name,
        w.url_ciphertext,
        w.secret_ciphertext,
        w.format,
        d.event_type,
        d.created_at,
        event,
        w.enabled,
    )


def record_attempt(
    session: Session,
    delivery_id: int,
    *,
    status: str,
    response_code: int | None,
    error: str | None,
    duration_ms: float,
    now: datetime,
) -> bool:
    """One attempt's outcome on a pending delivery, and on its webhook's counters; False if it was not pending
    any more (another run already settled it). A finished delivery trims the webhook's history."""
    row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if row is None or row.status != "pending":
        return False
    row.attempts += 1
    row.status, row.response_code, row.error = status, response_code, error
    row.duration_ms, row.last_attempt_at = duration_ms, now
    count(session, row.webhook_id, "retried" if status == "pending" else status)
    if status != "pending":
        row.finished_at = now
        _trim(session, row.webhook_id)
    return True


def _trim(session: Session, webhook_id: int) -> None:
    oldest_kept = session.scalar(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.id.desc())
        .offset(KEEP_DELIVERIES - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(
            delete(WebhookDelivery)
            .where(
                WebhookDelivery.webhook_id == webhook_id,
                WebhookDelivery.id < oldest_kept,
                WebhookDelivery.status != "pending",
            )
            .execution_options(synchronize_session=False)
        )


DISABLED = "webhook disabled"  # the error of a delivery dropped because its webhook was disabled


def set_enabled(session: Session, row: Webhook, enabled: bool, now: datetime) -> int | None:
    """Enable or disable the webhook; None when it already was, else the deliveries dropped. Disabling drops
    the event deliveries still waiting (retries of a broken receiver included): they would otherwise go out
    when it is enabled again, late. A test delivery asked for meanwhile is still sent."""
    if row.enabled == enabled:
        return None
    row.enabled = enabled
    if enabled:
        return 0
    dropped = affected(
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.webhook_id == row.id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.event_id.is_not(None),
            )
            .values(status="dropped", error=DISABLED, finished_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if dropped:
        count(session, row.id, "dropped", by=dropped)
    return dropped


def drop(session: Session, delivery_id: int, now: datetime) -> bool:
    """A pending delivery of a disabled webhook, not sent; False if it was not pending any more."""
    row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if row is None or row.status != "pending":
        return False
    row.status, row.error, row.finished_at = "dropped", DISABLED, now
    count(session, row.webhook_id, "dropped")
    return True


def delete_webhook(session: Session, row: Webhook) -> None:
    """The webhook and its history (a queued delivery job then finds nothing to send)."""
    session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id).execution_options(synchronize_session=False)
    )
    session.delete(row)
