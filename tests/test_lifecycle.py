"""Server start-up, tokens, restarts after a crash, and retention."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from harness import Server, database_intact, query

pytestmark = pytest.mark.timeout(120)


def test_generated_token_is_stored_0600_and_required(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", tokens=()).start()
    try:
        token_file = srv.data_dir / "api-token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token in srv.log_path.read_text()
        with srv.http(token) as http:
            assert http.get("/v1/predictions").status_code == 200
        with srv.http("wrong") as http:
            assert http.get("/v1/predictions").status_code == 401
    finally:
        srv.stop()
    # The same token survives a restart on the same data directory.
    srv = Server(tmp_path / "data", tokens=()).start()
    try:
        with srv.http(token) as http:
            assert http.get("/v1/predictions").status_code == 200
    finally:
        srv.stop()


def test_sigkill_mid_run_then_restart_finishes_every_prediction(fresh_server: Server) -> None:
    srv = fresh_server.start()
    with srv.http() as http:
        ids = [
            http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 20, "step_seconds": 0.1}}).json()[
                "id"
            ]
            for _ in range(4)
        ]
        while http.get(f"/v1/predictions/{ids[0]}").json()["status"] != "processing":
            time.sleep(0.05)
    srv.kill()

    statuses = dict(query(srv.database_url, "SELECT id, status FROM predictions"))
    assert statuses[ids[0]] == "processing" and statuses[ids[-1]] == "starting"

    srv.start()
    client = srv.client()
    for pid in ids:
        prediction = client.predictions.get(pid)
        prediction.wait()
        assert prediction.status == "succeeded", prediction.error
        assert prediction.output == "done:None"
    assert "running it again" in client.predictions.get(ids[0]).logs
    database_intact(srv.database_url)


def test_prefer_wait_answers_before_the_deadline_with_starting(server: Server) -> None:
    with server.http() as http:
        started = time.monotonic()
        response = http.post(
            "/v1/models/tests/steps/predictions",
            json={"input": {"steps": 100, "step_seconds": 0.05}},
            headers={"Prefer": "wait=1"},
        )
        elapsed = time.monotonic() - started
        body = response.json()
        assert response.status_code == 201 and elapsed < 1.5
        assert body["status"] == "starting" and body["output"] is None
        assert response.headers["preference-applied"] == "wait=1"
        http.post(f"/v1/predictions/{body['id']}/cancel")


def test_prefer_wait_returns_the_finished_prediction(server: Server) -> None:
    with server.http() as http:
        body = http.post(
            "/v1/models/overture/synth/predictions", json={"input": {"duration": 1}}, headers={"Prefer": "wait"}
        ).json()
        assert body["status"] == "succeeded" and body["output"].endswith("/output.wav")


def test_public_url_and_forwarded_headers_shape_every_url(server: Server, tmp_path: Path) -> None:
    with server.http() as http:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "music.example.com"}
        body = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 0}}, headers=headers).json()
        assert body["urls"]["get"] == f"https://music.example.com/v1/predictions/{body['id']}"
    srv = Server(tmp_path / "data", "--public-url", "https://api.example.org/music/").start()
    try:
        with srv.http() as http:
            body = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 0}}).json()
            assert body["urls"]["cancel"].startswith("https://api.example.org/music/v1/predictions/")
    finally:
        srv.stop()


def test_retention_removes_data_but_keeps_the_record(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--retention-hours", "0.0003").start()  # about one second
    try:
        client = srv.client()
        prediction = client.predictions.create(model="overture/synth", input={"duration": 1})
        prediction.wait()
        output_dir = srv.data_dir / "outputs" / prediction.id
        assert output_dir.exists()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and output_dir.exists():
            time.sleep(0.2)
        record = srv.http().get(f"/v1/predictions/{prediction.id}").json()
        assert record["data_removed"] is True and record["output"] is None and record["input"] is None
        assert record["status"] == "succeeded" and not output_dir.exists()
    finally:
        srv.stop()
