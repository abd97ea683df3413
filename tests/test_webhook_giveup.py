"""``--webhook-retry-hours``: a delivery the receiver keeps refusing is retried with backoff for that
long after its event, then given up: the prediction's ``webhook_delivery`` says so, and the
receiver hears nothing more of it, restart included."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import Receiver, Server

pytestmark = pytest.mark.timeout(120)

#: 3.6 s of retries; the first after 0.1 s, doubling.
RETRY_HOURS = 0.001


@pytest.fixture
def answers_200() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.httpd.shutdown()


def _create(http: httpx.Client, webhook: str) -> str:
    response = http.post(
        "/v1/models/tests/steps/predictions",
        json={"input": {"steps": 1}, "webhook": webhook, "webhook_events_filter": ["completed"]},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _delivered_through(http: httpx.Client, receiver: Receiver) -> None:
    """A later prediction's webhook goes out to ``receiver``: the dispatcher has been round since."""
    pid = _create(http, f"{receiver.url}/hook")
    receiver.wait_for(lambda: any(json.loads(r["body"])["id"] == pid for r in receiver.delivered()))


def test_a_refused_delivery_is_given_up_after_the_retry_window(
    tmp_path: Path, receiver: Receiver, answers_200: Receiver
) -> None:
    receiver.fail_first = 10**6  # 503, always
    srv = Server(
        tmp_path / "overture-data", "--webhook-retry-hours", str(RETRY_HOURS), "--webhook-backoff-seconds", "0.1"
    ).start()
    try:
        with srv.http() as http:
            pid = _create(http, f"{receiver.url}/hook")
            deadline = time.monotonic() + 60
            while (body := http.get(f"/v1/predictions/{pid}").json()).get("webhook_delivery", {}).get("failed") != 1:
                assert time.monotonic() < deadline, body
                time.sleep(0.05)
            attempts = list(receiver.requests)
            assert body["webhook_delivery"] == {
                "delivered": 0,
                "pending": 0,
                "failed": 1,
                "attempts": len(attempts),
                "last_status": 503,
                "last_error": "HTTP 503; gave up retrying",
            }
            # Retried through the window, not given up early: each backoff (jitter included) is at
            # most about twice the time already spent retrying, so the last attempt comes more than
            # a quarter of the window after the first (two tries and done would be 0.3 s).
            assert len(attempts) >= 3, "it was retried before it was given up"
            assert attempts[-1]["at"] - attempts[0]["at"] > RETRY_HOURS * 3600 / 4
            assert {r["headers"]["webhook-id"] for r in attempts} == {attempts[0]["headers"]["webhook-id"]}
            assert {json.loads(r["body"])["id"] for r in attempts} == {pid}

            _delivered_through(http, answers_200)
        assert receiver.requests == attempts
        srv.stop()
        srv.start()
        with srv.http() as http:
            _delivered_through(http, answers_200)
            assert http.get(f"/v1/predictions/{pid}").json()["webhook_delivery"] == body["webhook_delivery"]
        assert receiver.requests == attempts
    finally:
        srv.stop()
