"""Queueing, cancel, live logs and file inputs, seen through the API."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import replicate

from harness import Server
from overture.engine.workers.protocol import Job
from overture.engine.workers.queue import WORKER_IDLE_SECONDS, JobQueue, QueueClosed

pytestmark = pytest.mark.timeout(60)


def test_logs_and_progress_show_while_the_prediction_runs(client: replicate.Client) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 40, "step_seconds": 0.05})
    seen_running_progress = False
    while prediction.status not in ("succeeded", "failed"):
        prediction.reload()
        if prediction.status == "processing" and prediction.progress is not None:
            seen_running_progress = 0 < prediction.progress.percentage < 1 or seen_running_progress
        time.sleep(0.05)
    assert seen_running_progress
    # One rewritten progress bar, not one line per step.
    assert prediction.logs.count("%|") == 1 and prediction.logs.endswith("finished 40 steps\n")


def test_cancel_of_a_queued_prediction_is_immediate(client: replicate.Client) -> None:
    running = client.predictions.create(model="tests/steps", input={"steps": 200, "step_seconds": 0.05})
    queued = client.predictions.create(model="tests/steps", input={"steps": 1})
    canceled = client.predictions.cancel(queued.id)
    assert canceled.status == "canceled" and canceled.started_at is None
    running.cancel()
    running.wait()
    queued.reload()
    assert running.status == "canceled" and queued.status == "canceled" and queued.output is None


@pytest.fixture
def file_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"remote audio bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/melody.wav"
    httpd.shutdown()


def test_http_url_input_is_downloaded(client: replicate.Client, file_server: str) -> None:
    output = client.run("tests/file-echo", input={"audio": file_server})
    assert output["sha256"] == hashlib.sha256(b"remote audio bytes").hexdigest()
    assert output["file"].endswith("/echo.wav")


def test_percent_encoded_data_uri_input(client: replicate.Client) -> None:
    output = client.run("tests/file-echo", input={"audio": "data:text/plain,hello%20world"})
    assert output["size"] == len(b"hello world")


def test_an_output_url_can_feed_another_prediction(client: replicate.Client, server: Server) -> None:
    first = client.run("overture/synth", input={"duration": 1})
    second = client.run("tests/file-echo", input={"audio": first})
    with server.http() as http:
        assert second["sha256"] == hashlib.sha256(http.get(first).content).hexdigest()


def test_cache_can_be_turned_off(tmp_path) -> None:
    srv = Server(tmp_path / "data", "--no-cache").start()
    try:
        client = srv.client()
        runs = [client.predictions.create(model="overture/synth", input={"duration": 1, "seed": 3}) for _ in range(2)]
        for p in runs:
            p.wait()
        assert all("result cache" not in p.logs for p in runs)
        with srv.http() as http:
            # Computed twice, and still the same bytes: the composer is deterministic.
            assert http.get(runs[0].output).content == http.get(runs[1].output).content
    finally:
        srv.stop()


def test_unseeded_inputs_are_never_served_from_the_cache(client: replicate.Client) -> None:
    runs = [client.predictions.create(model="overture/synth", input={"duration": 1}) for _ in range(2)]
    for p in runs:
        p.wait()
    assert all("result cache" not in p.logs for p in runs)
    assert runs[0].logs.split("\n")[0] != runs[1].logs.split("\n")[0]  # each drew its own seed


def test_cancel_after_cancels_a_prediction_that_runs_too_long(client: replicate.Client, server: Server) -> None:
    with server.http() as http:
        created = http.post(
            "/v1/models/tests/steps/predictions",
            json={"input": {"steps": 400, "step_seconds": 0.05}},
            headers={"Cancel-After": "5s"},
        ).json()
    assert created["deadline"] is not None
    prediction = client.predictions.get(created["id"])
    prediction.wait()
    assert prediction.status == "canceled" and "deadline of 5 s" in prediction.error
    assert 4.5 < prediction.metrics["total_time"] < 8
    # The server goes on serving.
    assert client.run("tests/steps", input={"steps": 1}) == "done:None"


def test_a_worker_serves_back_to_back_jobs_then_retires_when_idle_and_a_new_one_takes_over(
    client: replicate.Client,
) -> None:
    # An idle worker thread must not outlive its work: its OpenMP team would slow every other
    # model's operations (see overture.engine.workers.queue).
    first = client.run("tests/which-thread", input={"seconds": 0.5})
    assert client.run("tests/which-thread", input={}) == first
    time.sleep(WORKER_IDLE_SECONDS + 1)
    assert client.run("tests/which-thread", input={}) != first


def test_a_queue_asks_for_workers_as_wanted_and_retires_the_idle_ones() -> None:
    queue = JobQueue(workers=2, idle_seconds=0.1)
    job = lambda pid: Job(pid, {}, Path("/nonexistent"))  # noqa: E731
    assert [queue.put(job(pid)) for pid in ("a", "b", "c")] == [True, True, False]
    assert [j.prediction_id for j in queue.take(1, key=lambda j: 0)] == ["a"]
    assert queue.take_next(lambda j: True, block=True).prediction_id == "b"  # type: ignore[union-attr]
    assert [j.prediction_id for j in queue.take(1, key=lambda j: 0)] == ["c"]
    assert queue.take(1, key=lambda j: 0) == []  # idle: the first worker retires
    with pytest.raises(QueueClosed):
        queue.take_next(lambda j: True, block=True)  # and so does the second
    assert queue.put(job("d"))  # work again: a worker is wanted
