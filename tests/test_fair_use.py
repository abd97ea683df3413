"""Fair use: per-token rate limits (Replicate's 600 creates and 3,000 other requests a minute), a
cap on each token's queued predictions, tokens taking turns in a model's queue, and a queued
prediction's place in line. Each server here is the real one, driven by the real client."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from replicate.exceptions import ReplicateError

from harness import OTHER_TOKEN, SUBPROCESS_PYTHONPATH, Server, wait_finished
from overture.api.errors import ApiError
from overture.api.ratelimit import RateLimiter
from overture.config import Settings
from overture.engine.workers.positions import PositionReporter
from overture.engine.workers.protocol import Job, QueuePositions
from overture.engine.workers.queue import JobQueue

pytestmark = pytest.mark.timeout(180)

#: A prediction of the steps test model that runs for minutes: the worker (one thread) stays busy,
#: so everything created after it queues.
BLOCKER = {"steps": 10_000, "step_seconds": 0.05}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """Start a server of the test's own with these options; all are stopped after the test."""
    servers: list[Server] = []

    def start_server(*options: str) -> Server:
        servers.append(Server(tmp_path / f"data-{len(servers)}", *options).start())
        return servers[-1]

    yield start_server
    for server in servers:
        server.stop()


# -- rate limits ---------------------------------------------------------------------------------


def test_700_creates_in_a_minute_give_600_predictions_and_429s_with_retry_after(start) -> None:  # noqa: ANN001
    server = start()
    client = server.client()
    client.predictions.create(model="tests/steps", input=BLOCKER)
    began = time.monotonic()
    created, throttled = 1, []
    for i in range(699):
        try:
            client.predictions.create(model="tests/steps", input={"label": str(i)})
            created += 1
        except ReplicateError as exc:
            throttled.append(exc)
    burst = time.monotonic() - began
    assert burst < 50, f"the burst took {burst:.1f} s, too long to show a per-minute limit"
    assert created == 600 and len(throttled) == 100
    assert {exc.status for exc in throttled} == {429}
    assert "Request was throttled" in (throttled[0].detail or "")

    with server.http() as http:
        answer = http.post("/v1/models/tests/steps/predictions", json={"input": {}})
        assert answer.status_code == 429
        assert answer.headers["content-type"] == "application/problem+json"
        # Whole seconds, the only form the client honours: when the first create leaves the window.
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        # Other requests have a limit of their own, and nothing throttled became a prediction.
        assert len(http.get("/v1/predictions").json()["results"]) == 100
        assert http.get("/v1/predictions").status_code == 200

    # Another token is unaffected.
    other = server.client(OTHER_TOKEN).predictions.create(model="tests/steps", input={"steps": 0})
    assert other.status == "starting"


def test_the_client_retries_a_throttled_get_after_retry_after_and_surfaces_a_throttled_create(start) -> None:  # noqa: ANN001
    server = start("--rate-limit-creates", "2", "--rate-limit-requests", "3", "--rate-limit-window", "2")
    client = server.client()
    prediction = client.predictions.create(model="tests/steps", input={"steps": 0})
    client.predictions.create(model="tests/steps", input={"steps": 0})
    with pytest.raises(ReplicateError) as refused:
        client.predictions.create(model="tests/steps", input={"steps": 0})
    assert refused.value.status == 429

    for _ in range(3):
        client.predictions.get(prediction.id)
    began = time.monotonic()
    # The fourth GET in the window is answered 429 with Retry-After; the client waits and retries.
    assert client.predictions.get(prediction.id).id == prediction.id
    assert time.monotonic() - began >= 0.9

    with server.http() as http:
        for _ in range(3):
            http.get(f"/v1/predictions/{prediction.id}")
        throttled = http.get(f"/v1/predictions/{prediction.id}")
        assert throttled.status_code == 429 and throttled.headers["retry-after"] in ("1", "2")
        assert throttled.json()["title"] == "Too many requests"


