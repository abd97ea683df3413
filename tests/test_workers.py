"""Models run in worker processes: a worker that dies, hangs past a cancel or cannot load its code
costs its own predictions at most, and the server keeps answering. Every test kills or watches
real child processes of a real server, driven by the real client."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from replicate.stream import ServerSentEvent

from harness import Server, wait_finished
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.timeout(180)


def worker_pids(server: Server) -> list[int]:
    """The server's worker processes: its children started by multiprocessing's ``spawn``."""
    assert server.process is not None
    return [pid for pid in _children(server.process.pid) if b"spawn_main" in _cmdline(pid)]


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stat(int(entry.name))[1] == parent:
            found.append(int(entry.name))
    return found


def _stat(pid: int) -> tuple[str, int]:
    """State and parent pid, or ("", 0) for a process that is gone."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return "", 0
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    return _stat(pid)[0] not in ("", "Z")


def wait_until(condition, timeout: float = 30, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def one_worker(server: Server) -> int:
    wait_until(lambda: len(worker_pids(server)) == 1, what="one worker process")
    return worker_pids(server)[0]


@pytest.fixture
def musicgen_server(tmp_path: Path) -> Iterator[Server]:
    mono = tiny_checkpoint("musicgen", tmp_path / "mono")
    srv = Server(tmp_path / "data", "--checkpoint", f"facebook/musicgen-small={mono}", "--no-cache").start()
    yield srv
    srv.stop()


# A new worker loads the checkpoint again and runs three 30 s clips: minutes on a loaded 2-core machine.
@pytest.mark.timeout(420)
def test_sigkill_of_a_worker_mid_batch_runs_its_predictions_again_unless_they_had_streamed_output(
    musicgen_server: Server,
) -> None:
    client = musicgen_server.client()
    inputs = {"prompt": "drone", "model_version": "small", "duration": 30}
    quiet = [client.predictions.create(model="meta/musicgen", input={**inputs, "seed": i}) for i in range(3)]
    streamed = client.predictions.create(model="meta/musicgen", input={**inputs, "seed": 3}, stream=True)
    worker = one_worker(musicgen_server)
    # Its first chunk is on its stream (output before the end is a stream event, not the record's).
    first = next(event for event in streamed.stream() if event.event == ServerSentEvent.EventType.OUTPUT)
    assert first.data

    def all_running() -> bool:
        for p in quiet:
            p.reload()
        return all(p.status == "processing" and p.progress for p in quiet)

    wait_until(all_running, timeout=60, what="the other three predictions running in the same batch")
    os.kill(worker, signal.SIGKILL)

    with musicgen_server.http() as http:
        assert http.get("/health").status_code == 200
        ended = [wait_finished(http, p.id, timeout=300) for p in quiet]
        lost = wait_finished(http, streamed.id, timeout=30)
    for body in ended:
        assert body["status"] == "succeeded", body["error"]
        assert "The model's worker process was killed by SIGKILL. Running this prediction again." in body["logs"]
    # Its first chunks were out already: running it again would send different audio under the same id.
    assert lost["status"] == "failed" and lost["error"] == "The model's worker process was killed by SIGKILL."
    assert worker not in worker_pids(musicgen_server)
    assert "worker for meta/musicgen" in musicgen_server.log_path.read_text()


@pytest.mark.parametrize(("how", "signal_name"), [("abort", "SIGABRT"), ("segfault", "SIGSEGV")])
def test_a_model_that_crashes_its_worker_fails_after_one_retry_and_the_worker_comes_back(
    server: Server, how: str, signal_name: str
) -> None:
    with server.http() as http:
        pid = http.post("/v1/models/tests/crash/predictions", json={"input": {"how": how}}).json()["id"]
        body = wait_finished(http, pid, timeout=60)
        assert body["status"] == "failed"
        assert body["error"] == f"The model's worker process was killed by {signal_name}."
        assert body["logs"].count("Running this prediction again.") == 1
        # The server never noticed beyond its log, and the next job gets a new worker.
        assert http.get("/health").status_code == 200
        pid = http.post("/v1/models/tests/crash/predictions", json={"input": {"how": "none"}}).json()["id"]
        assert wait_finished(http, pid, timeout=60)["output"] == "survived 0 steps"
    assert f"killed by {signal_name}" in server.log_path.read_text()


def test_a_predictor_that_ignores_its_cancel_has_its_worker_killed_after_the_grace_period(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--cancel-grace", "1").start()
    try:
        with srv.http() as http:
            # tests/faulty runs two predictions at once in one worker: one stuck in time.sleep(),
            # one stepping and checking for cancel.
            stuck = http.post("/v1/models/tests/faulty/predictions", json={"input": {"fault": "block", "seconds": 600}})
            stuck_id = stuck.json()["id"]
            wait_until(lambda: http.get(f"/v1/predictions/{stuck_id}").json()["status"] == "processing", what="start")
            neighbour_id = http.post(
                "/v1/models/tests/faulty/predictions", json={"input": {"fault": "hang", "seconds": 3}}
            ).json()["id"]
            wait_until(lambda: http.get(f"/v1/predictions/{neighbour_id}").json()["status"] == "processing")
            worker = one_worker(srv)
            canceled_at = time.monotonic()
            assert http.post(f"/v1/predictions/{stuck_id}/cancel").json()["status"] == "canceled"
            wait_until(lambda: not alive(worker), timeout=15, what="the stuck worker to be killed")
            assert time.monotonic() - canceled_at >= 1
            neighbour = wait_finished(http, neighbour_id, timeout=60)
        assert neighbour["status"] == "succeeded"
        assert "ignored its cancel for 1 s. Running this prediction again." in neighbour["logs"]
        assert f"prediction {stuck_id} ignored its cancel" in srv.log_path.read_text()
    finally:
        srv.stop()


def test_a_worker_that_cannot_load_its_code_fails_each_prediction_once_without_restarting_in_a_loop(
    server: Server,
) -> None:
    log_lines = lambda: server.log_path.read_text().count("worker for tests-unloadable-v1 could not start")  # noqa: E731
    before = log_lines()
    with server.http() as http:
        for attempt in (1, 2):
            pid = http.post("/v1/models/tests/unloadable/predictions", json={"input": {}}).json()["id"]
            body = wait_finished(http, pid, timeout=60)
            assert body["status"] == "failed"
            assert body["error"] == (
                "The model's worker could not load its code: ImportError: "
                "libsynthesis.so.3: cannot open shared object file: No such file or directory"
            )
            time.sleep(1)
            assert log_lines() == before + attempt


def _busy_server(tmp_path: Path) -> tuple[Server, list[int]]:
    srv = Server(tmp_path / "data").start()
    with srv.http() as http:
        for model, payload in (("steps", {"steps": 10_000, "step_seconds": 0.05}), ("faulty", {"fault": "block"})):
            pid = http.post(f"/v1/models/tests/{model}/predictions", json={"input": payload}).json()["id"]
            wait_until(lambda pid=pid: http.get(f"/v1/predictions/{pid}").json()["status"] == "processing")
    workers = worker_pids(srv)
    assert len(workers) == 2
    return srv, workers


def test_sigterm_stops_the_server_and_every_worker(tmp_path: Path) -> None:
    srv, workers = _busy_server(tmp_path)
    assert srv.process is not None
    srv.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then raises the signal again so that a supervisor sees it.
    assert srv.process.wait(30) == -signal.SIGTERM
    assert (
        "engine stopped: 2 model workers, 2 unfinished predictions kept for the next start" in srv.log_path.read_text()
    )
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10, what="no orphan workers")


def test_workers_of_a_killed_server_notice_and_exit(tmp_path: Path) -> None:
    srv, workers = _busy_server(tmp_path)
    srv.kill()
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10, what="no orphan workers")


