"""API tokens: a name, a role, and a hash of the secret — never the secret itself.

A token reads `orc_<id>_<secret>`; the id finds the row, the secret is compared by hash in constant time.
Secrets are 256 random bits, so an unsalted SHA-256 is enough (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import String, exists, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.base import Base, utcnow

ROLES = ("viewer", "operator")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, role: str) -> tuple[ApiToken, str]:
    """Store a new token and return it with its plain text, which is shown once and never stored."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiToken(id=token_id, name=name, role=role, secret_hash=_hash(secret))
    session.add(row)
    return row, f"orc_{token_id}_{secret}"


def any_tokens(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(ApiToken.id.is_not(None)))))


def authenticate(session: Session, presented: str) -> ApiToken | None:
    prefix, _, rest = presented.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != "orc" or not token_id or not secret:
        return None
    row = session.get(ApiToken, token_id)
    # Compare even when the id is unknown, so a miss costs the same as a wrong secret.
    expected = row.secret_hash if row is not None else _hash("")
    if not hmac.compare_digest(expected, _hash(secret)) or row is None:
        return None
    return row
