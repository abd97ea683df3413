"""``--retention-hours``: uploaded files, and the inputs, outputs and logs of finished predictions,
are removed once they are older than that; the prediction records themselves stay."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from harness import Server, wait_finished

pytestmark = pytest.mark.timeout(120)

#: 3.6 s: the server sweeps every half of it.
RETENTION_HOURS = 0.001


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "overture-data", "--retention-hours", str(RETENTION_HOURS)).start()
    yield srv
    srv.stop()


def _gone(http: httpx.Client, path: str, timeout: float = 60) -> datetime:
    """Poll ``path`` until it answers 404; when it did."""
    deadline = time.monotonic() + timeout
    while http.get(path).status_code != 404:
        assert time.monotonic() < deadline, f"{path} was never removed"
        time.sleep(0.05)
    return datetime.now(UTC)


def test_an_uploaded_file_and_what_was_made_from_it_are_removed_once_expired(server: Server) -> None:
    with server.http() as http:
        upload = http.post("/v1/files", files={"content": ("input.bin", b"kept for a while")}).json()
        prediction = http.post(
            "/v1/models/tests/file-echo/predictions", json={"input": {"audio": upload["urls"]["get"]}}
        ).json()
        finished = wait_finished(http, prediction["id"])
        assert finished["status"] == "succeeded", finished["error"]
        output = server.data_dir / "outputs" / prediction["id"] / finished["output"]["file"].rsplit("/", 1)[1]
        assert output.is_file()

        removed_at = _gone(http, f"/v1/files/{upload['id']}")
        # Not before the time the file said it would expire.
        assert removed_at >= datetime.fromisoformat(upload["expires_at"])
        assert http.get(f"/v1/files/{upload['id']}/download").status_code == 404
        assert http.get("/v1/files").json()["results"] == []
        assert list((server.data_dir / "files").iterdir()) == []

        _gone(http, finished["output"]["file"])
        record = http.get(f"/v1/predictions/{prediction['id']}").json()
        assert record["status"] == "succeeded" and record["data_removed"] is True
        assert (record["input"], record["output"], record["logs"]) == (None, None, "")
        assert not output.parent.exists()