def test_an_output_the_server_cannot_read_fails_its_prediction_and_the_worker_comes_back(server: Server) -> None:
    with server.http() as http:
        pid = http.post("/v1/models/tests/crash/predictions", json={"input": {"how": "unreadable"}}).json()["id"]
        body = wait_finished(http, pid, timeout=60)
        assert body["status"] == "failed"
        assert body["error"] == (
            "The model's worker process sent a message the server could not read "
            "(ModuleNotFoundError: No module named 'only_in_the_worker')."
        )
        pid = http.post("/v1/models/tests/crash/predictions", json={"input": {"how": "none"}}).json()["id"]
        assert wait_finished(http, pid, timeout=60)["output"] == "survived 0 steps"


def test_a_batch_answered_with_too_few_results_fails_that_batch_only(server: Server) -> None:
    with server.http() as http:
        # The first runs alone while the other four queue, then share one call.
        ids = [
            http.post(
                "/v1/models/tests/batched/predictions", json={"input": {"text": str(i), "lose_one": True}}
            ).json()["id"]
            for i in range(5)
        ]
        bodies = [wait_finished(http, pid, timeout=60) for pid in ids]
        shared = [body for body in bodies if body["status"] == "failed"]
        assert shared, [body["output"] for body in bodies]
        for body in shared:
            n = len(shared)
            assert body["error"] == f"RuntimeError: The model returned {n - 1} results for a batch of {n}"
        pid = http.post("/v1/models/tests/batched/predictions", json={"input": {"text": "after"}}).json()["id"]
        assert wait_finished(http, pid, timeout=60)["output"] == {"text": "after", "batch_size": 1}


def test_a_job_still_queued_when_its_worker_dies_twice_is_sent_again_without_using_an_attempt(
    fresh_server: Server,
) -> None:
    server = fresh_server.start()  # its only worker process is the one this test kills
    with server.http() as http:

        def create(payload: dict) -> str:
            return http.post("/v1/models/tests/steps/predictions", json={"input": payload}).json()["id"]

        def running_with(pid: str, notices: int) -> bool:
            body = http.get(f"/v1/predictions/{pid}").json()
            return body["status"] == "processing" and body["logs"].count("Running this prediction again.") == notices

        running = create({"steps": 10_000, "step_seconds": 0.05})
        wait_until(lambda: running_with(running, 0), what="the first prediction running")
        queued = create({"steps": 1, "label": "queued"})
        for notices in (0, 1):
            wait_until(lambda notices=notices: running_with(running, notices), what="the first prediction running")
            assert http.get(f"/v1/predictions/{queued}").json()["status"] == "starting"
            os.kill(one_worker(server), signal.SIGKILL)
        # The running one has used its two attempts; the queued one never ran, and runs now.
        failed = wait_finished(http, running, timeout=60)
        assert failed["status"] == "failed" and failed["error"] == "The model's worker process was killed by SIGKILL."
        body = wait_finished(http, queued, timeout=60)
        assert body["status"] == "succeeded" and body["output"] == "queued:None", body
        assert "Running this prediction again." not in body["logs"]
