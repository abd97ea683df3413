"""Baseline: the schema of the last release before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-12-07

A database that release made has these tables without an ``alembic_version`` table, and, from
releases older still, maybe without some nullable columns: this revision creates only what is
missing and adds those columns, as every start of those releases did, so it adopts such a database
in place as well as creating a new one. The tables are written out here, not taken from
``overture.store.db``, so that later changes there never change what this revision does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    metadata = sa.MetaData()
    moment = sa.DateTime(timezone=True)
    sa.Table(
        "predictions",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("logs", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("webhook", sa.Text),
        sa.Column("webhook_events_filter", sa.JSON),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("deployment", sa.Text),
        sa.Column("deadline", moment, index=True),
        sa.Column("data_removed", sa.Boolean, nullable=False),
        sa.Column("cache_key", sa.String(64), index=True),
        sa.Column("created_at", moment, nullable=False, index=True),
        sa.Column("started_at", moment),
        sa.Column("completed_at", moment),
        sa.Column("predict_time", sa.Float),
    )
    sa.Table(
        "files",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", moment, nullable=False, index=True),
    )
    sa.Table(
        "events",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(32), nullable=False, index=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    sa.Table(
        "webhook_deliveries",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("prediction_id", sa.String(32), nullable=False, index=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", moment, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("delivered_at", moment),
    )
    return metadata


def upgrade() -> None:
    bind = op.get_bind()
    tables = _tables()
    tables.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table in tables.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(f"the database lacks {table.name}.{column.name}, which cannot be added empty")
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    _tables().drop_all(op.get_bind())
