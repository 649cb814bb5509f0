"""Registry credentials (`orchestry registry login`): a server, a username and the password sealed with the
installation's key (config/secretbox.py, as secrets and certificate keys). The password leaves this module
sealed; only the job that pulls an image opens it, for the engine's pull."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, utcnow


class RegistryCredential(Base):
    __tablename__ = "registry_credentials"

    server: Mapped[str] = mapped_column(String(255), primary_key=True, doc="host[:port], lowercased")
    username: Mapped[str] = mapped_column(String(255))
    password_ciphertext: Mapped[str] = mapped_column(Text, doc="Fernet-sealed; never returned")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(63))


def registries(session: Session) -> list[RegistryCredential]:
    return list(session.scalars(select(RegistryCredential).order_by(RegistryCredential.server)))


def put_registry(session: Session, server: str, username: str, ciphertext: str, actor: str) -> bool:
    """Store (or replace) a server's credentials; True when they are new."""
    row = session.get(RegistryCredential, server)
    if row is None:
        session.add(
            RegistryCredential(server=server, username=username, password_ciphertext=ciphertext, updated_by=actor[:63])
        )
        session.flush()
        return True
    row.username, row.password_ciphertext = username, ciphertext
    row.updated_at, row.updated_by = utcnow(), actor[:63]
    return False


def delete_registry(session: Session, server: str) -> bool:
    row = session.get(RegistryCredential, server)
    if row is None:
        return False
    session.delete(row)
    return True


def sealed_credential(session: Session, server: str) -> tuple[str, str] | None:
    """(username, sealed password) for `server`, or None when nobody logged in to it."""
    row = session.execute(
        select(RegistryCredential.username, RegistryCredential.password_ciphertext).where(
            RegistryCredential.server == server
        )
    ).first()
    return None if row is None else (row[0], row[1])
