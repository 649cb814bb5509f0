"""apps.restarts: how many rolling restarts the app was asked for (folded into its replicas' hash, so a
restart replaces every replica of the same revision); app_revisions.restored_from: the revision a rollback
restored (a rollback adds a new revision with that revision's spec)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("restarts", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("app_revisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("restored_from", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_revisions", schema=None) as batch_op:
        batch_op.drop_column("restored_from")
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("restarts")
