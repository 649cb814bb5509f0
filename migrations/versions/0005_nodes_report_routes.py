"""controller nodes report what their nginx serves and counts: every node routes, the leader drains and
measures for all of them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("controller_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("routes_generation", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("routes_reported_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("inflight", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("traffic", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("traffic_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("controller_nodes", schema=None) as batch_op:
        batch_op.drop_column("traffic_at")
        batch_op.drop_column("traffic")
        batch_op.drop_column("inflight")
        batch_op.drop_column("routes_reported_at")
        batch_op.drop_column("routes_generation")
