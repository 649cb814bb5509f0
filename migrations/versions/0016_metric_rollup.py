"""metric_samples.samples: past the full-resolution period an app's samples of a minute become one row of
their means, which weighs the samples it stands for (NULL: a row as taken)

A plain ADD COLUMN on both backends: no copy of a table that may hold millions of rows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("metric_samples", sa.Column("samples", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metric_samples", schema=None) as batch_op:
        batch_op.drop_column("samples")
