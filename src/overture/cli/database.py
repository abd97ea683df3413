"""``overture db``: the database's schema revision, and the migrations that change it.

A server applies the migrations itself when it starts; these commands are for operators who want
to do it ahead of a rollout, and for developers adding a revision (docs/database.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from overture.cli.common import console
from overture.config import Settings
from overture.store import migrate
from overture.store.db import connect
from overture.store.store import default_database_url

db_app = typer.Typer(help="The database's schema: its revision, upgrades, new migrations.", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option(envvar="OVERTURE_DATA_DIR", help="Holds overture.db without --database-url.")]
DatabaseUrl = Annotated[str | None, typer.Option(envvar="OVERTURE_DATABASE_URL")]


def _url(data_dir: Path, database_url: str | None) -> str:
    if database_url:
        return database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    return default_database_url(data_dir)


@db_app.command()
def current(data_dir: DataDir = Settings.data_dir, database_url: DatabaseUrl = None) -> None:
    """Print the database's revision and this release's newest one."""
    engine = connect(_url(data_dir, database_url))
    try:
        print(f"database: {migrate.current(engine) or 'none (empty, or from before migrations)'}")
        print(f"release:  {migrate.head()}")
    finally:
        engine.dispose()


@db_app.command()
def upgrade(data_dir: DataDir = Settings.data_dir, database_url: DatabaseUrl = None) -> None:
    """Apply the migrations the database lacks, as a starting server does."""
    engine = connect(_url(data_dir, database_url))
    try:
        migrate.upgrade(engine)
        console.print(f"database at revision {migrate.current(engine)}")
    finally:
        engine.dispose()


@db_app.command()
def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision changes.")],
    database_url: Annotated[
        str, typer.Option(envvar="OVERTURE_DATABASE_URL", help="A scratch database: it is upgraded first.")
    ],
) -> None:
    """Write a new migration from what the models in overture/store/db.py have and the database lacks."""
    engine = connect(database_url)
    try:
        print(migrate.revision(engine, message))
    finally:
        engine.dispose()
