"""scaling: a policy set through the API on the app, and every autoscaler decision

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scaling_policy", sa.JSON(), nullable=True))
    op.create_table(
        "scaling_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("recommended", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("burst", sa.Boolean(), nullable=False),
        sa.Column("governing", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ratios", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_scaling_decisions_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scaling_decisions")),
    )
    with op.batch_alter_table("scaling_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_scaling_decisions_app_id_created_at", ["app_id", "created_at"], unique=False)
        batch_op.create_index("ix_scaling_decisions_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scaling_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_scaling_decisions_created_at")
        batch_op.drop_index("ix_scaling_decisions_app_id_created_at")
    op.drop_table("scaling_decisions")
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("scaling_policy")