def test_a_limit_of_0_is_off_and_the_window_slides() -> None:
    now = [0.0]
    limiter = RateLimiter(creates=0, requests=2, window=60, clock=lambda: now[0])
    for _ in range(1000):
        limiter.admit("a", "POST", "/v1/models/tests/steps/predictions")
    limiter.admit("a", "GET", "/v1/predictions")
    now[0] = 30.5
    limiter.admit("a", "POST", "/v1/predictions/abc/cancel")
    with pytest.raises(ApiError) as throttled:
        limiter.admit("a", "GET", "/v1/predictions")
    # Room opens when the oldest request leaves the window: 29.5 s from now, rounded up.
    assert throttled.value.status == 429 and throttled.value.headers == {"Retry-After": "30"}
    limiter.admit("b", "GET", "/v1/predictions")
    now[0] = 60.0
    limiter.admit("a", "GET", "/v1/predictions")
    assert RateLimiter.from_settings(Settings(rate_limit_creates=0, rate_limit_requests=0)) is None


@pytest.mark.parametrize(
    ("options", "env", "words"),
    [
        (["--rate-limit-window", "inf"], {}, "less than or equal to 86400"),
        (["--rate-limit-window", "86401"], {}, "less than or equal to 86400"),
        ([], {"OVERTURE_RATE_LIMIT_WINDOW": "nan"}, "less than or equal to 86400"),
        (["--rate-limit-window", "0"], {}, "greater than or equal to 0.001"),
    ],
)
def test_a_window_that_is_not_up_to_a_day_stops_the_server(
    tmp_path: Path, options: list[str], env: dict[str, str], words: str
) -> None:
    """An endless window once let the server start, then made every throttled request a 500."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERTURE_")} | env
    serve = [sys.executable, "-m", "overture", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", *options]
    # Wide enough that rich does not wrap the message inside its error box.
    env |= {"PYTHONPATH": SUBPROCESS_PYTHONPATH, "COLUMNS": "1000"}
    result = subprocess.run(serve, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--rate-limit-window'" in result.stderr and words in result.stderr, result.stderr


@pytest.mark.parametrize("window", [math.inf, math.nan, 86400.5, 0])
def test_settings_refuse_a_window_that_is_not_up_to_a_day(window: float) -> None:
    with pytest.raises(ValueError, match=f"rate_limit_window_seconds must be 0.001 to 86400 seconds, not {window!r}"):
        Settings(rate_limit_window_seconds=window)


# -- the cap on queued predictions ---------------------------------------------------------------


def test_a_token_at_its_queued_cap_gets_a_429_and_no_prediction(start) -> None:  # noqa: ANN001
    server = start("--max-queued-per-token", "3")
    with server.http() as http:
        running = http.post("/v1/models/tests/steps/predictions", json={"input": BLOCKER}).json()
        _wait_status(http, running["id"], "processing")
        queued = [http.post("/v1/models/tests/steps/predictions", json={"input": {}}).json() for _ in range(3)]
        refused = http.post("/v1/models/tests/steps/predictions", json={"input": {}})
        assert refused.status_code == 429
        assert "--max-queued-per-token 3" in refused.json()["detail"]
        assert len(http.get("/v1/predictions").json()["results"]) == 4

        # Another token has a cap of its own.
        with server.http(OTHER_TOKEN) as other:
            assert other.post("/v1/models/tests/steps/predictions", json={"input": {}}).status_code == 201

        # A queued one canceled makes room.
        http.post(f"/v1/predictions/{queued[0]['id']}/cancel")
        assert http.post("/v1/models/tests/steps/predictions", json={"input": {}}).status_code == 201


# -- turns between tokens ------------------------------------------------------------------------


def test_owners_take_turns_in_a_queue() -> None:
    queue = JobQueue()
    for owner, count in (("a", 4), ("b", 2), ("c", 1)):
        for i in range(count):
            queue.put(Job(f"{owner}{i}", {}, Path("."), owner=owner))
    assert queue.order() == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    # A batch is taken in turn order too; the owners served go to the back of the turns.
    assert [job.prediction_id for job in queue.take(2, key=lambda job: 0)] == ["a0", "b0"]
    queue.put(Job("d0", {}, Path("."), owner="d"))
    assert queue.order() == ["c0", "a1", "b1", "d0", "a2", "a3"]
    # So is a row joining a running batch.
    taken = queue.take_next(lambda job: True, block=False)
    assert taken is not None and taken.prediction_id == "c0"
    assert queue.remove("b1") and queue.order() == ["a1", "d0", "a2", "a3"]


def test_one_token_s_50_queued_predictions_do_not_wait_ahead_of_another_s_one(start) -> None:  # noqa: ANN001
    server = start()
    with server.http() as a, server.http(OTHER_TOKEN) as b:
        # The worker is up and idle: the first of the 50 starts at once, the rest queue.
        wait_finished(a, a.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 0}}).json()["id"])
        many = [
            a.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1, "step_seconds": 0.3}}).json()
            for _ in range(50)
        ]
        one = b.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 0}}).json()
        done = wait_finished(b, one["id"])
        assert done["status"] == "succeeded"
        for prediction in many:
            a.post(f"/v1/predictions/{prediction['id']}/cancel")
        started = [a.get(f"/v1/predictions/{p['id']}").json()["started_at"] for p in many]
    # Of the starts after B's create, B's is the first or the second (timestamps in ISO 8601 with
    # milliseconds compare as strings).
    overtaking = [at for at in started if at is not None and one["created_at"] < at < done["started_at"]]
    assert len(overtaking) <= 1, (one["created_at"], done["started_at"], overtaking)


# -- a queued prediction's place in line ---------------------------------------------------------


def test_a_pool_reports_its_whole_queue_in_one_event_at_a_bounded_rate() -> None:
    queue = JobQueue()
    sent: list[QueuePositions] = []
    reporter = PositionReporter(queue, sent.append, running=lambda: 2, interval=0.2)
    reporter.ran(3.0)
    began = time.monotonic()
    for i in range(500):
        queue.put(Job(f"p{i}", {}, Path("."), owner=f"owner{i % 2}"))
        reporter.changed()
    while not (sent and len(sent[-1].prediction_ids) == 500):
        assert time.monotonic() - began < 10
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    reporter.stop()
    # 500 changes: the first report at once, then at most one per interval.
    assert len(sent) <= 2 + elapsed / 0.2, (len(sent), elapsed)
    last = sent[-1]
    assert len(last.prediction_ids) == 500 and last.prediction_ids[:3] == ("p0", "p1", "p2")
    assert last.seconds_per_place == 1.5  # a 3 s run, two running side by side


def test_queue_position_and_its_log_line_move_as_the_queue_drains(start) -> None:  # noqa: ANN001
    server = start()
    client = server.client()
    first = client.predictions.create(model="tests/steps", input={"steps": 4, "step_seconds": 0.25})
    rest = [client.predictions.create(model="tests/steps", input={"steps": 4, "step_seconds": 0.25}) for _ in range(3)]
    last = rest[-1]
    seen: list[tuple[int | None, str]] = []
    with server.http() as http:
        deadline = time.monotonic() + 60
        while True:
            body = http.get(f"/v1/predictions/{last.id}").json()
            waiting = [line for line in body["logs"].splitlines() if line.startswith("Waiting in the queue")]
            assert len(waiting) <= 1, body["logs"]  # one line, replaced as it moves
            seen.append((body.get("queue_position"), waiting[0] if waiting else ""))
            if body["status"] != "starting" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert body["status"] == "processing" and body.get("queue_position") is None
        assert "Waiting in the queue" not in body["logs"]
        assert http.get(f"/v1/predictions/{first.id}").json().get("queue_position") is None
        documented = http.get("/openapi.json").json()["components"]["schemas"]["Prediction"]["properties"]
        assert "Overture extension" in documented["queue_position"]["description"]
    positions = [position for position, _ in seen if position is not None]
    assert positions[0] == 3 and positions[-1] == 1
    assert positions == sorted(positions, reverse=True)
    lines = {line for _, line in seen if line}
    assert any(re.search(r"position 3 of 3; no estimate", line) for line in lines), lines
    # After the first run finished, its time gives the estimate.
    assert any(re.search(r"position [12] of [12]; (estimated start in about \d+ s|starting any moment)", line)
               for line in lines), lines  # fmt: skip
    client.predictions.cancel(last.id)


def _wait_status(http, pid: str, status: str, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while http.get(f"/v1/predictions/{pid}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{pid} never reached {status}"
        time.sleep(0.05)
