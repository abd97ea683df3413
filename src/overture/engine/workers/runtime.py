"""The worker side of the protocol: serves one pool's jobs wherever it runs (a child process, or
the server's own process with ``--workers inline``) and reports everything as events.

A pool is one model family on one device: its versions share a queue, worker threads and one
predictor instance, so their predictions can batch together. Jobs wait in the pool's own queue,
so batching and admission (``has_room``) are decided next to the model, not across a pipe.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from overture.engine.workers.meter import PoolMeter
from overture.engine.workers.positions import PositionReporter
from overture.engine.workers.protocol import (
    Done,
    Job,
    JobEvent,
    Log,
    ModelEvent,
    ModelLoaded,
    ModelUsed,
    Output,
    PoolSpec,
    Progress,
    SetupDone,
    Started,
)
from overture.engine.workers.queue import JobQueue, QueueClosed
from overture.errors import CheckpointMissing, SetupFailed, prediction_error
from overture.logs import about
from overture.models.base import Canceled, ContinuousPredictor, Predictor
from overture.models.registry import default_registry
from overture.runtime.checkpoints import Checkpoints
from overture.runtime.loaded import LoadedModels

log = logging.getLogger("overture")

Emit = Callable[[JobEvent | ModelEvent], None]


def predictor_class(spec: PoolSpec) -> type[Predictor]:
    """The pool's predictor class, found as the server finds it (some are made by a factory, so
    they have no importable name): what a fresh process does first."""
    return default_registry(spec.model_modules).version(spec.version_id)[1].predictor


def code_failure(exc: BaseException) -> str:
    """The error of every prediction of a pool whose model code could not be imported."""
    return f"The model's worker could not load its code: {type(exc).__name__}: {exc}"


class WorkerContext:
    """The ``Context`` a predictor sees for one job; every call becomes an event."""

    def __init__(self, job: Job, emit: Emit):
        self.job = job
        self.prediction_id = job.prediction_id
        self.streaming = job.stream
        self.canceled = threading.Event()
        #: The worker thread running it: a thread that fails outside any prediction fails its own.
        self.thread = threading.current_thread()
        self.began = time.monotonic()
        self._emit = emit

    def log(self, message: str) -> None:
        self._emit(Log(self.prediction_id, message.rstrip("\n")))

    def progress(self, done: int, total: int) -> None:
        self._emit(Progress(self.prediction_id, done, total))

    def check_canceled(self) -> None:
        if self.canceled.is_set():
            raise Canceled()

    def scratch_path(self, filename: str) -> Path:
        return self.job.scratch / filename

    def partial(self, value: Any) -> None:
        self._emit(Output(self.prediction_id, value))


class PoolRuntime:
    """One pool's queue, worker threads and predictor; thread-safe ``submit`` and ``cancel``."""

    def __init__(self, spec: PoolSpec, predictor_class: type[Predictor], emit: Emit):
        self.spec = spec
        self.predictor_class = predictor_class
        self._emit = emit
        self._queue = JobQueue(workers=predictor_class.concurrency)
        self._positions = PositionReporter(self._queue, emit, running=lambda: len(self._running))
        self._loaded = LoadedModels(
            on_load=lambda key, nbytes: emit(ModelLoaded(key, nbytes)), on_use=lambda key: emit(ModelUsed(key))
        )
        self._checkpoints = Checkpoints(spec.checkpoints, self._loaded)
        self._predictor: Predictor | None = None
        self._setup_lock = threading.Lock()
        #: Jobs a worker thread has taken and not finished, for cancel.
        self._running: dict[str, WorkerContext] = {}
        #: Jobs submitted and not yet done: a cancel for any other has come too late.
        self._unfinished: set[str] = set()
        #: Cancels that found their job neither queued nor running: a thread is just taking it.
        self._canceled_early: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._meter = PoolMeter(emit)

    # -- from the engine -----------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            self._unfinished.add(job.prediction_id)
        if self._queue.put(job):
            self._start_thread()
        self._positions.changed()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"worker-{self.spec.name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def cancel(self, prediction_id: str) -> None:
        """A queued job ends at once; a running one stops at its next ``check_canceled``."""
        if self._queue.remove(prediction_id):
            self._positions.changed()
            with self._lock:
                self._unfinished.discard(prediction_id)
            self._emit(Done(prediction_id, canceled=True))
            return
        with self._lock:
            ctx = self._running.get(prediction_id)
            if ctx is None and prediction_id in self._unfinished:
                self._canceled_early.add(prediction_id)
        if ctx is not None:
            ctx.canceled.set()

    def unload(self, key: str) -> None:
        self._loaded.unload(key)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.close()
        self._positions.stop()
        with self._lock:
            for ctx in self._running.values():
                ctx.canceled.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- worker threads ------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            if issubclass(self.predictor_class, ContinuousPredictor):
                self._serve_continuously()
            else:
                self._serve_batches()
        except Exception as exc:  # outside any one prediction: a model's batch bookkeeping broke
            log.exception("a worker thread of %s failed", self.spec.name)
            self._fail_thread(exc)

    def _fail_thread(self, exc: Exception) -> None:
        """Fail what this thread was running, set the predictor up afresh (its state may be
        broken), and hand the queue to a new thread."""
        me = threading.current_thread()
        with self._lock:
            mine = [ctx for ctx in self._running.values() if ctx.thread is me]
        for ctx in mine:
            try:
                self._finish(ctx, exc)
            except Exception:
                log.exception(
                    "could not report the failure of %s", ctx.prediction_id, extra={"prediction_id": ctx.prediction_id}
                )
        with self._setup_lock:
            self._predictor = None
        if self._queue.replace_worker():
            self._start_thread()

    def _serve_batches(self) -> None:
        limit = self.predictor_class.max_batch_size
        while jobs := self._queue.take(limit, key=lambda job: self.predictor_class.batch_key(job.inputs)):
            ready = [self._start(job) for job in jobs]
            try:
                predictor = self._setup()
                if len(ready) > 1:
                    results = predictor.predict_batch([(ctx, job.inputs) for ctx, job in zip(ready, jobs, strict=True)])
                    if len(results) != len(ready):
                        raise RuntimeError(f"The model returned {len(results)} results for a batch of {len(ready)}")
                else:
                    results = [_predict_one(predictor, ready[0], jobs[0].inputs)]
            except Exception as exc:  # setup, or the batch as a whole, failed
                results = [exc] * len(ready)
            for ctx, result in zip(ready, results, strict=True):
                self._finish(ctx, result)

    def _serve_continuously(self) -> None:
        """Admit queued jobs into the predictor's loop as room allows, stepping it in between;
        block on the queue only when the loop has nothing left to do."""
        loop: ContinuousPredictor | None = None

        def admits(job: Job) -> bool:
            return loop is None or loop.has_room(job.inputs)

        while True:
            idle = loop is None or not loop.busy()
            if idle:
                self._meter.idle()
            try:
                job = self._queue.take_next(admits, block=idle)
            except QueueClosed:
                return
            if job is not None:
                loop = self._admit(job) or loop
            elif loop is not None:
                loop.step()
                with self._lock:
                    rows = len(self._running)
                self._meter.stepped(rows)

    def _admit(self, job: Job) -> ContinuousPredictor | None:
        ctx = self._start(job)
        with about(job.prediction_id):
            try:
                loop = cast(ContinuousPredictor, self._setup())
                loop.admit(ctx, job.inputs, done=lambda result: self._finish(ctx, result))
            except Exception as exc:  # setup failed or the input was refused: this job fails alone
                self._finish(ctx, exc)
                return None
        return loop

    def _start(self, job: Job) -> WorkerContext:
        ctx = WorkerContext(job, self._emit)
        with self._lock:
            self._running[job.prediction_id] = ctx
            if job.prediction_id in self._canceled_early:
                self._canceled_early.discard(job.prediction_id)
                ctx.canceled.set()
        self._emit(Started(job.prediction_id))
        self._positions.changed()
        return ctx

    def _setup(self) -> Predictor:
        """The pool's predictor, set up on first use; a failed setup is tried again next time."""
        with self._setup_lock:
            if self._predictor is None:
                predictor = self.predictor_class(self._checkpoints, self.spec.model_settings)
                try:
                    predictor.setup()
                except CheckpointMissing:
                    raise
                except Exception as exc:
                    failed = SetupFailed(f"Model setup failed: {type(exc).__name__}: {exc}")
                    self._emit(SetupDone(str(failed)))
                    raise failed from exc
                self._predictor = predictor
                self._emit(SetupDone())
            return self._predictor

    def _finish(self, ctx: WorkerContext, result: Any) -> None:
        pid = ctx.prediction_id
        with self._lock:
            self._running.pop(pid, None)
            self._unfinished.discard(pid)
        if isinstance(result, Canceled):
            self._emit(Done(pid, canceled=True))
        elif isinstance(result, BaseException):
            if not isinstance(result, ValueError):
                self._emit(Log(pid, "".join(traceback.format_exception(result)).rstrip()))
            self._emit(Done(pid, error=prediction_error(result)))
        else:
            self._positions.ran(time.monotonic() - ctx.began)
            self._emit(Done(pid, output=result))
        self._meter.job_done()


def _predict_one(predictor: Predictor, ctx: WorkerContext, inputs: dict[str, Any]) -> Any:
    # What the model (or a library under it) logs meanwhile is about this prediction.
    with about(ctx.prediction_id):
        try:
            return predictor.predict(ctx, **inputs)
        except Canceled as exc:
            return exc
