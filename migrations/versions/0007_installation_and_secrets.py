"""the installation's id (stamped on every container and volume) and encrypted secrets

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    # Created with the database: every node of a cluster (one database) shares it, another database never.
    now = datetime.now(UTC)
    op.bulk_insert(
        installation,
        [{"id": uuid.uuid4().hex, "created_at": now.replace(tzinfo=None) if _sqlite() else now}],
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=63), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secrets")),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    op.drop_table("installation")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"
