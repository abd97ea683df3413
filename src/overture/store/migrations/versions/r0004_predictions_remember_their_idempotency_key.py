"""Predictions remember their idempotency key: a create repeated with the same ``Idempotency-Key``
gets the first prediction back (how a relaying Overture avoids creating one twice upstream).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 23:48:02.251215

Predictions made before this revision had no key: the column is null for them, and a unique index
lets any number of nulls stand side by side on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_predictions_idempotency_key"), ["idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_idempotency_key"))
        batch_op.drop_column("idempotency_key")
