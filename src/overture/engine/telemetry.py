"""The server's Prometheus metrics (``GET /metrics``), in a registry of the app's own: several apps
in one process (tests, an embedding program) must not collide in the global default one.

Counters and histograms are updated where things happen. What describes the present (queues,
loaded models, the running batch, GPU memory) is read when Prometheus scrapes, from the engine and
from the workers' latest reports, so no series outlives what it describes and none is invented
for what is absent: a CPU-only server has no GPU series at all.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from overture.engine.memory import MemoryLedger
from overture.engine.workers.protocol import BatchStats, DeviceMemory

if TYPE_CHECKING:  # run.py imports webhooks.py, which imports this module
    from overture.engine.run import PredictionRun

#: From a prediction that starts at once to one that waited behind a long queue.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: From a synth clip (tens of ms on CPU) to minutes of MusicGen.
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._created = Counter(
            "overture_predictions_created", "Predictions created, by model.", ["model"], registry=self.registry
        )
        self._finished = Counter(
            "overture_predictions_finished",
            "Predictions that reached a terminal status, by model and status.",
            ["model", "status"],
            registry=self.registry,
        )
        self._wait = Histogram(
            "overture_prediction_queue_wait_seconds",
            "Time from creation (or recovery) until a worker started the prediction.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._run = Histogram(
            "overture_prediction_run_seconds",
            "Time from start to terminal status (Replicate's predict_time), by model and status.",
            ["model", "status"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self._deliveries = Counter(
            "overture_webhook_deliveries",
            "Webhook deliveries that ended: delivered, or failed (refused, or given up on).",
            ["event", "outcome"],
            registry=self.registry,
        )
        self._retries = Counter(
            "overture_webhook_retries",
            "Webhook attempts that failed and were scheduled to be tried again.",
            ["event"],
            registry=self.registry,
        )
        self._pools = _PoolReports()

    # -- as things happen ----------------------------------------------------------------------

    def created(self, model: str) -> None:
        self._created.labels(model).inc()

    def started(self, model: str, waited_seconds: float) -> None:
        self._wait.labels(model).observe(waited_seconds)

    def finished(self, model: str, status: str, run_seconds: float | None) -> None:
        """A terminal status; ``run_seconds`` None when it never started (canceled in its queue)."""
        self._finished.labels(model, status).inc()
        if run_seconds is not None:
            self._run.labels(model, status).observe(run_seconds)

    def delivery_ended(self, event: str, outcome: str) -> None:
        self._deliveries.labels(event, outcome).inc()

    def delivery_retried(self, event: str) -> None:
        self._retries.labels(event).inc()

    def pool_report(self, pool: str, report: BatchStats | DeviceMemory) -> None:
        self._pools.report(pool, report)

    def pool_gone(self, pool: str) -> None:
        """The pool's worker process ended, and its batch and GPU memory with it."""
        self._pools.forget(pool)

    # -- read at scrape time -------------------------------------------------------------------

    def watch(self, runs: Callable[[], list[PredictionRun]], memory: MemoryLedger) -> None:
        """Report the engine's unfinished ``runs`` and its ledger of loaded models at each scrape."""
        self.registry.register(_EngineState(runs, memory, self._pools))


class _PoolReports:
    """Each pool's latest ``BatchStats``, and its ``DeviceMemory`` per device."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches: dict[str, BatchStats] = {}
        self.devices: dict[tuple[str, str], DeviceMemory] = {}

    def report(self, pool: str, report: BatchStats | DeviceMemory) -> None:
        with self._lock:
            if isinstance(report, BatchStats):
                self.batches[pool] = report
            else:
                self.devices[(pool, report.device)] = report

    def forget(self, pool: str) -> None:
        with self._lock:
            self.batches.pop(pool, None)
            self.devices = {key: memory for key, memory in self.devices.items() if key[0] != pool}

    def snapshot(self) -> tuple[dict[str, BatchStats], dict[tuple[str, str], DeviceMemory]]:
        with self._lock:
            return dict(self.batches), dict(self.devices)


class _EngineState(Collector):
    def __init__(self, runs: Callable[[], list[PredictionRun]], memory: MemoryLedger, pools: _PoolReports):
        self._runs = runs
        self._memory = memory
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        runs = self._runs()
        queued = Tally(run.model for run in runs if run.started_at is None)
        running = Tally(run.model for run in runs if run.started_at is not None)
        yield _gauge("overture_predictions_queued", "Predictions waiting for a worker, by model.", ["model"], queued)
        yield _gauge("overture_predictions_running", "Predictions a worker is running, by model.", ["model"], running)

        loaded = self._memory.loaded_models()
        per_pool = Tally(pool for pool, _, _ in loaded)
        yield _gauge("overture_loaded_models", "Models loaded in workers, by pool.", ["pool"], per_pool)
        yield _gauge(
            "overture_loaded_model_bytes",
            "Memory of each loaded model, as its worker reported it.",
            ["pool", "checkpoint"],
            {(pool, key): nbytes for pool, key, nbytes in loaded},
        )
        budget = self._memory.budget_bytes
        if budget is not None:
            about = "The loaded models' memory budget (--model-memory-gb)."
            yield _gauge("overture_model_memory_budget_bytes", about, [], {(): budget})

        batches, devices = self._pools.snapshot()
        yield _gauge(
            "overture_batch_rows",
            "Predictions in a pool's running continuous batch.",
            ["pool"],
            {pool: stats.rows for pool, stats in batches.items()},
        )
        yield _gauge(
            "overture_batch_decoder_steps_per_second",
            "Decoder steps per second of a pool's running continuous batch (each advances every row).",
            ["pool"],
            {pool: stats.steps_per_second for pool, stats in batches.items()},
        )
        if devices:
            yield _gauge(
                "overture_gpu_memory_allocated_bytes",
                "GPU memory a worker's tensors take (torch.cuda.memory_allocated).",
                ["pool", "device"],
                {key: memory.allocated_bytes for key, memory in devices.items()},
            )
            yield _gauge(
                "overture_gpu_memory_reserved_bytes",
                "GPU memory a worker's caching allocator holds (torch.cuda.memory_reserved).",
                ["pool", "device"],
                {key: memory.reserved_bytes for key, memory in devices.items()},
            )


def _gauge(name: str, documentation: str, labels: list[str], values: Mapping[Any, float]) -> GaugeMetricFamily:
    """A gauge with one sample per key: a label's value, or a tuple of them."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family
