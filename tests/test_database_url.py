"""``--database-url``: the records live in the database the URL names (a SQLite file outside the
data directory, or a PostgreSQL database under OVERTURE_TEST_DATABASE_URL) and survive a restart;
the data directory keeps only the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import POSTGRES_URL, Server, fresh_database_url, query

pytestmark = pytest.mark.timeout(120)


def test_records_live_in_the_named_database_and_survive_a_restart(tmp_path: Path) -> None:
    srv = Server(tmp_path / "overture-data", "--database-url", fresh_database_url(tmp_path / "records")).start()
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
    assert query(srv.database_url, "SELECT id, status FROM predictions") == [(prediction["id"], "succeeded")]
    assert query(srv.database_url, "SELECT id FROM files") == [(upload["id"],)]

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

    # The same data directory without the URL opens its own, new database: none of those records
    # (under OVERTURE_TEST_DATABASE_URL, the harness gives it a new one on that cluster instead).
    default = Server(srv.data_dir).start()
    try:
        with default.http() as http:
            assert http.get("/v1/predictions").json()["results"] == []
            assert http.get(f"/v1/predictions/{prediction['id']}").status_code == 404
    finally:
        default.stop()
    assert (srv.data_dir / "overture.db").exists() == (POSTGRES_URL is None)
