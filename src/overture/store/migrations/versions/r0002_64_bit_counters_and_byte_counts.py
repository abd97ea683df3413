"""64-bit counters and byte counts: the ``seq`` keys and ``files.size`` become ``bigint``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 21:41:12.430138

On PostgreSQL they were ``integer``, which stops at 2**31 - 1: an upload over 2 GiB (with a raised
``--max-upload-bytes``) could not be stored, and a busy server's ``events`` counter would run out.
A ``serial`` column's sequence keeps its own type, so it is widened too. SQLite's ``INTEGER`` is
64-bit already (and only a key declared exactly so is the rowid): nothing changes there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: The columns widened, and whether each is a ``serial`` key with a sequence of its own.
COLUMNS = (
    ("predictions", "seq", True),
    ("files", "seq", True),
    ("files", "size", False),
    ("events", "seq", True),
    ("webhook_deliveries", "seq", True),
)


def _retype(wide: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    old, new = (sa.Integer(), sa.BigInteger()) if wide else (sa.BigInteger(), sa.Integer())
    for table, column, serial in COLUMNS:
        op.alter_column(table, column, existing_type=old, type_=new, existing_nullable=False)
        if serial:
            sequence = bind.scalar(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": column})
            op.execute(f"ALTER SEQUENCE {sequence} AS {'bigint' if wide else 'integer'}")


def upgrade() -> None:
    _retype(wide=True)


def downgrade() -> None:
    _retype(wide=False)
