"""This installation's id: one row, created with the database (migration 0007).

Every container and volume Orchestry creates carries it (LABEL_INSTALLATION), so two installations that
share a Docker engine and a cluster name never take each other's containers for their own.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, utcnow


class Installation(Base):
    __tablename__ = "installation"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def installation_id(session: Session) -> str:
    """The id (the oldest row, should a second ever appear); created here if the row was deleted."""
    row = session.scalars(select(Installation).order_by(Installation.created_at, Installation.id).limit(1)).first()
    if row is None:
        row = Installation(id=uuid.uuid4().hex)
        session.add(row)
        session.flush()
    return row.id
