"""``--workers inline``: the pool runs on threads of the server's own process, for debugging with
one process and for tests that need it. Nothing isolates the server from the model: a crash takes
both down, and a predictor that ignores a cancel cannot be stopped."""

from __future__ import annotations

import logging
import threading

from overture.engine.workers.protocol import Job, JobEvent, ModelEvent, PoolSpec
from overture.engine.workers.runtime import PoolRuntime, code_failure, predictor_class
from overture.engine.workers.transport import EventSink, WorkerLost

log = logging.getLogger("overture")


class InlineWorker:
    def __init__(self, spec: PoolSpec, sink: EventSink):
        self.spec = spec
        self._sink = sink
        self._lock = threading.Lock()
        self._runtime: PoolRuntime | None = None

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._runtime is None:
                try:
                    cls = predictor_class(self.spec)
                except Exception as exc:
                    lost = WorkerLost(code_failure(exc), retryable=False)
                    self._sink.lost(self.spec.name, [job.prediction_id], lost)
                    return
                self._runtime = PoolRuntime(self.spec, cls, self._emit)
        self._runtime.submit(job)

    def cancel(self, prediction_id: str) -> None:
        if self._runtime is not None:
            self._runtime.cancel(prediction_id)

    def unload(self, key: str) -> None:
        if self._runtime is not None:
            self._runtime.unload(key)

    def kill(self, reason: str) -> None:
        log.warning("cannot stop %s's inline worker (%s): run with --workers process", self.spec.name, reason)

    def stop(self) -> None:
        if self._runtime is not None:
            self._runtime.stop()

    def _emit(self, event: JobEvent | ModelEvent) -> None:
        self._sink.event(self.spec.name, event)
