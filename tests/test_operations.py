"""What an operator sees: ``/metrics`` in Prometheus' format counting exactly what was sent,
``/health`` in Cog's states through a server's life, and ``--log-format json`` lines that carry
the prediction they are about, from the server and from its worker processes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import TOKEN, Receiver, Server, wait_finished
from overture.engine.health import Health, HealthMonitor, HealthStatus
from overture.engine.run import LogBuffer, PredictionRun
from overture.engine.workers.meter import PoolMeter, device_memory
from overture.engine.workers.protocol import BatchStats
from overture.models.base import ContinuousPredictor, Predictor, Version
from overture.models.musicgen import OVERTURE_VERSION
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.timeout(180)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    """Every sample of ``/metrics``, parsed as Prometheus parses it, by name and labels."""
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def families(http: httpx.Client) -> set[str]:
    """The metric names ``/metrics`` declares, with and without Prometheus' suffixes."""
    names = {family.name for family in text_string_to_metric_families(http.get("/metrics").text)}
    return names | {f"{name}{suffix}" for name in names for suffix in ("_total", "_bucket", "_sum", "_count")}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def steps(http: httpx.Client, **inputs: object) -> str:
    response = http.post("/v1/models/tests/steps/predictions", json={"input": inputs})
    assert response.status_code == 201, response.text
    return response.json()["id"]


# -- /metrics ----------------------------------------------------------------------------------


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", "--webhook-backoff-seconds", "0.1", "--metrics-token", "scraper-token").start()
    yield srv
    srv.stop()


def test_metrics_count_exactly_the_workload_sent(metrics_server: Server, receiver: Receiver) -> None:
    with metrics_server.http() as http:
        before = scrape(http)
        assert total(before, "overture_predictions_created_total") == 0
        succeeded = [steps(http, steps=1, step_seconds=0) for _ in range(3)]
        # The model refuses its input (a ValueError from predict): a failed prediction, not a 422.
        failed = [steps(http, steps=1, step_seconds=0, fail=True) for _ in range(2)]
        # Refused at the API: never created, so never counted.
        assert http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": -1}}).status_code == 422
        canceled = [steps(http, steps=400, step_seconds=0.05) for _ in range(2)]
        for pid in canceled:
            assert http.post(f"/v1/predictions/{pid}/cancel").status_code == 200
        hook = {"webhook": f"{receiver.url}/hook", "webhook_events_filter": ["completed"]}
        delivered = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1}, **hook}).json()["id"]
        receiver.wait_for(lambda: len(receiver.delivered()) == 1)
        receiver.fail_first = 1  # each later delivery's first attempt gets a 503: one retry each
        retried = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1}, **hook}).json()["id"]
        receiver.wait_for(lambda: len(receiver.delivered()) == 2)
        sent = [*succeeded, *failed, *canceled, delivered, retried]
        ended = {pid: wait_finished(http, pid)["status"] for pid in sent}
        assert list(ended.values()) == ["succeeded"] * 3 + ["failed"] * 2 + ["canceled"] * 2 + ["succeeded"] * 2

        # The webhook counts land after the receiver answered: wait for them, then read once.
        wait_until(lambda: total(scrape(http), "overture_webhook_deliveries_total") == 2, "the deliveries counted")
        after = scrape(http)
    model = {"model": "tests/steps"}
    assert value(after, "overture_predictions_created_total", **model) == 9
    assert value(after, "overture_predictions_finished_total", **model, status="succeeded") == 5
    assert value(after, "overture_predictions_finished_total", **model, status="failed") == 2
    assert value(after, "overture_predictions_finished_total", **model, status="canceled") == 2
    assert value(after, "overture_webhook_deliveries_total", event="completed", outcome="delivered") == 2
    assert value(after, "overture_webhook_retries_total", event="completed") == 1
    assert total(after, "overture_webhook_deliveries_total", outcome="failed") == 0
    # Every prediction that ran waited in a queue first and then ran: one observation each.
    assert value(after, "overture_prediction_run_seconds_count", **model, status="succeeded") == 5
    assert value(after, "overture_prediction_run_seconds_count", **model, status="failed") == 2
    ran = total(after, "overture_prediction_run_seconds_count", **model)
    assert value(after, "overture_prediction_queue_wait_seconds_count", **model) == ran
    # Nothing is left waiting or running; a CPU-only server reports no GPU at all, not zeros.
    assert total(after, "overture_predictions_queued") == 0
    assert total(after, "overture_predictions_running") == 0
    assert not any(name.startswith("overture_gpu_") for name, _ in after)


def test_the_sample_dashboard_uses_the_exported_names(metrics_server: Server) -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-overture.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queried = {name for query in queries for name in re.findall(r"overture_[a-z_]+", query)}
    with metrics_server.http() as http:
        exported = families(http)
    # Present only with a memory budget, or where a worker used CUDA.
    conditional = {"overture_model_memory_budget_bytes", *(n for n in queried if n.startswith("overture_gpu_memory_"))}
    assert queried - conditional <= exported, queried - conditional - exported
    assert conditional == {
        "overture_model_memory_budget_bytes",
        "overture_gpu_memory_allocated_bytes",
        "overture_gpu_memory_reserved_bytes",
    }


