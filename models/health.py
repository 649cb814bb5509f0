"""The database's own health, as this node sees it: can it read, and can it write?

A read (`SELECT 1`) says nothing about writes: a full disk, a read-only replica after a failover or a
read-only file all answer reads while every write fails. The write probe inserts a row into `health_probe`
and rolls it back, so it takes the same locks and checks as a real write and leaves nothing behind.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, String, insert, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from orchestry.models.base import Base, utcnow


class HealthProbe(Base):
    """Never holds a committed row: the write probe's inserts are rolled back."""

    __tablename__ = "health_probe"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column()


@dataclass(frozen=True)
class DatabaseHealth:
    read_error: str | None  # None: the read worked
    write_error: str | None  # None: the write worked (not tried when the read failed)

    @property
    def ok(self) -> bool:
        return self.read_error is None and self.write_error is None

    @property
    def error(self) -> str | None:
        if self.read_error is not None:
            return f"read: {self.read_error}"
        return None if self.write_error is None else f"write: {self.write_error}"


def probe_database(sessions: sessionmaker[Session], node: str = "") -> DatabaseHealth:
    with sessions() as session:
        try:
            session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return DatabaseHealth(_first_line(exc), "not tried: the read failed")
        finally:
            session.rollback()
        try:
            session.execute(insert(HealthProbe).values(id=secrets.randbits(62), node=node[:128], at=utcnow()))
            return DatabaseHealth(None, None)
        except SQLAlchemyError as exc:
            return DatabaseHealth(None, _first_line(exc))
        finally:
            session.rollback()


def _first_line(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0][:300] if lines else type(orig).__name__
