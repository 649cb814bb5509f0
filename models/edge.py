"""The public edge's state: a version every node's nginx follows, TLS certificates and ACME challenges.

`edge_state.version` grows whenever what nginx needs beside the routing table changes (an app's routes, a
certificate, an ACME challenge); every node's route mirror pushes the edge again when the version it
pushed differs (controller/edge.py). Certificates are shared by every node: the chain in the clear, the
private key sealed with the installation's secret key (config/secretbox.py) and never returned by the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, utcnow

if TYPE_CHECKING:
    from orchestry.nginx.pem import PemInfo

EDGE_NAME = "default"


class EdgeState(Base):
    __tablename__ = "edge_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Certificate(Base):
    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(253), unique=True, doc="the first host; `cert add --name`")
    hosts: Mapped[list[Any]] = mapped_column(default=list, doc="the names it covers (its SANs)")
    source: Mapped[str] = mapped_column(String(16), doc="custom | acme")
    state: Mapped[str] = mapped_column(String(16), default="valid", doc="pending | valid | failed")
    cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True, doc="leaf first, then the chain")
    key_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True, doc="the PEM key, Fernet-sealed")
    issuer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AcmeChallenge(Base):
    """An HTTP-01 answer every node's nginx serves at /.well-known/acme-challenge/<token> while it exists."""

    __tablename__ = "acme_challenges"

    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_authorization: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AcmeAccount(Base):
    """The ACME account of one directory URL: its key sealed like a certificate's."""

    __tablename__ = "acme_accounts"

    directory: Mapped[str] = mapped_column(String(512), primary_key=True)
    key_ciphertext: Mapped[str] = mapped_column(Text)
    uri: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def edge_version(session: Session) -> int:
    value = session.scalar(select(EdgeState.version).where(EdgeState.name == EDGE_NAME))
    return int(value or 0)


def lock_edge(session: Session) -> EdgeState:
    """The edge row, locked (registrations that check route conflicts take it one at a time)."""
    row = session.get(EdgeState, EDGE_NAME, with_for_update=True)
    if row is None:
        row = EdgeState(name=EDGE_NAME, version=0)
        session.add(row)
        session.flush()
    return row


def bump_edge(session: Session) -> None:
    """Every node pushes its edge again (in the caller's transaction)."""
    lock_edge(session)
    session.execute(update(EdgeState).where(EdgeState.name == EDGE_NAME).values(version=EdgeState.version + 1))


def certificate(session: Session, host: str) -> Certificate | None:
    """The certificate row named `host` (an ACME certificate is named for its one host)."""
    return session.scalar(select(Certificate).where(Certificate.name == host))


def store_certificate(
    session: Session, name: str, source: str, info: PemInfo, key_ciphertext: str
) -> tuple[Certificate, bool]:
    """The certificate `name` made or replaced as valid with this chain and sealed key, and every node's edge
    bumped (in the caller's transaction). Returns the row and whether it was made."""
    row = certificate(session, name)
    created = row is None
    if row is None:
        row = Certificate(name=name, source=source)
        session.add(row)
    row.hosts, row.source, row.state, row.last_error = list(info.hosts), source, "valid", None
    row.cert_pem, row.key_ciphertext, row.issuer = info.cert_pem, key_ciphertext, info.issuer
    row.not_before, row.not_after, row.updated_at = info.not_before, info.not_after, utcnow()
    bump_edge(session)
    return row, created


def certificates_named(session: Session, names: list[str]) -> dict[str, Certificate]:
    return {r.name: r for r in session.scalars(select(Certificate).where(Certificate.name.in_(names)))}


def drop_challenge(session: Session, token: str) -> None:
    session.execute(delete(AcmeChallenge).where(AcmeChallenge.token == token))


def usable_certificates(session: Session) -> list[Certificate]:
    """Certificates that can be served: a chain and its (encrypted) key."""
    return list(
        session.scalars(
            select(Certificate).where(Certificate.cert_pem.is_not(None), Certificate.key_ciphertext.is_not(None))
        )
    )


def challenge_answers(session: Session) -> dict[str, str]:
    """The HTTP-01 answers nginx serves: token -> key authorization."""
    return {c.token: c.key_authorization for c in session.scalars(select(AcmeChallenge))}
