"""Alembic's environment: it runs on the connection that ``overture.store.migrate`` hands it, which
already holds the lock that keeps two starting servers from migrating one database at once."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from overture.store.db import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through overture.store.migrate (overture db upgrade), not the alembic command")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it: batch mode lets one migration serve both databases.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
