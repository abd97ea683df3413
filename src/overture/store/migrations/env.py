"""Alembic's environment: it runs on the connection that ``overture.store.migrate`` hands it, which
already holds the lock that keeps two starting servers from migrating one database at once."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator

from overture.store.db import Base


def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:
    """A new revision names a column type by what the database stores (``db.UTCDateTime`` as
    ``sa.DateTime(timezone=True)``): a revision must not change when the models do later."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through overture.store.migrate (overture db upgrade), not the alembic command")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it: batch mode lets one migration serve both databases.
    render_as_batch=True,
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
