"""The engine: accepts predictions, queues them per model version, runs them on workers, records
every state change, and brings unfinished work back after a restart."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from overture.config import Settings
from overture.engine.inputs import InputResolver, content_digest, file_values
from overture.engine.netpolicy import address_policy
from overture.engine.notify import Notifier
from overture.engine.queue import Job, JobQueue
from overture.engine.webhooks import EVENTS, WebhookDispatcher
from overture.engine.worker import JobContext, Worker
from overture.ids import new_id
from overture.models.base import Canceled, Model, Predictor, Version
from overture.models.registry import Registry, UnknownModel
from overture.models.schema import InvalidInput
from overture.runtime.checkpoints import CheckpointMissing, Checkpoints
from overture.store.db import PredictionRow
from overture.store.store import ACTIVE, FILE_REF, TERMINAL, Store, storage_problem, utcnow

log = logging.getLogger("overture")


class SetupFailed(RuntimeError):
    pass


class Engine:
    #: How often the housekeeping thread flushes logs and applies retention.
    TICK_SECONDS = 0.25

    def __init__(self, settings: Settings, store: Store, registry: Registry):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.notifier = Notifier()
        self.resolver = InputResolver(
            store, settings.max_input_file_bytes, settings.input_download_seconds, address_policy(settings, "input")
        )
        self.checkpoints = Checkpoints(settings.checkpoints)
        self.contexts: dict[str, JobContext] = {}
        self._queues: dict[str, JobQueue] = {}
        self._workers: list[Worker] = []
        self._predictors: dict[str, Predictor] = {}
        self._setup_locks: dict[str, threading.Lock] = {}
        self._cache_keys: dict[str, str] = {}
        #: Where unfinished predictions want their webhook events: (owner, url, events).
        self._hooks: dict[str, tuple[str, str, frozenset[str]]] = {}
        #: Set by the server, which knows how a prediction's body looks; None sends no webhooks.
        self.webhooks: WebhookDispatcher | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()
        self.store.sweep_leftovers()
        self.recover()
        self._housekeeper.start()

    def stop(self) -> None:
        self._stopping.set()
        for queue in self._queues.values():
            queue.close()
        for ctx in list(self.contexts.values()):
            ctx.canceled.set()
        for worker in self._workers:
            worker.join(timeout=5)
        if self.webhooks is not None:
            self.webhooks.stop()

    def recover(self) -> None:
        """Queue again what a previous process left unfinished; fail what can no longer run."""
        for row in self.store.active_predictions():
            self._watch(row)
            try:
                _, version = self.registry.version(row.version)
                values = version.inputs.validate(row.input)
            except (UnknownModel, InvalidInput) as exc:
                self._fail(row.id, ACTIVE, f"Could not resume this prediction after a server restart: {exc}", logs=row.logs)
                continue
            if row.status == "processing":
                notice = "Server restarted while this prediction ran; running it again.\n"
                self.store.transition(row.id, ["processing"], status="starting", started_at=None, logs=row.logs + notice)
            self._enqueue(self._job(row, values))

    # -- API-facing operations -----------------------------------------------------------------

    def create(
        self,
        owner: str,
        model: Model,
        version: Version,
        raw_input: dict[str, Any] | None,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
        stream: bool = False,
        cancel_after: float | None = None,
        deployment: str | None = None,
    ) -> PredictionRow:
        """Validate and queue a prediction; raises ``InvalidInput`` naming every bad input field.

        ``webhook`` is checked by the caller, which knows the request field that carried it."""
        values = self.validate(owner, version, raw_input)
        now = utcnow()
        limit = cancel_after if cancel_after is not None else self.settings.prediction_timeout_seconds
        row = self.store.add(
            PredictionRow(
                id=new_id(),
                owner=owner,
                model=model.ref,
                version=version.id,
                status="starting",
                input=raw_input or {},
                logs="",
                webhook=webhook,
                webhook_events_filter=webhook_events_filter,
                stream=stream,
                deployment=deployment,
                created_at=now,
                deadline=now + timedelta(seconds=limit) if limit is not None else None,
            )
        )
        self._watch(row)
        self._enqueue(self._job(row, values))
        return row

    def validate(self, owner: str, version: Version, raw_input: dict[str, Any] | None) -> dict[str, Any]:
        """The inputs' values, defaults filled in; raises ``InvalidInput`` naming every bad field."""
        values = version.inputs.validate(raw_input)
        errors = version.predictor.check_inputs(raw_input or {}, values)
        errors += self.resolver.errors(version.inputs, values, owner)
        if errors:
            raise InvalidInput(errors)
        return values

    def cancel(self, pid: str, owner: str) -> PredictionRow | None:
        """Cancel now: a queued job leaves its queue, a running one stops at its next step."""
        row = self.store.prediction(pid, owner)
        if row is None or row.status in TERMINAL:
            return row
        self._stop(row, status="canceled")
        return self.store.prediction(pid)

    def expire(self, row: PredictionRow) -> None:
        """Cancel a prediction past its deadline, as Replicate does, stopping its model at the next
        step. Replicate calls one that never started ``aborted``, a status the Python client
        cannot read, so that one is ``canceled`` too; ``error`` and the logs say why."""
        limit = (row.deadline - row.created_at).total_seconds() if row.deadline else 0
        reason = f"Canceled: the prediction did not finish within its deadline of {limit:g} s (Cancel-After or the server's timeout)."
        self._stop(row, log=reason, status="canceled", error=reason)

    def _stop(self, row: PredictionRow, log: str = "", **values: Any) -> None:
        """End an unfinished prediction with ``values``, ``log`` its last line when given."""
        try:
            _, version = self.registry.version(row.version)
        except UnknownModel:
            version = None
        queue = None if version is None else self._queues.get(_pool(version))
        if queue is not None:
            queue.remove(row.id)
        ctx = self.contexts.get(row.id)
        if ctx is None:
            self._complete(row.id, ACTIVE, logs=row.logs + (log + "\n" if log else ""), **values)
            return
        if self._complete(row.id, ACTIVE, ctx, last_line=log, **values):
            ctx.canceled.set()

    async def wait(self, pid: str, timeout: float) -> PredictionRow | None:
        """The prediction once it is terminal, or as it stands when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self.notifier.subscribe(pid)
            try:
                row = await anyio.to_thread.run_sync(self.store.prediction, pid)
                remaining = deadline - time.monotonic()
                if row is None or row.status in TERMINAL or remaining <= 0:
                    return row
                with anyio.move_on_after(remaining):
                    await changed
            finally:
                self.notifier.unsubscribe(pid, changed)

    # -- queues and workers --------------------------------------------------------------------

    def _job(self, row: PredictionRow, values: dict[str, Any]) -> Job:
        hook = self._hooks.get(row.id)
        wants_output = hook is not None and "output" in hook[2]
        return Job(row.id, row.owner, row.version, values, stream=bool(row.stream) or wants_output)

    def _enqueue(self, job: Job) -> None:
        _, version = self.registry.version(job.version_id)
        pool = _pool(version)
        with self._lock:
            queue = self._queues.get(pool)
            if queue is None:
                queue = self._queues[pool] = JobQueue(workers=version.predictor.concurrency)
            if queue.put(job):
                worker = Worker(
                    version.predictor,
                    queue,
                    lambda v=version: self._predictor(v),
                    lambda vid: self.registry.version(vid)[1],
                    self,
                    self.contexts,
                )
                self._workers = [w for w in self._workers if w.is_alive()] + [worker]
                worker.start()

    def _predictor(self, version: Version) -> Predictor:
        """The version's predictor (its pool's), set up once on first use (a failed setup is tried
        again next time)."""
        pool = _pool(version)
        with self._lock:
            lock = self._setup_locks.setdefault(pool, threading.Lock())
        with lock:
            predictor = self._predictors.get(pool)
            if predictor is None:
                predictor = version.predictor(self.checkpoints, self.settings.model_settings)
                try:
                    predictor.setup()
                except CheckpointMissing:
                    raise
                except Exception as exc:
                    raise SetupFailed(f"Model setup failed: {type(exc).__name__}: {exc}") from exc
                self._predictors[pool] = predictor
            return predictor

    # -- Reporter: what workers tell the engine ------------------------------------------------

    def started(self, job: Job) -> tuple[str, datetime] | None:
        now = utcnow()
        if not self.store.transition(job.prediction_id, ["starting"], status="processing", started_at=now):
            return None
        self._changed(job.prediction_id, "start")
        row = self.store.prediction(job.prediction_id)
        return (row.logs if row is not None else ""), now

    def logs(self, job: Job, text: str, new: str) -> None:
        if self.store.transition(job.prediction_id, ["processing"], events=[("logs", new)], logs=text):
            self._changed(job.prediction_id, "logs")

    def partial(self, job: Job, value: Any) -> None:
        output = self._publish(job.prediction_id, value)
        if self.store.transition(job.prediction_id, ["processing"], events=[("output", output)]):
            self._changed(job.prediction_id, "output")

    def scratch(self, job: Job) -> Path:
        return self.store.scratch(job.prediction_id)

    def prepare(self, job: Job, version: Version, ctx: JobContext) -> dict[str, Any] | None:
        inputs = self.resolver.resolve(version.inputs, job.inputs, job.owner, self.scratch(job))
        if not (self.settings.cache and version.predictor.is_deterministic(inputs)):
            return inputs
        key = _cache_key(version, inputs, {name for name, _ in file_values(version.inputs, job.inputs)})
        hit = self.store.cached_result(key)
        if hit is None:
            self._cache_keys[job.prediction_id] = key
            return inputs
        ctx.log(f"Served from the result cache: same version, input and seed as prediction {hit.id}.")
        output = _map_files(hit.output, lambda ref: self.store.share_output(ref, job.prediction_id))
        self._succeed(job, ctx, output, key)
        return None

    def finished(self, job: Job, ctx: JobContext, result: Any) -> None:
        pid = job.prediction_id
        key = self._cache_keys.pop(pid, None)
        try:
            if isinstance(result, Canceled):
                self._cancel_from_model(pid, ctx)
            elif isinstance(result, BaseException):
                # Scratch files first: a model that filled the disk leaves room to record its failure.
                self.store.clear_scratch(pid)
                self._fail(pid, ["processing"], _error_message(result), ctx)
            else:
                try:
                    output = self._publish(pid, result)
                except (TypeError, OSError) as exc:
                    self._fail(pid, ["processing"], storage_problem(exc) or f"Could not store the output: {exc}", ctx)
                else:
                    if not self._succeed(job, ctx, output, key):
                        shutil.rmtree(self.store.outputs_dir / pid, ignore_errors=True)
        finally:
            self.store.clear_scratch(pid)

    # -- recording results ---------------------------------------------------------------------

    def _succeed(self, job: Job, ctx: JobContext, output: Any, cache_key: str | None) -> bool:
        return self._complete(
            job.prediction_id, ["processing"], ctx, status="succeeded", output=output, cache_key=cache_key
        )

    def _fail(self, pid: str, from_status: Any, error: str, ctx: JobContext | None = None, logs: str = "") -> None:
        self._complete(pid, from_status, ctx, status="failed", error=error, **({} if ctx else {"logs": logs}))

    def _cancel_from_model(self, pid: str, ctx: JobContext) -> None:
        self._complete(pid, ["processing"], ctx, status="canceled")

    def _complete(
        self, pid: str, from_status: Any, ctx: JobContext | None = None, last_line: str = "", **values: Any
    ) -> bool:
        """Move to a terminal status with ``completed_at`` and ``predict_time``, unless already terminal;
        end the stream (``error`` then ``done``) and send the ``completed`` webhook. With the job's
        context, its logs, their last unflushed lines and ``last_line`` are written in the same
        transaction: a prediction that finished first never gets that line."""
        now = utcnow()
        started_at = ctx.started_at if ctx is not None else None
        if started_at is None:
            row = self.store.prediction(pid)
            started_at = row.started_at if row else None
        status = values["status"]
        events: list[tuple[str, Any]] = []
        if ctx is not None:
            line = last_line + "\n" if last_line else ""
            new = ctx.drain() + line
            if new:
                events.append(("logs", new))
            values["logs"] = ctx.text + line
        if status == "failed":
            events.append(("error", values["error"]))
        events.append(("done", {} if status == "succeeded" else {"reason": "error" if status == "failed" else status}))
        ok = self.store.transition(
            pid, from_status, events=events, completed_at=now, predict_time=_seconds(started_at, now), **values
        )
        if ok:
            self._changed(pid, "completed")
            self._hooks.pop(pid, None)
        return ok

    # -- events --------------------------------------------------------------------------------

    def _watch(self, row: PredictionRow) -> None:
        if row.webhook and self.webhooks is not None:
            wanted = frozenset(row.webhook_events_filter or EVENTS)
            self._hooks[row.id] = (row.owner, row.webhook, wanted)

    def _changed(self, pid: str, event: str) -> None:
        """Wake waiters and streams; queue the webhook event if the prediction asked for it."""
        self.notifier.notify(pid)
        hook = self._hooks.get(pid)
        if hook is not None and event in hook[2] and self.webhooks is not None:
            self.webhooks.enqueue(pid, hook[0], hook[1], event)

    def _publish(self, pid: str, value: Any) -> Any:
        """Output as stored JSON: files moved into the prediction's outputs, numpy made plain."""
        if isinstance(value, Path):
            return self.store.publish_output(pid, value)
        if isinstance(value, dict):
            return {str(k): self._publish(pid, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._publish(pid, v) for v in value]
        if isinstance(value, np.generic | np.ndarray):
            return value.tolist()
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise TypeError(f"the model returned a value that is not JSON: {type(value).__name__}")

    # -- housekeeping --------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        next_sweep = 0.0
        next_deadline_check = 0.0
        while not self._stopping.wait(self.TICK_SECONDS):
            try:
                for ctx in list(self.contexts.values()):
                    ctx.flush(force=False)
                if time.monotonic() >= next_deadline_check:
                    for row in self.store.overdue_predictions(utcnow()):
                        self.expire(row)
                    next_deadline_check = time.monotonic() + 1.0
                hours = self.settings.retention_hours
                if hours is not None and time.monotonic() >= next_sweep:
                    self.apply_retention()
                    # Sweep often enough that data never outlives its retention by much.
                    next_sweep = time.monotonic() + min(60.0, hours * 3600 / 2)
            except Exception:
                # A write failed (the data directory is full or read-only): try again next tick.
                log.exception("housekeeping failed")

    def apply_retention(self) -> None:
        cutoff = utcnow() - timedelta(hours=self.settings.retention_hours or 0)
        self.store.remove_data_before(cutoff)
        self.store.delete_files_before(cutoff)


def _seconds(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else round((end - start).total_seconds(), 6)


def _error_message(exc: BaseException) -> str:
    storage = storage_problem(exc)
    if storage is not None:
        return storage
    # These carry messages written for the user (what was wrong, how to fix it).
    if isinstance(exc, ValueError | SetupFailed | CheckpointMissing):
        return str(exc)
    # torch.OutOfMemoryError (CUDA) is a RuntimeError: known by name so the engine needs no torch.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"The model ran out of memory. {exc}".strip()
    return f"{type(exc).__name__}: {exc}"


def _cache_key(version: Version, inputs: dict[str, Any], file_fields: set[str]) -> str:
    """Same version and same input, with files compared by content, give the same key."""
    canonical = {k: (f"sha256:{content_digest(v)}" if k in file_fields else v) for k, v in inputs.items()}
    payload = json.dumps({"version": version.id, "input": canonical}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _map_files(value: Any, fn: Any) -> Any:
    if isinstance(value, dict):
        if FILE_REF in value:
            return fn(value)
        return {k: _map_files(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_files(v, fn) for v in value]
    return value


def _pool(version: Version) -> str:
    """Versions in one pool share a queue, its workers and one predictor instance."""
    return version.predictor.pool or version.id
