"""The schema is Alembic's: a data directory from the release before migrations upgrades in place
and serves its records to the real client; fresh databases get exactly the models' schema; servers
starting together on one database migrate it once, in turn."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from harness import SUBPROCESS_PYTHONPATH, Server, query
from overture.store import migrate
from overture.store.db import Base, connect

pytestmark = pytest.mark.timeout(180)

#: Written by tests/fixtures/before-migrations/make.py with that release's own Store.
BEFORE_MIGRATIONS = Path(__file__).parent / "fixtures" / "before-migrations" / "data"


def test_a_data_directory_from_before_migrations_upgrades_in_place(tmp_path: Path) -> None:
    data = shutil.copytree(BEFORE_MIGRATIONS, tmp_path / "overture-data")
    manifest = json.loads((data / "manifest.json").read_text())
    url = f"sqlite:///{data / 'overture.db'}"
    assert "alembic_version" not in {name for (name,) in query(url, "SELECT name FROM sqlite_master")}

    # Its own SQLite file, even when the other tests run on PostgreSQL: that is what the release wrote.
    srv = Server(data, "--database-url", url).start()
    try:
        client = srv.client()
        for pid, status in manifest["predictions"].items():
            prediction = client.predictions.get(pid)
            if status == "starting":  # left unfinished: this start runs it again
                prediction.wait()
                status = "succeeded"
            assert (prediction.status, prediction.input["prompt"]) == (status, "rain on a tin roof")
        succeeded = client.predictions.get("legacysucceeded00000000000")
        assert succeeded.created_at.endswith("Z") and succeeded.metrics["predict_time"] == 0.5
        with srv.http() as http:
            assert http.get(succeeded.output).content[:4] == b"RIFF"
            for fid, content in manifest["files"].items():
                assert client.files.get(fid).name == "notes.txt"
                assert http.get(f"/v1/files/{fid}/download").text == content
        assert client.predictions.get("legacyfailed00000000000000").error == "the model was asked to fail"

        new = client.predictions.create(model="overture/synth", input={"duration": 1, "seed": 3})
        new.wait()
        assert new.status == "succeeded", new.error
        assert [p.id for p in client.predictions.list().results][0] == new.id
    finally:
        srv.stop()
    assert dict(query(url, "SELECT id, state FROM webhook_deliveries")) == manifest["deliveries"]
    assert query(url, "SELECT version_num FROM alembic_version") == [(migrate.head(),)]


def test_migrations_make_exactly_the_models_schema(database_url: str) -> None:
    """A change to overture/store/db.py without its migration fails here."""
    engine = connect(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def _upgrade(database_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overture", "db", "upgrade", "--database-url", database_url],
        env={**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH},
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_upgrade_waits_while_another_process_holds_the_migration_lock(database_url: str) -> None:
    engine = connect(database_url)
    try:
        with migrate.exclusive(engine):
            waiting = _upgrade(database_url)
            time.sleep(5)  # far longer than the upgrade takes on its own
            assert waiting.poll() is None, waiting.communicate()
            assert migrate.current(engine) is None
        assert waiting.wait(60) == 0, waiting.communicate()
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_processes_upgrading_one_new_database_together_all_succeed(database_url: str) -> None:
    """As servers started together on one database do: each finds the schema made, or makes it."""
    upgrades = [_upgrade(database_url) for _ in range(4)]
    assert [process.wait(60) for process in upgrades] == [0] * 4, [p.communicate() for p in upgrades]
    engine = connect(database_url)
    try:
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()
