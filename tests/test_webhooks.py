"""Webhooks as a receiver sees them: signed, ordered, throttled, retried, durable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import replicate

from harness import Receiver, Server

pytestmark = pytest.mark.timeout(120)


def _validate(client: replicate.Client, request: dict) -> None:
    secret = client.webhooks.default.secret()
    assert replicate.webhooks.validate(headers=request["headers"], body=request["body"], secret=secret) is None


def _events(receiver: Receiver, path: str = "/hook") -> list[str]:
    out = []
    for r in receiver.delivered(path):
        body = json.loads(r["body"])
        out.append(body["status"])
    return out


def test_every_event_arrives_in_order_signed(client: replicate.Client, receiver: Receiver) -> None:
    prediction = client.predictions.create(
        model="tests/steps", input={"steps": 12, "step_seconds": 0.1}, webhook=f"{receiver.url}/hook"
    )
    receiver.wait_for(lambda: "succeeded" in _events(receiver))
    delivered = receiver.delivered()
    for request in delivered:
        _validate(client, request)
        assert json.loads(request["body"])["id"] == prediction.id
    bodies = [json.loads(r["body"]) for r in delivered]
    assert bodies[0]["status"] == "processing" and bodies[0]["logs"] == ""  # start
    assert bodies[-1]["status"] == "succeeded" and bodies[-1]["output"] == "done:None"  # completed
    middle = bodies[1:-1]
    assert middle and all(b["status"] == "processing" for b in middle)  # logs
    # Logs come at most every 500 ms, the latest state each time: about 1.2 s of steps.
    assert len(middle) <= 4
    times = [r["at"] for r in delivered[1:-1]]
    assert all(b - a > 0.4 for a, b in zip(times, times[1:], strict=False))
    assert len({r["headers"]["webhook-id"] for r in delivered}) == len(delivered)


def test_filter_sends_only_the_chosen_events(client: replicate.Client, receiver: Receiver) -> None:
    client.predictions.create(
        model="tests/steps",
        input={"steps": 5, "step_seconds": 0.1},
        webhook=f"{receiver.url}/hook",
        webhook_events_filter=["completed"],
    )
    receiver.wait_for(lambda: _events(receiver) == ["succeeded"])
    time.sleep(0.5)
    assert _events(receiver) == ["succeeded"]


def test_failing_receiver_gets_each_event_exactly_once(
    client: replicate.Client, receiver: Receiver, server: Server
) -> None:
    receiver.fail_first = 3
    prediction = client.predictions.create(
        model="tests/steps",
        input={"steps": 1},
        webhook=f"{receiver.url}/hook",
        webhook_events_filter=["start", "completed"],
    )
    receiver.wait_for(lambda: "succeeded" in _events(receiver))
    time.sleep(0.5)
    assert _events(receiver) == ["processing", "succeeded"]
    by_id: dict[str, list[int]] = {}
    for r in receiver.requests:
        by_id.setdefault(r["headers"]["webhook-id"], []).append(r["status"])
    assert sorted(by_id.values()) == [[503, 503, 503, 200]] * 2
    record = server.http().get(f"/v1/predictions/{prediction.id}").json()
    assert record["webhook_delivery"] == {
        "delivered": 2,
        "pending": 0,
        "failed": 0,
        "attempts": 8,
        "last_status": 200,
        "last_error": None,
    }


def test_retry_after_is_honoured(client: replicate.Client, receiver: Receiver) -> None:
    receiver.fail_first, receiver.fail_status, receiver.retry_after = 1, 429, "2"
    client.predictions.create(
        model="tests/steps", input={"steps": 0}, webhook=f"{receiver.url}/hook", webhook_events_filter=["completed"]
    )
    receiver.wait_for(lambda: _events(receiver) == ["succeeded"])
    first, second = receiver.requests
    assert second["at"] - first["at"] >= 1.9


def test_a_hanging_receiver_does_not_delay_another_prediction(client: replicate.Client, receiver: Receiver) -> None:
    client.predictions.create(model="tests/steps", input={"steps": 0}, webhook=f"{receiver.url}/hang")
    time.sleep(0.3)
    started = time.monotonic()
    client.predictions.create(model="tests/steps", input={"steps": 0}, webhook=f"{receiver.url}/hook")
    receiver.wait_for(lambda: "succeeded" in _events(receiver), timeout=5)
    assert time.monotonic() - started < 3


def test_a_rejecting_receiver_is_not_retried(client: replicate.Client, receiver: Receiver, server: Server) -> None:
    receiver.fail_first, receiver.fail_status = 100, 410
    prediction = client.predictions.create(
        model="tests/steps", input={"steps": 0}, webhook=f"{receiver.url}/hook", webhook_events_filter=["completed"]
    )
    prediction.wait()
    deadline = time.monotonic() + 10
    while server.http().get(f"/v1/predictions/{prediction.id}").json()["webhook_delivery"]["failed"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(receiver.requests) == 1


def test_webhook_must_be_http(server: Server) -> None:
    with server.http() as http:
        response = http.post(
            "/v1/models/tests/steps/predictions", json={"input": {}, "webhook": "ftp://example.com/hook"}
        )
        assert response.status_code == 422 and "- webhook: must be an http(s) URL" in response.json()["detail"]


def test_private_addresses_can_be_forbidden(tmp_path: Path, receiver: Receiver) -> None:
    srv = Server(tmp_path / "data", "--no-webhook-allow-private").start()
    try:
        with srv.http() as http:
            response = http.post(
                "/v1/models/tests/steps/predictions", json={"input": {}, "webhook": f"{receiver.url}/hook"}
            )
            assert response.status_code == 422 and "private address" in response.json()["detail"]
    finally:
        srv.stop()


def test_pending_deliveries_survive_sigkill(fresh_server: Server, receiver: Receiver) -> None:
    fresh_server.extra += ["--webhook-backoff-seconds", "2"]
    srv = fresh_server.start()
    receiver.fail_first = 1
    client = srv.client()
    prediction = client.predictions.create(
        model="tests/steps", input={"steps": 0}, webhook=f"{receiver.url}/hook", webhook_events_filter=["completed"]
    )
    receiver.wait_for(lambda: len(receiver.requests) == 1)
    srv.kill()  # during the backoff before the second attempt
    srv.start()
    receiver.wait_for(lambda: _events(receiver) == ["succeeded"])
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert json.loads(second["body"])["id"] == prediction.id
    _validate(srv.client(), second)
    time.sleep(1)
    assert len(receiver.requests) == 2
