"""When the upstream fails, throttles or goes away, and when the relaying server itself is killed:
every relayed prediction ends, with an error that says so, or runs here when its route allows;
none is lost and none is created twice upstream (docs/providers.md)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import UNLIMITED, Server, free_port, wait_finished
from upstream_helpers import create_a_burst, cut_off_create, relaying

pytestmark = pytest.mark.timeout(180)


def predictions(server: Server) -> list[dict]:
    with server.http() as http:
        return http.get("/v1/predictions").json()["results"]


def test_an_upstream_down_at_create_fails_the_prediction_saying_so(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    server = relaying(tmp_path, nobody, "tests/steps=upstream:a", extra=("--upstream-timeout", "1")).start()
    try:
        prediction = server.client().predictions.create(model="tests/steps", input={"steps": 1})
        prediction.wait()
        assert prediction.status == "failed"
        assert "upstream 'a'" in prediction.error and "could not be reached" in prediction.error
    finally:
        server.stop()


def test_a_burst_route_runs_here_when_its_upstream_is_down(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    extra = ("--upstream-timeout", "1", "--burst-after", "0.01")
    server = relaying(tmp_path, nobody, "tests/steps=burst:a", extra=extra).start()
    try:
        bursting = create_a_burst(server.client())
        assert bursting.status == "succeeded"
        assert "could not be reached" in bursting.logs and "Running this prediction here instead" in bursting.logs
        assert predictions(server)[0]["provider"] == "local"
    finally:
        server.stop()


def test_burst_routing_sends_the_overflow_upstream_and_comes_back(tmp_path: Path) -> None:
    upstream = Server(tmp_path / "a", *UNLIMITED).start()
    server = relaying(tmp_path / "b", upstream.base_url, "tests/steps=burst:a", extra=("--burst-after", "0.5")).start()
    try:
        client = server.client()
        slow = {"steps": 10, "step_seconds": 0.1}
        client.predictions.create(model="tests/steps", input=slow).wait()  # learns the run time: about 1 s
        queued = [client.predictions.create(model="tests/steps", input=slow) for _ in range(4)]
        for prediction in queued:
            prediction.wait()
        with server.http() as http:
            providers = [http.get(f"/v1/predictions/{p.id}").json()["provider"] for p in queued]
        assert providers[0] == "local" and "a" in providers[1:], providers
        after = client.predictions.create(model="tests/steps", input={"steps": 1})
        after.wait()
        with server.http() as http:
            assert http.get(f"/v1/predictions/{after.id}").json()["provider"] == "local"
    finally:
        server.stop()
        upstream.stop()


def test_an_upstream_dying_mid_prediction_fails_it_saying_so(tmp_path: Path) -> None:
    upstream = Server(tmp_path / "a", *UNLIMITED).start()
    server = relaying(
        tmp_path / "b", upstream.base_url, "tests/steps=upstream:a", extra=("--upstream-timeout", "2")
    ).start()
    try:
        prediction = server.client().predictions.create(model="tests/steps", input={"steps": 300, "step_seconds": 0.1})
        while prediction.status != "processing":
            time.sleep(0.05)
            prediction.reload()
        upstream.kill()
        prediction.wait()
        assert prediction.status == "failed" and "could not be reached" in prediction.error
    finally:
        server.stop()
        upstream.stop()


def test_a_throttled_create_waits_for_retry_after(tmp_path: Path) -> None:
    limits = ("--rate-limit-creates", "1", "--rate-limit-window", "2", "--rate-limit-requests", "0")
    upstream = Server(tmp_path / "a", *limits).start()
    server = relaying(tmp_path / "b", upstream.base_url, "tests/steps=upstream:a").start()
    try:
        client = server.client()
        started = time.monotonic()
        both = [client.predictions.create(model="tests/steps", input={"steps": 1}) for _ in range(2)]
        for prediction in both:
            prediction.wait()
            assert prediction.status == "succeeded"
        # The second create was refused with 429 and sent again once the window let it in.
        assert time.monotonic() - started >= 1.0
        assert len(predictions(upstream)) == 2
    finally:
        server.stop()
        upstream.stop()


def test_killed_with_ten_in_flight_all_finish_and_none_is_created_twice(tmp_path: Path) -> None:
    upstream = Server(tmp_path / "a", *UNLIMITED).start()
    server = relaying(tmp_path / "b", upstream.base_url, "tests/steps=upstream:a").start()
    try:
        client = server.client()
        created = [
            client.predictions.create(model="tests/steps", input={"steps": 10, "step_seconds": 0.1, "label": str(i)})
            for i in range(10)
        ]
        # Killed once B has passed on some of A's log lines: others are still on their way to A,
        # or wait for their inputs.
        deadline = time.monotonic() + 30
        while not any("/10 [" in (p["logs"] or "") for p in predictions(server)):
            assert time.monotonic() < deadline, "B never passed on any of A's log lines"
            time.sleep(0.02)
        server.kill()
        server.start()
        with server.http() as http:
            ended = [wait_finished(http, p.id, timeout=60) for p in created]
        assert [p["status"] for p in ended] == ["succeeded"] * 10, [p["error"] for p in ended]
        assert sorted(p["output"] for p in ended) == sorted(f"{i}:None" for i in range(10))
        assert len(predictions(upstream)) == 10
        for prediction in ended:
            # What B passed on before the kill is not passed on again: one bar, one last line.
            lines = prediction["logs"].splitlines()
            assert sum("/10 [" in line for line in lines) == 1, prediction["logs"]
            assert lines.count("finished 10 steps") == 1, prediction["logs"]
    finally:
        server.stop()
        upstream.stop()


@pytest.mark.parametrize("reached_upstream", [True, False], ids=["create-reached-a", "create-never-left"])
def test_a_create_cut_off_by_a_crash_is_found_again_and_never_repeated(tmp_path: Path, reached_upstream: bool) -> None:
    """The record written before the create, as a crash between the call and its answer left it:
    the restarted server finds A's prediction by its marker and key, or creates it once."""
    upstream = Server(tmp_path / "a", *UNLIMITED).start()
    server = relaying(tmp_path / "b", upstream.base_url, "tests/steps=upstream:a").start()
    server.stop()
    pid = "cutoffbetweencallandanswer"
    cut_off_create(server, pid, "tests/steps", "tests-steps-v1", {"steps": 1, "label": "once"}, "a")
    if reached_upstream:
        with upstream.http() as http:
            http.post(
                "/v1/models/tests/steps/predictions",
                json={
                    "input": {"steps": 1, "label": "once"},
                    "webhook": f"{server.base_url}/v1/upstreams/a/predictions/{pid}/webhook",
                },
                headers={"Idempotency-Key": pid},
            ).raise_for_status()
    try:
        server.start()
        with server.http() as http:
            assert wait_finished(http, pid)["output"] == "once:None"
        assert len(predictions(upstream)) == 1
    finally:
        server.stop()
        upstream.stop()


def test_a_restart_follows_an_upstream_prediction_without_fetching_its_inputs_again(tmp_path: Path) -> None:
    """Its file input went to A with the create: the URL B fetched it from, gone by the restart,
    is not fetched again, nor is the result cache asked again."""
    data = bytes(range(256)) * 64

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    files = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    gate = tmp_path / "gate"
    upstream = Server(tmp_path / "a", *UNLIMITED).start()
    server = relaying(tmp_path / "b", upstream.base_url, "tests/gated-copy=upstream:a").start()
    try:
        source = f"http://127.0.0.1:{files.server_address[1]}/source.bin"
        prediction = server.client().predictions.create(
            model="tests/gated-copy", input={"source": source, "gate": str(gate)}
        )
        while prediction.status != "processing":
            time.sleep(0.05)
            prediction.reload()
        files.shutdown()
        files.server_close()
        server.kill()
        server.start()
        gate.touch()
        with server.http() as http:
            ended = wait_finished(http, prediction.id)
            assert ended["status"] == "succeeded", ended["error"]
            assert http.get(ended["output"]).content == data
        assert len(predictions(upstream)) == 1
    finally:
        gate.touch()
        server.stop()
        upstream.stop()
