"""Response shapes as Replicate's published OpenAPI document describes them, where the Python
client does not look but clients generated from that document do: ``urls.web``, ``deployment``,
``canceled`` at a deadline, file ``expires_at`` and download types, and the account's avatar."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
import sqlalchemy
from alembic import command

from harness import Server, query, wait_finished
from overture.store import migrate

pytestmark = pytest.mark.timeout(120)

#: Keys the document requires (``schemas_prediction_response``, ``schemas_file_response``, the
#: account); values it does not declare nullable must not be null.
PREDICTION_REQUIRED = {
    "id",
    "model",
    "version",
    "input",
    "output",
    "data_removed",
    "error",
    "status",
    "created_at",
    "urls",
}
PREDICTION_NOT_NULL = {"id", "model", "version", "input", "data_removed", "status", "created_at", "urls"}
PREDICTION_STATUSES = {"starting", "processing", "succeeded", "failed", "canceled"}
FILE_REQUIRED = {"id", "checksums", "content_type", "created_at", "expires_at", "metadata", "size", "urls"}
ACCOUNT_REQUIRED = {"type", "username"}


def _date(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def assert_prediction_shape(body: dict[str, Any]) -> None:
    assert PREDICTION_REQUIRED <= body.keys(), PREDICTION_REQUIRED - body.keys()
    assert all(body[key] is not None for key in PREDICTION_NOT_NULL), body
    assert body["status"] in PREDICTION_STATUSES
    assert {"get", "cancel", "web"} <= body["urls"].keys()
    assert all(isinstance(url, str) for url in body["urls"].values())
    # Optional keys are absent, never null, where the document gives them no null.
    for key in ("deployment", "logs", "metrics"):
        assert body.get(key, "absent") is not None, key


@pytest.fixture
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url) as c:
        yield c


# -- urls.web ----------------------------------------------------------------------------------


def test_urls_web_is_a_page_that_shows_the_prediction(
    client: replicate.Client, server: Server, http: httpx.Client, anonymous: httpx.Client
) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"label": "<b>tag</b>"})
    prediction.wait()
    web = prediction.urls["web"]
    assert web.startswith(f"{server.base_url}/p/{prediction.id}?expires=")

    # A browser opens it as it is: the URL is signed, as signed_output is, instead of a token. It is
    # the playground's page (tests/test_playground.py), which reads the prediction with the same query.
    page = anonymous.get(web)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    query = urllib.parse.urlsplit(web).query
    shown = anonymous.get(f"/v1/predictions/{prediction.id}?{query}")
    assert shown.status_code == 200 and shown.json()["output"] == "<b>tag</b>:None"

    # Without its signature, or with another prediction's, the page and the prediction are refused.
    other = client.predictions.create(model="tests/steps", input={"label": "other"})
    assert anonymous.get(f"/p/{prediction.id}").status_code == 403
    assert anonymous.get(f"/p/{other.id}?{query}").status_code == 403
    assert anonymous.get(f"/v1/predictions/{other.id}?{query}").status_code == 403
    assert anonymous.get(f"/v1/predictions/{prediction.id}").status_code == 401
    assert http.get(f"/p/{prediction.id}").status_code == 403  # the bearer token is no signature
    assert anonymous.get(other.urls["web"]).status_code == 200


# -- deployment --------------------------------------------------------------------------------


def test_a_deployment_prediction_names_its_deployment_in_create_get_and_list(
    client: replicate.Client, http: httpx.Client
) -> None:
    created = http.post("/v1/deployments/tests/steps/predictions", json={"input": {"steps": 1}}).json()
    assert created["deployment"] == "tests/steps"
    assert_prediction_shape(created)
    via_client = client.deployments.predictions.create("tests/steps", input={"steps": 1})
    for pid in (created["id"], via_client.id):
        assert wait_finished(http, pid)["deployment"] == "tests/steps"
    listed = {p["id"]: p for p in http.get("/v1/predictions").json()["results"]}
    assert listed[created["id"]]["deployment"] == "tests/steps"

    by_model = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1}}).json()
    assert "deployment" not in by_model and "deployment" not in wait_finished(http, by_model["id"])


def test_a_database_from_before_deployments_gets_the_column_on_start(fresh_server: Server) -> None:
    srv = fresh_server.start()
    with srv.http() as http:
        old = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1}}).json()
        wait_finished(http, old["id"])
    srv.stop()
    # As the release before this column left it, which was also before migrations: the later
    # revisions' own downgrades take away what they added.
    database = sqlalchemy.create_engine(srv.database_url)
    with database.connect() as conn:
        command.downgrade(migrate.config(conn), "0001")
        conn.commit()
    database.dispose()
    query(srv.database_url, "ALTER TABLE predictions DROP COLUMN deployment")
    query(srv.database_url, "DROP TABLE alembic_version")

    srv.start()
    with srv.http() as http:
        again = http.get(f"/v1/predictions/{old['id']}").json()
        assert again["status"] == "succeeded" and "deployment" not in again
        new = http.post("/v1/deployments/tests/steps/predictions", json={"input": {"steps": 1}}).json()
        assert wait_finished(http, new["id"])["deployment"] == "tests/steps"


# -- deadlines ---------------------------------------------------------------------------------


def test_a_deadline_cancels_the_running_and_the_queued_prediction(http: httpx.Client) -> None:
    """Replicate ends a prediction at its ``Cancel-After`` as ``canceled``; one that never started
    is ``aborted`` there, which the Python client cannot read, so it is ``canceled`` here too."""
    running = http.post(
        "/v1/models/tests/steps/predictions", json={"input": {"steps": 400}}, headers={"Cancel-After": "6s"}
    )
    # tests/steps runs one at a time: this one waits behind the first, which outlives its deadline.
    queued = http.post(
        "/v1/models/tests/steps/predictions", json={"input": {"steps": 1}}, headers={"Cancel-After": "5s"}
    )
    for response, seconds in ((running, 6), (queued, 5)):
        body = wait_finished(http, response.json()["id"])
        assert_prediction_shape(body)
        assert body["status"] == "canceled", body
        assert f"did not finish within its deadline of {seconds} s" in body["error"]
        assert f"did not finish within its deadline of {seconds} s" in body["logs"]
    assert wait_finished(http, queued.json()["id"])["started_at"] is None


# -- files -------------------------------------------------------------------------------------


def _upload(http: httpx.Client, name: str, data: bytes, content_type: str | None) -> dict[str, Any]:
    part = (name, data) if content_type is None else (name, data, content_type)
    response = http.post("/v1/files", files={"content": part})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize(
    ("name", "content_type", "served_as"),
    [
        ("melody.wav", "audio/wav", "audio/wav"),
        ("notes.txt", "text/plain", "text/plain"),
        ("blob", "application/octet-stream", "application/octet-stream"),
    ],
)
def test_a_download_is_served_as_the_files_own_type(
    http: httpx.Client, name: str, content_type: str, served_as: str
) -> None:
    uploaded = _upload(http, name, b"RIFF0000WAVE", content_type)
    assert uploaded["content_type"] == served_as
    download = http.get(uploaded["urls"]["download"])
    assert download.status_code == 200 and download.content == b"RIFF0000WAVE"
    assert download.headers["content-type"].split(";")[0] == served_as


def test_files_that_never_expire_say_so_with_a_far_future_date(http: httpx.Client) -> None:
    """The document requires ``expires_at`` as a date-time, with no null: a server that keeps
    files forever (no ``--retention-hours``) gives the last representable moment."""
    uploaded = _upload(http, "a.wav", b"RIFF", "audio/wav")
    assert FILE_REQUIRED <= uploaded.keys() and uploaded["expires_at"] == "9999-12-31T23:59:59.999Z"
    assert all(uploaded[key] is not None for key in FILE_REQUIRED)


def test_files_under_retention_expire_when_retention_deletes_them(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--retention-hours", "2").start()
    try:
        with srv.http() as http:
            uploaded = _upload(http, "a.wav", b"RIFF", "audio/wav")
            assert _date(uploaded["expires_at"]) - _date(uploaded["created_at"]) == timedelta(hours=2)
            assert http.get(uploaded["urls"]["get"]).json()["expires_at"] == uploaded["expires_at"]
    finally:
        srv.stop()


# -- account -----------------------------------------------------------------------------------


def test_the_account_has_an_avatar_that_loads_without_a_token(
    client: replicate.Client, http: httpx.Client, anonymous: httpx.Client
) -> None:
    account = http.get("/v1/account").json()
    assert ACCOUNT_REQUIRED <= account.keys() and account["type"] in ("user", "organization")
    # github_url and avatar_url are URIs where present, never null.
    assert all(account.get(key, "absent") is not None for key in ("github_url", "avatar_url", "name"))
    avatar = anonymous.get(account["avatar_url"])  # an <img src> sends no header
    assert avatar.status_code == 200 and avatar.headers["content-type"].startswith("image/svg+xml")
    assert client.accounts.current().username == account["username"]


def test_every_prediction_listed_has_the_documented_shape(client: replicate.Client, http: httpx.Client) -> None:
    client.run("tests/steps", input={"steps": 1})
    # Whatever this module created before is listed too: canceled, deployed, by model.
    for body in http.get("/v1/predictions").json()["results"]:
        assert_prediction_shape(body)
