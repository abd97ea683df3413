"""Runs jobs of one model version: marks them processing, prepares inputs, calls the predictor in
batches and publishes results. Everything it reports goes through ``Reporter`` so that the same
loop can later live in another process."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from datetime import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

from overture.engine.queue import Job, JobQueue, QueueClosed
from overture.models.base import Canceled, ContinuousPredictor, Predictor, Version

_PROGRESS_BAR_WIDTH = 10
log = logging.getLogger("overture")


class Reporter(Protocol):
    """What a worker tells the engine; the engine owns records and files."""

    def started(self, job: Job) -> tuple[str, datetime] | None:
        """Mark the job processing; its logs so far and the start time, or None when canceled first."""

    def logs(self, job: Job, text: str, new: str) -> None:
        """The whole log so far, and the part added since the last call (for the stream)."""

    def partial(self, job: Job, value: Any) -> None:
        """Publish output that is ready before the prediction ends."""

    def prepare(self, job: Job, version: Version, ctx: JobContext) -> dict[str, Any] | None:
        """Resolve inputs; return None when the job is already finished (failed input, cache hit)."""

    def finished(self, job: Job, ctx: JobContext, result: Any) -> None:
        """Record ``result``: output, or the exception that failed the job."""

    def scratch(self, job: Job) -> Path: ...


class JobContext:
    """The ``Context`` a predictor sees for one job: logs, progress, cancel and scratch files."""

    #: Unflushed log lines wait at most this long before they reach the record.
    FLUSH_INTERVAL = 0.25

    def __init__(self, job: Job, reporter: Reporter, logs: str = "", started_at: datetime | None = None):
        self.job = job
        self.started_at = started_at
        self.prediction_id = job.prediction_id
        self.streaming = job.stream
        self.canceled = threading.Event()
        self.started_monotonic = time.monotonic()
        self._reporter = reporter
        # A run after a restart keeps what the earlier attempt logged.
        self._lines: list[str] = logs.splitlines()
        self._progress_line = False
        # A job that ends within one interval writes its logs once, with its result.
        self._flushed_at = time.monotonic()
        #: Lines logged since the last flush; a rewritten progress bar replaces its own entry.
        self._new: list[str] = []
        self._lock = threading.Lock()
        # Serializes flushes so log events reach the stream in the order they were written.
        self._flush_lock = threading.Lock()

    # -- Context -------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        lines = message.rstrip("\n").split("\n")
        with self._lock:
            self._lines.extend(lines)
            self._new.extend(lines)
            self._progress_line = False
        self.flush(force=False)

    def progress(self, done: int, total: int) -> None:
        line = _progress_line(done, total, time.monotonic() - self.started_monotonic)
        with self._lock:
            # Rewrite the previous bar instead of piling up lines, as a terminal would.
            if self._progress_line:
                self._lines[-1] = line
                if self._new:
                    self._new[-1] = line
                else:
                    self._new.append(line)
            else:
                self._lines.append(line)
                self._new.append(line)
            self._progress_line = True
        self.flush(force=False)

    def check_canceled(self) -> None:
        if self.canceled.is_set():
            raise Canceled()

    def scratch_path(self, filename: str) -> Path:
        return self._reporter.scratch(self.job) / filename

    def partial(self, value: Any) -> None:
        self.flush(force=True)
        self._reporter.partial(self.job, value)

    # -- engine side ---------------------------------------------------------------------------

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(line + "\n" for line in self._lines)

    def flush(self, force: bool) -> None:
        with self._flush_lock:
            now = time.monotonic()
            if not force and now - self._flushed_at < self.FLUSH_INTERVAL:
                return
            new = self.drain()
            if new:
                self._flushed_at = now
                self._reporter.logs(self.job, self.text, new)

    def drain(self) -> str:
        """Lines logged since the last flush, now taken: the caller records them."""
        with self._lock:
            new = "".join(line + "\n" for line in self._new)
            self._new = []
            return new


def _progress_line(done: int, total: int, elapsed: float) -> str:
    total = max(total, 1)
    done = min(done, total)
    filled = round(_PROGRESS_BAR_WIDTH * done / total)
    bar = "█" * filled + " " * (_PROGRESS_BAR_WIDTH - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{round(100 * done / total):3d}%|{bar}| {done}/{total} [{_clock(elapsed)}, {rate:.2f}it/s]"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


class Worker(threading.Thread):
    """One thread serving one queue (a version's, or a pool of versions'); several may share a
    predictor instance."""

    def __init__(
        self,
        predictor_class: type[Predictor],
        queue: JobQueue,
        predictor: Callable[[], Predictor],
        version_of: Callable[[str], Version],
        reporter: Reporter,
        contexts: dict[str, JobContext],
    ):
        super().__init__(name=f"worker-{predictor_class.__name__}", daemon=True)
        self.predictor_class = predictor_class
        self.queue = queue
        self.predictor = predictor
        self.version_of = version_of
        self.reporter = reporter
        #: Running jobs by prediction id, shared with the engine for cancel and log flushing.
        self.contexts = contexts

    def run(self) -> None:
        if issubclass(self.predictor_class, ContinuousPredictor):
            self._serve_continuously()
        else:
            self._serve_batches()

    def _serve_batches(self) -> None:
        limit = self.predictor_class.max_batch_size
        while True:
            jobs = self.queue.take(limit, key=self._batch_key)
            if not jobs:
                return
            try:
                self.run_batch(jobs)
            except Exception:
                # Recording failed (say the data directory is full): the jobs stay active in the
                # database, where a restart or their deadline ends them, and the worker goes on.
                log.exception("worker %s could not record a batch", self.name)

    def _serve_continuously(self) -> None:
        """Admit queued jobs into the predictor's loop as room allows, stepping it in between;
        block on the queue only when the loop has nothing left to do."""
        loop: ContinuousPredictor | None = None

        def admits(job: Job) -> bool:
            return loop is None or loop.has_room(job.inputs)

        while True:
            try:
                job = self.queue.take_next(admits, block=loop is None or not loop.busy())
            except QueueClosed:
                return
            try:
                if job is not None:
                    loop = self._admit(job) or loop
                elif loop is not None:
                    loop.step()
            except Exception:
                log.exception("worker %s could not record a job", self.name)

    def _admit(self, job: Job) -> ContinuousPredictor | None:
        started = self._start(job)
        if started is None:
            return None
        ctx, inputs = started
        try:
            loop = cast(ContinuousPredictor, self.predictor())
            loop.admit(ctx, inputs, done=lambda result: self._finish(ctx, result))
        except Exception as exc:  # setup failed or the input was refused: this job fails alone
            self._finish(ctx, exc)
            return None
        return loop

    def _batch_key(self, job: Job) -> Any:
        return self.predictor_class.batch_key(job.inputs)

    def _start(self, job: Job) -> tuple[JobContext, dict[str, Any]] | None:
        """Mark the job processing and resolve its inputs; None when it already ended (canceled
        first, failed input, served from the cache)."""
        started = self.reporter.started(job)
        if started is None:
            return None
        ctx = JobContext(job, self.reporter, *started)
        self.contexts[job.prediction_id] = ctx
        try:
            inputs = self.reporter.prepare(job, self.version_of(job.version_id), ctx)
        except Exception as exc:  # a bad input fails its own job only
            self._finish(ctx, exc)
            return None
        if inputs is None:
            self.contexts.pop(job.prediction_id, None)
            return None
        return ctx, inputs

    def run_batch(self, jobs: list[Job]) -> None:
        ready = [started for job in jobs if (started := self._start(job)) is not None]
        if not ready:
            return
        try:
            predictor = self.predictor()
            results = predictor.predict_batch(ready) if len(ready) > 1 else [self._predict_one(predictor, *ready[0])]
        except Exception as exc:  # setup or the batch as a whole failed
            results = [exc] * len(ready)
        for (ctx, _), result in zip(ready, results, strict=True):
            self._finish(ctx, result)

    @staticmethod
    def _predict_one(predictor: Predictor, ctx: JobContext, inputs: dict[str, Any]) -> Any:
        try:
            return predictor.predict(ctx, **inputs)
        except Canceled as exc:
            return exc

    def _finish(self, ctx: JobContext, result: Any) -> None:
        if isinstance(result, BaseException) and not isinstance(result, Canceled | ValueError):
            ctx.log("".join(traceback.format_exception(result)).rstrip())
        try:
            self.reporter.finished(ctx.job, ctx, result)
        finally:
            self.contexts.pop(ctx.job.prediction_id, None)