def test_metrics_take_an_api_token_or_the_metrics_token_and_nothing_else(metrics_server: Server) -> None:
    url = f"{metrics_server.base_url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(url, headers={"Authorization": "Bearer scraper-token"}).status_code == 200
    # The scraper's token reads metrics only: it runs no predictions.
    with metrics_server.http("scraper-token") as scraper:
        assert scraper.get("/v1/predictions").status_code == 401


def test_no_metrics_serves_no_metrics_route(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--no-metrics").start()
    try:
        with srv.http() as http:
            assert http.get("/metrics").status_code == 404
            pid = steps(http, steps=1, step_seconds=0)
            assert wait_finished(http, pid)["status"] == "succeeded"
            assert http.get("/health").json()["status"] == "READY"
    finally:
        srv.stop()


@pytest.fixture
def musicgen_server(tmp_path: Path) -> Iterator[Server]:
    mono = tiny_checkpoint("musicgen", tmp_path / "mono")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        srv = Server(tmp_path / "data", "--checkpoint", f"facebook/musicgen-small={mono}", "--no-cache").start()
    yield srv
    srv.stop()


def test_a_running_musicgen_batch_reports_its_rows_and_steps_per_second(musicgen_server: Server) -> None:
    pool = {"pool": "meta/musicgen"}
    with musicgen_server.http() as http:
        pids = [
            http.post(
                "/v1/predictions",
                json={"version": OVERTURE_VERSION, "input": {"prompt": p, "model_version": "small", "duration": 30}},
            ).json()["id"]
            for p in ("drone", "choir")
        ]
        samples: Samples = {}

        def batch_of_two() -> bool:
            nonlocal samples
            samples = scrape(http)
            return value(samples, "overture_batch_rows", **pool) == 2

        wait_until(batch_of_two, "both predictions in one running batch", timeout=120)
        assert (value(samples, "overture_batch_decoder_steps_per_second", **pool) or 0) > 0
        assert (value(samples, "overture_loaded_models", **pool) or 0) >= 1
        assert total(samples, "overture_loaded_model_bytes", **pool) > 0
        for pid in pids:
            http.post(f"/v1/predictions/{pid}/cancel")
        # The emptied loop says so at once, rather than keeping its last figures.
        wait_until(lambda: value(scrape(http), "overture_batch_rows", **pool) == 0, "the batch reported empty")
        assert value(scrape(http), "overture_batch_decoder_steps_per_second", **pool) == 0


# -- /health -----------------------------------------------------------------------------------


def health(server: Server) -> dict[str, object]:
    response = httpx.get(f"{server.base_url}/health")  # no token: a load balancer has none
    assert response.status_code == 200  # as Cog's, whatever the state: the body tells them apart
    return response.json()


def test_health_is_ready_then_busy_at_capacity_then_setup_failed(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        assert health(srv) == {"status": "READY", "reason": None}
        with srv.http() as http:
            # tests/steps runs one prediction at a time: with one running its only pool is full.
            running = steps(http, steps=400, step_seconds=0.05)
            wait_until(lambda: http.get(f"/v1/predictions/{running}").json()["status"] == "processing", "a start")
            busy = health(srv)
            assert busy["status"] == "BUSY" and "tests-steps-v1" in str(busy["reason"])
            queued = steps(http, steps=1, step_seconds=0)
            assert health(srv) == {"status": "BUSY", "reason": "1 prediction(s) waiting for a worker."}
            http.post(f"/v1/predictions/{running}/cancel")
            wait_finished(http, queued)
            wait_until(lambda: health(srv)["status"] == "READY", "READY again")

            # A model whose worker cannot import its code: the other models still serve.
            pid = http.post("/v1/models/tests/unloadable/predictions", json={"input": {}}).json()["id"]
            assert wait_finished(http, pid)["status"] == "failed"
            failed = health(srv)
            reason = str(failed["reason"])
            assert failed["status"] == "SETUP_FAILED"
            assert "tests-unloadable-v1: The model's worker could not load its code: ImportError" in reason
            # A model whose setup() raises is named too.
            pid = http.post("/v1/models/tests/broken/predictions", json={"input": {}}).json()["id"]
            assert wait_finished(http, pid)["status"] == "failed"
            reason = str(health(srv)["reason"])
            assert "tests-broken-v1: Model setup failed: RuntimeError: weights are missing" in reason
            assert wait_finished(http, steps(http, steps=1, step_seconds=0))["status"] == "succeeded"
    finally:
        srv.stop()


def test_health_is_defunct_when_the_database_refuses_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Server(data).start().stop()  # creates the database
    # The same database opened read-only, as when its disk or its server turned read-only; root
    # (as in CI) ignores file modes, SQLite's read-only mode does not.
    readonly = f"sqlite:///file:{data / 'overture.db'}?mode=ro&uri=true"
    srv = Server(data, "--database-url", readonly).start()
    try:
        state = health(srv)
        assert state["status"] == "DEFUNCT"
        assert "The database cannot be written" in str(state["reason"]) and "readonly" in str(state["reason"])
    finally:
        srv.stop()


# -- --log-format json -------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_the_prediction_they_are_about(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--log-format", "json", "--access-log").start()
    try:
        with srv.http() as http:
            ran = steps(http, steps=1, step_seconds=0)
            assert wait_finished(http, ran)["status"] == "succeeded"
            pid = http.post("/v1/models/tests/library-log/predictions", json={"input": {}}).json()["id"]
            assert wait_finished(http, pid)["status"] == "succeeded"
    finally:
        srv.stop()
    lines = [json.loads(line) for line in srv.log_path.read_text().splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    # The server's own line about each prediction, found by its id and not by parsing the message.
    finished = {line["prediction_id"]: line for line in lines if line["message"].startswith("prediction ")}
    assert finished[ran]["message"].startswith("prediction succeeded") and finished[ran]["model"] == "tests/steps"
    # A library's warning inside the worker process, in the same format, tagged with its prediction.
    (warning,) = [line for line in lines if line["logger"] == "some_library"]
    assert warning == {
        "time": warning["time"],
        "level": "WARNING",
        "logger": "some_library",
        "message": "this argument is deprecated",
        "prediction_id": pid,
        "worker": "tests-library-log-v1",
    }
    # uvicorn's access lines, with the request's parts as fields.
    assert any(line["logger"] == "uvicorn.access" and line["path"] == "/health" for line in lines)


# -- the parts, in this process ----------------------------------------------------------------


class _Loop(ContinuousPredictor):
    """A continuous predictor's class, for runs of a pool whose capacity only its worker knows."""


def _run(pool_class: type[Predictor], started: bool) -> PredictionRun:
    return PredictionRun(
        id="p",
        owner="o",
        model="tests/m",
        version=Version(f"{pool_class.__name__}-v1", pool_class),
        values={},
        logs=LogBuffer(),
        started_at=datetime.now(UTC) if started else None,
    )


def test_health_states_from_the_most_to_the_least_severe() -> None:
    database: list[Exception] = []

    def check_database() -> None:
        if database:
            raise database[0]

    monitor = HealthMonitor(check_database)
    # uvicorn answers no request before the engine has started, but a monitor made earlier knows.
    assert monitor.check([], []).status == HealthStatus.STARTING
    monitor.started()
    assert monitor.check([], []) == Health(HealthStatus.READY)
    monitor.setup("tests-broken-v1", "Model setup failed: RuntimeError: weights are missing")
    assert monitor.check([], []).status == HealthStatus.SETUP_FAILED
    database.append(OSError("disk I/O error\nmore detail"))
    defunct = Health(HealthStatus.DEFUNCT, "The database cannot be written: OSError: disk I/O error")
    assert monitor.check([], []) == defunct
    database.clear()
    monitor.setup("tests-broken-v1", None)  # set up after all
    assert monitor.check([], []).status == HealthStatus.READY
    # A running continuous loop takes more whenever it has room: only a waiting prediction is BUSY.
    assert monitor.check([_run(_Loop, started=True)], ["_Loop-v1"]).status == HealthStatus.READY
    assert monitor.check([_run(_Loop, started=False)], ["_Loop-v1"]).status == HealthStatus.BUSY
    # One thread per ordinary pool: busy with one running, unless another pool is idle.
    assert monitor.check([_run(Predictor, started=True)], ["Predictor-v1"]).status == HealthStatus.BUSY
    assert monitor.check([_run(Predictor, started=True)], ["Predictor-v1", "_Loop-v1"]).status == HealthStatus.READY


def test_the_worker_reports_its_batch_at_most_once_a_second_and_at_once_when_it_empties() -> None:
    now = 0.0
    sent: list[object] = []
    meter = PoolMeter(sent.append, interval=1.0, clock=lambda: now)
    for _ in range(100):  # 2.5 s of 40 steps per second over 3 rows
        now += 0.025
        meter.stepped(rows=3)
    assert [type(report) for report in sent] == [BatchStats, BatchStats]
    assert all(report == BatchStats(3, pytest.approx(40.0)) for report in sent)
    meter.idle()
    assert sent[-1] == BatchStats(0, 0.0)
    meter.idle()
    meter.job_done()
    assert len(sent) == 3  # said once; and no GPU here, so nothing about GPU memory


def test_a_cpu_worker_reports_no_gpu_memory() -> None:
    import torch

    assert not torch.cuda.is_initialized()
    assert device_memory() == []
