"""Secrets: a name and its value encrypted with the installation's key. Values never leave this module in
the clear except to the caller that resolves them into a container's environment."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, utcnow


class Secret(Base):
    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(63))


def secret_names(session: Session) -> list[Secret]:
    return list(session.scalars(select(Secret).order_by(Secret.name)))


def put_secret(session: Session, name: str, ciphertext: str, actor: str) -> bool:
    """Store (or replace) a secret; True when it was created."""
    row = session.get(Secret, name)
    if row is None:
        session.add(Secret(name=name, ciphertext=ciphertext, updated_by=actor[:63]))
        session.flush()
        return True
    row.ciphertext, row.updated_at, row.updated_by = ciphertext, utcnow(), actor[:63]
    return False


def delete_secret(session: Session, name: str) -> bool:
    row = session.get(Secret, name)
    if row is None:
        return False
    session.delete(row)
    return True


def ciphertexts(session: Session, names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    return dict(session.execute(select(Secret.name, Secret.ciphertext).where(Secret.name.in_(names))).tuples().all())
