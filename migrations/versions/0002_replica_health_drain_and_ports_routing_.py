"""replica health, drain and ports, routing state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routing_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("served_generation", sa.BigInteger(), nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_routing_state")),
    )
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_latency_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("drain_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("ports", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_column("ports")
        batch_op.drop_column("drain_started_at")
        batch_op.drop_column("last_latency_ms")

    op.drop_table("routing_state")
