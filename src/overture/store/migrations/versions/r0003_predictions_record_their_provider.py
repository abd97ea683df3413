"""Predictions record their provider: where each ran, the hardware it reported, and an upstream's record.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 23:39:34.367427

Every prediction made before this revision ran locally, so ``provider`` is filled with "local".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider", sa.String(length=64), server_default="local", nullable=False))
        batch_op.add_column(sa.Column("hardware", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("upstream", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_predictions_provider"), ["provider"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_provider"))
        batch_op.drop_column("upstream")
        batch_op.drop_column("hardware")
        batch_op.drop_column("provider")
