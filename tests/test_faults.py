"""Worker faults: a model that raises or runs out of memory fails its own prediction, one that
hangs past its deadline is canceled, each with a readable error, and the server goes on serving
everything else."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from harness import Server, wait_finished

pytestmark = pytest.mark.timeout(120)

#: The server's default deadline (``--prediction-timeout``) in these tests.
TIMEOUT = 4


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("faults") / "data", "--prediction-timeout", str(TIMEOUT)).start()
    yield server
    server.stop()


def _create(http: httpx.Client, model: str, input: dict, **headers: str) -> str:
    response = http.post(f"/v1/models/{model}/predictions", json={"input": input}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _still_serving(http: httpx.Client) -> None:
    assert wait_finished(http, _create(http, "tests/steps", {"steps": 2}))["status"] == "succeeded"
    assert wait_finished(http, _create(http, "tests/faulty", {"fault": "none"}))["output"] == "none"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("raise", "RuntimeError: the model broke"),
        ("memory", "The model ran out of memory. cannot allocate more than 64 MiB"),
    ],
)
def test_a_failing_model_fails_only_its_prediction(srv: Server, fault: str, error: str) -> None:
    with srv.http() as http:
        body = wait_finished(http, _create(http, "tests/faulty", {"fault": fault}))
        assert body["status"] == "failed" and body["error"] == error
        assert "Traceback" in body["logs"]
        _still_serving(http)


def test_a_hanging_model_is_canceled_at_the_server_timeout(srv: Server) -> None:
    with srv.http() as http:
        started = time.monotonic()
        body = wait_finished(http, _create(http, "tests/faulty", {"fault": "hang", "seconds": 60}))
        assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 3
        assert body["status"] == "canceled"
        assert (
            body["error"] == f"Canceled: the prediction did not finish within its deadline of {TIMEOUT} s "
            "(Cancel-After or the server's timeout)."
        )
        _still_serving(http)


def test_a_model_blocked_in_one_call_is_still_canceled_at_its_cancel_after(srv: Server) -> None:
    """A thread can't be interrupted inside ``time.sleep`` (or C code): the prediction is canceled
    at its deadline anyway, and its worker comes back when the call returns."""
    with srv.http() as http:
        started = time.monotonic()
        blocked = _create(http, "tests/faulty", {"fault": "block", "seconds": 10}, **{"Cancel-After": "5s"})
        # Meanwhile, other predictions (other models, and the same model's other worker) run.
        _still_serving(http)
        body = wait_finished(http, blocked)
        assert 5 <= time.monotonic() - started < 8
        assert body["status"] == "canceled" and "deadline of 5 s" in body["error"]
        # Once the call returns, its late result does not overwrite the cancellation.
        time.sleep(max(0.0, 10.5 - (time.monotonic() - started)))
        assert http.get(f"/v1/predictions/{blocked}").json()["status"] == "canceled"
        _still_serving(http)
