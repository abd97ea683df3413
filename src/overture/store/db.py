"""The database schema: predictions and uploaded files. SQLite by default, PostgreSQL through
``postgresql+psycopg://``; the tables are made and changed by the migrations in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class _NoNul(TypeDecorator[str]):
    """Text with any NUL character replaced by U+FFFD, on every database: PostgreSQL cannot store
    NUL in text at all (it would be a 500 there), and a NUL in a name, a log or an id looked up is
    junk on either. Ids are never looked up with one, so the lookup still finds nothing."""

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value.replace("\x00", "\ufffd") if value else value


class Str(_NoNul):
    """``String(n)``; the lengths are only those of values the server makes (ids, statuses, hashes)."""

    impl = String
    cache_ok = True


class Txt(_NoNul):
    """``Text``: anything a user or an operator's model chooses, of any length."""

    impl = Text
    cache_ok = True


class UTCDateTime(TypeDecorator[datetime]):
    """A moment in UTC, timezone-aware in Python on every database.

    PostgreSQL keeps ``timestamptz``; SQLite keeps the naive UTC text that releases before this one
    wrote, so their rows and the new ones compare alike. A naive value is refused rather than
    guessed at: it is a bug in the caller."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime cannot be stored: {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A 64-bit integer, for counters that only grow (the ``seq`` keys) and byte counts: PostgreSQL's
#: ``integer`` stops at 2**31 - 1. SQLite's ``INTEGER`` is 64-bit already, and only a column declared
#: exactly so is the rowid that autoincrements.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class PredictionRow(Base):
    __tablename__ = "predictions"

    # Autoincrementing order for cursor pagination: created_at alone can tie.
    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(Str(32), unique=True)
    owner: Mapped[str] = mapped_column(Str(64), index=True)
    model: Mapped[str] = mapped_column(Txt)
    version: Mapped[str] = mapped_column(Txt)
    status: Mapped[str] = mapped_column(Str(16), index=True)
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    logs: Mapped[str] = mapped_column(Txt, default="")
    error: Mapped[str | None] = mapped_column(Txt, nullable=True)
    source: Mapped[str] = mapped_column(Str(16), default="api")
    webhook: Mapped[str | None] = mapped_column(Txt, nullable=True)
    webhook_events_filter: Mapped[Any] = mapped_column(JSON, nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ``owner/name`` when created through ``/v1/deployments/...``.
    deployment: Mapped[str | None] = mapped_column(Txt, nullable=True)
    #: When the prediction is canceled if still unfinished (``Cancel-After`` or the server default).
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    data_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    cache_key: Mapped[str | None] = mapped_column(Str(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    predict_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Where it ran: "local", or the name of the upstream (another Replicate API) it was relayed to.
    provider: Mapped[str] = mapped_column(Str(64), default="local", server_default="local", index=True)
    # The hardware the provider reported (Replicate's metrics name it); None when it named none.
    hardware: Mapped[str | None] = mapped_column(Txt, nullable=True)
    # An upstream prediction's own record, kept as metadata: its id, its URLs (the temporary output
    # URLs among them) and its metrics. Written before the upstream is called, so a restart can resume.
    upstream: Mapped[Any] = mapped_column(JSON, nullable=True)
    # SHA-256 of the owner and the ``Idempotency-Key`` its create sent (an Overture extension): a
    # create repeated with the same key gets this prediction back instead of a second one.
    idempotency_key: Mapped[str | None] = mapped_column(Str(64), nullable=True, unique=True, index=True)


class FileRow(Base):
    __tablename__ = "files"

    # Autoincrementing order for cursor pagination: created_at alone can tie.
    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(Str(32), unique=True)
    owner: Mapped[str] = mapped_column(Str(64), index=True)
    name: Mapped[str] = mapped_column(Txt)
    content_type: Mapped[str] = mapped_column(Txt)
    size: Mapped[int] = mapped_column(BigInt)
    md5: Mapped[str] = mapped_column(Str(32))
    sha256: Mapped[str] = mapped_column(Str(64))
    file_metadata: Mapped[Any] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class EventRow(Base):
    """What a prediction streamed (``output``, ``logs``, ``error``, ``done``), kept for late
    subscribers and ``Last-Event-ID`` resumes; ``seq`` is the SSE event id."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(Str(32), index=True)
    event: Mapped[str] = mapped_column(Str(16))
    #: JSON: a string, or output that may hold file references.
    data: Mapped[Any] = mapped_column(JSON)


class DeliveryRow(Base):
    """One webhook message; retried until delivered or out of time, and never sent after success."""

    __tablename__ = "webhook_deliveries"

    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(Str(40), unique=True)
    prediction_id: Mapped[str] = mapped_column(Str(32), index=True)
    owner: Mapped[str] = mapped_column(Str(64))
    url: Mapped[str] = mapped_column(Txt)
    event: Mapped[str] = mapped_column(Str(16))
    body: Mapped[str] = mapped_column(Txt)
    state: Mapped[str] = mapped_column(Str(16), index=True)  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Txt, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def connect(url: str) -> Engine:
    """Open the database; SQLite gets WAL so readers never block the writer. ``migrate.upgrade``
    brings its tables to this release's schema."""
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30} if is_sqlite else {},
        pool_size=20 if is_sqlite else 5,
        max_overflow=20,
        # A database server restarts and drops its connections; a dead one is replaced on checkout.
        pool_pre_ping=not is_sqlite,
    )
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine
