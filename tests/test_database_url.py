"""``--database-url``: the records live in the database the URL names, here a SQLite file outside
the data directory, and survive a restart; the data directory keeps only the files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harness import Server

pytestmark = pytest.mark.timeout(120)


def test_records_live_in_the_named_database_and_survive_a_restart(tmp_path: Path) -> None:
    database = tmp_path / "records" / "overture.sqlite"
    database.parent.mkdir()
    srv = Server(tmp_path / "overture-data", "--database-url", f"sqlite:///{database}").start()
    try:
        with srv.http() as http:
            prediction = http.post(
                "/v1/models/overture/synth/predictions",
                json={"input": {"duration": 1, "seed": 3}},
                headers={"Prefer": "wait"},
            ).json()
            assert prediction["status"] == "succeeded", prediction["error"]
            audio = http.get(prediction["output"]).content
            upload = http.post("/v1/files", files={"content": ("notes.txt", b"kept")}).json()
    finally:
        srv.stop()
    assert not (srv.data_dir / "overture.db").exists()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT id, status FROM predictions").fetchall() == [(prediction["id"], "succeeded")]
        assert db.execute("SELECT id FROM files").fetchall() == [(upload["id"],)]

    srv.start()
    try:
        with srv.http() as http:
            again = http.get(f"/v1/predictions/{prediction['id']}").json()
            assert (again["status"], again["output"]) == ("succeeded", prediction["output"])
            assert http.get(again["output"]).content == audio
            assert [f["id"] for f in http.get("/v1/files").json()["results"]] == [upload["id"]]
            assert http.get(f"/v1/files/{upload['id']}/download").content == b"kept"
    finally:
        srv.stop()

    # The same data directory without the URL opens its own, new database: none of those records.
    default = Server(srv.data_dir).start()
    try:
        with default.http() as http:
            assert http.get("/v1/predictions").json()["results"] == []
            assert http.get(f"/v1/predictions/{prediction['id']}").status_code == 404
    finally:
        default.stop()
    assert (srv.data_dir / "overture.db").exists()
