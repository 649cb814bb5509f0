"""routing_state.wake: the apps whose requests nginx holds while they have no replica in rotation (scale to
zero: minReplicas 0 in auto mode), each with its bounds, stored with the routing table of that generation

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("routing_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wake", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("routing_state", schema=None) as batch_op:
        batch_op.drop_column("wake")
