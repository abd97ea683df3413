"""Bring a database to this release's schema with the Alembic revisions in ``migrations/``.

Every server start runs ``upgrade``; so do ``overture db upgrade`` and the tests. Servers starting
together on one database take turns: on PostgreSQL through an advisory lock held for the whole
upgrade, on SQLite through an exclusive ``flock`` on a file beside the database (SQLite serves one
host, so a host-local lock is enough). Whoever comes second finds the work done.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, inspect, select

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: The PostgreSQL advisory lock for migrations is (this, the database's name hashed): databases of one
#: cluster migrate independently. Any 32-bit constant; this one spells "ovtr".
ADVISORY_LOCK_CLASS = int.from_bytes(b"ovtr", "big")


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the revisions shipped in this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # r<revision>_<slug>.py: a module name Python and mypy accept, sorted in order.
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this release ships."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty one or one from before migrations."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Apply every revision the database lacks, adopting one from before migrations in place."""
    with exclusive(engine) as conn:
        tables = set(inspect(conn).get_table_names())
        if "predictions" in tables and "alembic_version" not in tables:
            log.info("adopting a database from before migrations: revision %s applies to it in place", head())
        conn.commit()  # end the inspection's transaction: Alembic commits each revision itself
        command.upgrade(config(conn), "head")


def revision(engine: Engine, message: str) -> Path:
    """Write a new revision with what the models in ``overture.store.db`` have that the database
    (brought to head first) lacks; numbered after the newest. Review it before committing."""
    upgrade(engine)
    number = f"{int(head()) + 1:04d}"
    with engine.connect() as conn:
        cfg = config(conn)
        # In the project's style from the start (ruff is one of its dev tools).
        cfg.set_section_option("post_write_hooks", "hooks", "ruff")
        cfg.set_section_option("post_write_hooks", "ruff.type", "module")
        cfg.set_section_option("post_write_hooks", "ruff.module", "ruff")
        cfg.set_section_option("post_write_hooks", "ruff.options", "format REVISION_SCRIPT_FILENAME")
        script = command.revision(cfg, message, autogenerate=True, rev_id=number)
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


@contextmanager
def exclusive(engine: Engine) -> Iterator[Connection]:
    """A connection that holds the migration lock until the block ends."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # A session lock: it outlives the transactions Alembic commits, and ends with the connection.
            key = (ADVISORY_LOCK_CLASS, func.hashtext(func.current_database()))
            conn.execute(select(func.pg_advisory_lock(*key)))
            conn.commit()
            try:
                yield conn
            finally:
                conn.execute(select(func.pg_advisory_unlock(*key)))
                conn.commit()
        elif (path := _sqlite_file(engine)) is not None:
            with open(f"{path}.migrate-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield conn
        else:
            yield conn


def _sqlite_file(engine: Engine) -> str | None:
    """The SQLite database's file, also when the URL names it as a URI (``file:PATH?mode=ro`` with
    ``uri=true``); None for another database or one in memory."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    if engine.url.query.get("uri") == "true" and database.startswith("file:"):
        database = database.removeprefix("file:").partition("?")[0]
        if database in ("", ":memory:") or engine.url.query.get("mode") == "memory":
            return None
    return database
