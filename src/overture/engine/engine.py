"""The engine's front: create, cancel and wait for predictions, bring unfinished ones back after a
restart, and hand each to its pool's worker.

Each active prediction is one ``PredictionRun``. Its inputs are fetched here, in the server (the
worker gets local files), on one feeder thread per pool so jobs keep their order. What the worker
reports comes back through ``event`` and ``lost`` and is recorded by ``Recorder``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.exc import IntegrityError

from overture.config import Settings
from overture.engine.cache import ResultCache
from overture.engine.events import Recorder
from overture.engine.health import Health, HealthMonitor
from overture.engine.housekeeping import Chore, Housekeeper
from overture.engine.inputs import InputResolver
from overture.engine.memory import MemoryLedger
from overture.engine.netpolicy import address_policy
from overture.engine.notify import Notifier
from overture.engine.queueing import QueuedCounts, QueueSpot
from overture.engine.routing import LOCAL, LocalLoad, Router
from overture.engine.run import LogBuffer, PredictionRun
from overture.engine.telemetry import Telemetry
from overture.engine.upstream_models import REFRESH_SECONDS, UpstreamCatalog
from overture.engine.usage import Budget
from overture.engine.webhooks import WebhookDispatcher
from overture.engine.workers.inline import InlineWorker
from overture.engine.workers.process import ProcessWorker
from overture.engine.workers.protocol import (
    Done,
    Job,
    JobEvent,
    Log,
    ModelEvent,
    ModelLoaded,
    ModelUsed,
    Output,
    PoolReport,
    PoolSpec,
    Progress,
    QueuePositions,
    SetupDone,
    Started,
)
from overture.engine.workers.relay import POOL_PREFIX, Relay
from overture.engine.workers.transport import ClusterUnavailable, Transport, WorkerLost
from overture.engine.workers.upstream_api import DownloadLimits
from overture.errors import InvalidInput, UnknownModel, prediction_error
from overture.ids import new_id
from overture.logs import about
from overture.models.base import Model, Version
from overture.models.registry import Registry
from overture.status import ACTIVE, TERMINAL, Status
from overture.store.db import PredictionRow
from overture.store.store import Store, utcnow

if TYPE_CHECKING:
    from overture.engine.workers.ray import RayCluster

log = logging.getLogger("overture")


@dataclass
class Pool:
    """One pool's worker, and the thread that fetches its jobs' inputs in order."""

    worker: Transport
    feeder: ThreadPoolExecutor


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        webhooks: WebhookDispatcher,
        telemetry: Telemetry | None = None,
    ):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.webhooks = webhooks
        self.notifier = Notifier()
        #: None with ``--no-metrics``.
        self.telemetry = telemetry
        self.recorder = Recorder(store, self.notifier, webhooks, telemetry)
        self.health_monitor = HealthMonitor(store.check_writable)
        self.cache = ResultCache(store, settings.cache)
        self.resolver = InputResolver(
            store, settings.max_input_file_bytes, settings.input_download_seconds, address_policy(settings, "input")
        )
        self._runs: dict[str, PredictionRun] = {}
        self.queued = QueuedCounts(settings.max_queued_per_token)
        #: Each token's spending cap on upstream predictions: ``admit(owner)`` before sending one up.
        self.budget = Budget.from_settings(settings, store)
        self._pools: dict[str, Pool] = {}
        #: With ``--ray``, where the pools' actors run; imported only then, so a server without it never loads Ray.
        self.ray: RayCluster | None = None
        if settings.ray_address is not None:
            try:
                from overture.engine.workers.ray import RayCluster
            except ImportError as exc:
                raise ClusterUnavailable(
                    f"--ray needs the ray package, which cannot be imported here ({exc}). Install it with "
                    "pip install 'overture[ray]' (from a clone: pip install -e '.[ray]')."
                ) from None
            self.ray = RayCluster(
                settings.ray_address, settings.ray_wait_seconds, settings.replicas, settings.gpus_per_worker
            )
        self.memory = MemoryLedger(settings.checkpoints.memory_budget_bytes, self._unload)
        self.router = Router(settings.routes, settings.burst_after_seconds, self.budget.admit)
        #: One transport per upstream, by its name: every prediction routed there goes through it.
        self.relays = {
            name: Relay(
                upstream,
                store,
                self,
                _own_base(settings),
                settings.upstream_timeout_seconds,
                DownloadLimits(
                    address_policy(settings, "input"), settings.max_input_file_bytes, settings.input_download_seconds
                ),
            )
            for name, upstream in settings.upstreams.items()
        }
        catalog = UpstreamCatalog(settings.upstreams, settings.routes, settings.data_dir)
        catalog.declare(registry)
        # On a thread of its own: an upstream slow to answer never holds up the chores below.
        refresh = Chore("upstream models", REFRESH_SECONDS, lambda: catalog.refresh(registry))
        refresh.next_at = time.monotonic() + REFRESH_SECONDS
        self._catalog_keeper = Housekeeper([refresh])
        self._lock = threading.Lock()
        self._stopping = False
        chores = [
            Chore("log flush", LogBuffer.FLUSH_INTERVAL, self._flush_logs),
            Chore("deadlines", 1.0, self._expire_overdue),
            Chore("cancel grace", 1.0, self._enforce_cancel_grace),
        ]
        if settings.retention_hours is not None:
            # Sweep often enough that data never outlives its retention by much.
            chores.append(Chore("retention", min(60.0, settings.retention_hours * 3600 / 2), self._apply_retention))
        self._housekeeper = Housekeeper(chores)
        if telemetry is not None:
            telemetry.watch(self.active_runs, self.memory)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.webhooks.start()
        self.store.sweep_leftovers()
        self.recover()
        self._housekeeper.start()
        self._catalog_keeper.start()
        self.health_monitor.started()

    def stop(self) -> None:
        """Stop the workers; what they were running stays active in the records, and the next
        start runs it again."""
        self._stopping = True
        self._housekeeper.stop()
        self._catalog_keeper.stop()
        for pool in list(self._pools.values()):
            pool.feeder.shutdown(wait=False, cancel_futures=True)
            pool.worker.stop()
        for relay in self.relays.values():
            relay.stop()  # never raises: the client webhooks below are stopped whatever happens
        self.webhooks.stop()
        if self.ray is not None:
            self.ray.close()
        left = sum(1 for run in list(self._runs.values()) if not run.finished)
        log.info(
            "engine stopped: %d model workers, %d unfinished predictions kept for the next start",
            len(self._pools),
            left,
        )

    def recover(self) -> None:
        """Queue again what a previous process left unfinished; fail what can no longer run."""
        for row in self.store.active_predictions():
            try:
                _, version = self.registry.version(row.version)
                values = version.inputs.validate(row.input)
            except (UnknownModel, InvalidInput) as exc:
                self.recorder.unresumable(row, f"Could not resume this prediction after a server restart: {exc}")
                continue
            self.queued.add(row.owner, row.id, capped=False)
            run = self._run(row, version, values)
            if row.status == Status.PROCESSING:
                again = "following it again" if run.provider != LOCAL else "running it again"
                self.recorder.restarted(run, f"Server restarted while this prediction ran; {again}.")
            if run.provider != LOCAL and (row.upstream or {}).get("id"):
                # Already running upstream: its inputs went there and the cache was asked before,
                # so neither is done again (an input URL may be gone by now); it is only followed.
                run.job = Job(run.id, {}, self.store.scratch(run.id), run.stream, owner=run.owner)
                self._submit(run)
            else:
                self._dispatch(run)

    # -- API-facing operations -----------------------------------------------------------------

    def create(
        self,
        owner: str,
        model: Model,
        version: Version,
        raw_input: dict[str, Any] | None,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        stream: bool = False,
        cancel_after: float | None = None,
        deployment: str | None = None,
        idempotency_key: str | None = None,
    ) -> PredictionRow:
        """Validate and queue a prediction; raises ``InvalidInput`` naming every bad input field,
        ``TooManyQueued`` when the owner has as many waiting as ``--max-queued-per-token`` allows.
        A create with an ``idempotency_key`` the owner sent before gets that prediction back.

        ``webhook`` is checked by the caller, which knows the request field that carried it."""
        key = _idempotency_digest(owner, idempotency_key) if idempotency_key else None
        if key is not None and (earlier := self.store.prediction_by_idempotency_key(key)) is not None:
            return earlier
        values = self.validate(owner, version, raw_input)
        provider = self._route(owner, model, version)
        now = utcnow()
        limit = cancel_after if cancel_after is not None else self.settings.prediction_timeout_seconds
        pid = new_id()
        self.queued.add(owner, pid)
        try:
            row = self.store.add(
                PredictionRow(
                    id=pid,
                    owner=owner,
                    model=model.ref,
                    version=version.id,
                    status=Status.STARTING,
                    input=raw_input or {},
                    logs="",
                    webhook=webhook,
                    webhook_events_filter=list(webhook_events_filter) if webhook_events_filter is not None else None,
                    stream=stream,
                    deployment=deployment,
                    provider=provider,
                    created_at=now,
                    deadline=now + timedelta(seconds=limit) if limit is not None else None,
                    idempotency_key=key,
                )
            )
        except IntegrityError:
            self.queued.remove(owner, pid)
            # The same key's create, sent twice at once: the other one made it.
            if key is not None and (earlier := self.store.prediction_by_idempotency_key(key)) is not None:
                return earlier
            raise
        except BaseException:
            self.queued.remove(owner, pid)
            raise
        self._dispatch(self._run(row, version, values))
        if self.telemetry is not None:
            self.telemetry.created(model.ref)
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
        self._stop(pid)
        return self.store.prediction(pid)

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

    def _stop(self, pid: str, reason: str = "") -> None:
        """Cancel an unfinished prediction, ``reason`` as its error when given; a worker running
        it is told to stop, and gets ``--cancel-grace`` seconds before it is killed."""
        run = self._runs.get(pid)
        if run is None:
            return
        if not self.recorder.complete(run, Status.CANCELED, last_line=reason, **({"error": reason} if reason else {})):
            return
        with self._lock:
            in_worker = run.in_worker
            if in_worker:
                run.cancel_sent_at = time.monotonic()
        if in_worker:
            self._transport(run).cancel(pid)
        else:
            self._forget(run)

    # -- toward the worker ---------------------------------------------------------------------

    def _run(self, row: PredictionRow, version: Version, values: dict[str, Any]) -> PredictionRun:
        webhook = None
        if row.webhook:
            webhook = self.webhooks.subscription(row.owner, row.webhook, row.webhook_events_filter)
        run = PredictionRun(
            id=row.id,
            owner=row.owner,
            model=row.model,
            version=version,
            values=values,
            logs=LogBuffer.from_text(row.logs or ""),
            webhook=webhook,
            stream=bool(row.stream) or (webhook is not None and webhook.wants("output")),
            started_at=row.started_at,
            # An earlier process relayed it: it is followed there again, never created twice.
            provider=row.provider if row.provider in self.relays else LOCAL,
        )
        with self._lock:
            self._runs[run.id] = run
        return run

    def _pool(self, run: PredictionRun) -> Pool:
        with self._lock:
            pool = self._pools.get(run.pool)
            if pool is None:
                # The engine's ledger keeps the memory budget across the workers of this machine, and
                # a local worker keeps none; a Ray actor keeps the budget of its own node's device.
                checkpoints = self.settings.checkpoints
                if self.ray is None:
                    checkpoints = replace(checkpoints, memory_budget_bytes=None)
                spec = PoolSpec(
                    run.pool,
                    run.version.id,
                    tuple(self.settings.model_modules),
                    checkpoints,
                    self.settings.model_settings,
                    self.settings.log_format,
                )
                worker: Transport
                if self.ray is not None:
                    model, _ = self.registry.version(run.version.id)
                    worker = self.ray.worker(spec, self, run.version.predictor, names=(run.pool, model.ref))
                elif self.settings.workers == "inline":
                    worker = InlineWorker(spec, self)
                else:
                    worker = ProcessWorker(spec, self)
                feeder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inputs-{run.pool}")
                pool = self._pools[run.pool] = Pool(worker, feeder)
            return pool

    def _transport(self, run: PredictionRun) -> Transport:
        """Where the run's job goes: its upstream's relay, or its pool's worker."""
        return self.relays[run.provider] if run.provider != LOCAL else self._pool(run).worker

    def _dispatch(self, run: PredictionRun) -> None:
        self._pool(run).feeder.submit(self._prepare, run)

    def _prepare(self, run: PredictionRun) -> None:
        with about(run.id):
            self._prepare_run(run)

    def _prepare_run(self, run: PredictionRun) -> None:
        """Fetch the inputs, answer from the result cache when it can, else send the job."""
        if run.finished:  # canceled while it waited for the feeder
            self._forget(run)
            return
        try:
            scratch = self.store.scratch(run.id)
            inputs = self.resolver.resolve(run.version.inputs, run.values, run.owner, scratch)
            run.cache_key = self.cache.key(run.version, run.values, inputs)
            hit = self.cache.replay(run.cache_key, run.id) if run.cache_key else None
        except Exception as exc:  # a bad input, or a data directory it cannot be written to
            try:
                self.recorder.complete(run, Status.FAILED, error=prediction_error(exc))
            except Exception:
                # The record cannot be written either: it stays active, and the next start runs it again.
                log.exception("could not record the failure of %s", run.id)
            self._forget(run)
            return
        if hit is not None:
            earlier, output = hit
            line = f"Served from the result cache: same version, input and seed as prediction {earlier.id}."
            # Nothing ran, nor was anything paid for upstream: the answer came from here.
            self.recorder.complete(
                run,
                Status.SUCCEEDED,
                last_line=line,
                output=output,
                cache_key=run.cache_key,
                started_at=utcnow(),
                provider=LOCAL,
            )
            self._forget(run)
            return
        run.job = Job(run.id, inputs, scratch, run.stream, owner=run.owner)
        self._submit(run)

    def _submit(self, run: PredictionRun) -> None:
        assert run.job is not None
        with self._lock:
            # A cancel that came first has finished the run; one that comes after sees in_worker.
            if run.finished:
                submit = False
            else:
                submit = run.in_worker = True
        if not submit:
            self._forget(run)
            return
        worker = self._transport(run)
        try:
            worker.submit(run.job)
        except Exception as exc:  # no process could be started (out of memory, of file descriptors)
            log.exception("could not send %s to its worker", run.id, extra={"prediction_id": run.id})
            run.in_worker = False
            self.recorder.complete(run, Status.FAILED, error=f"Could not start the model's worker: {exc}")
            self._forget(run)
            return
        if run.cancel_sent_at is not None:
            worker.cancel(run.id)  # the cancel came while the job was on its way: send it after the job

    def _forget(self, run: PredictionRun) -> None:
        """The job is over: drop the run and its scratch files."""
        with self._lock:
            self._runs.pop(run.id, None)
        self.queued.remove(run.owner, run.id)
        self.store.clear_scratch(run.id)

    # -- from the worker (EventSink) -----------------------------------------------------------

    def event(self, pool: str, event: JobEvent | ModelEvent) -> None:
        if isinstance(event, ModelLoaded):
            self.memory.loaded(pool, event.key, event.nbytes)
            return
        if isinstance(event, ModelUsed):
            self.memory.used(pool, event.key)
            return
        if isinstance(event, QueuePositions):
            self._place(event)
            return
        if isinstance(event, PoolReport):
            self._pool_report(pool, event)
            return
        run = self._runs.get(event.prediction_id)
        if run is None:
            return
        with about(run.id):
            try:
                self._record(run, event)
            except Exception:
                # Recording failed (say the data directory is full): the prediction stays active in
                # the records, where its deadline or a restart ends it.
                log.exception("could not record %s of %s", type(event).__name__, run.id)

    def _record(self, run: PredictionRun, event: JobEvent) -> None:
        if isinstance(event, Done):
            run.in_worker = False
            if self._stopping and event.canceled and not run.finished:
                return  # stopped by the server's shutdown: the next start runs it again
            if not run.finished:
                self._finish(run, event)
            self._forget(run)
        elif run.finished:
            return  # canceled or expired while the worker ran it: nothing more reaches the record
        elif isinstance(event, Started):
            run.started_in_worker = True
            self.queued.remove(run.owner, run.id)
            run.queue = None
            if not self.recorder.started(run):
                self._transport(run).cancel(run.id)
        elif isinstance(event, Log | Progress):
            if isinstance(event, Log):
                run.logs.append(event.text)
            else:
                run.logs.progress(event.done, event.total)
            if run.logs.due():
                self.recorder.flush(run)
        elif isinstance(event, Output):
            self.recorder.partial(run, event.value)

    def _finish(self, run: PredictionRun, done: Done) -> None:
        if done.canceled or done.error is not None:
            # A half-written output may be what filled the disk: free it before the record is written.
            self.store.clear_scratch(run.id)
        # What a provider that ran it elsewhere measured; a local run is timed by the recorder.
        measured: dict[str, Any] = {"hardware": done.hardware} if done.hardware else {}
        if done.predict_time is not None:
            measured["predict_time"] = done.predict_time
        if done.record is not None:
            measured["upstream"] = done.record
        if run.provider != LOCAL and run.started_at is None and not done.canceled:
            measured["started_at"] = utcnow()  # a provider that reported it only once it had ended
        if done.canceled:
            self.recorder.complete(run, Status.CANCELED, **measured)
        elif done.error is not None:
            self.recorder.complete(run, Status.FAILED, error=done.error, **measured)
        else:
            try:
                output = self.recorder.publish(run.id, done.output)
            except (TypeError, OSError) as exc:
                self.recorder.complete(run, Status.FAILED, error=prediction_error(exc), **measured)
                return
            # A result the upstream made with a version of its choosing is not this version's to replay.
            unpinned = done.record is not None and not done.record.get("pinned")
            cache_key = None if unpinned else run.cache_key
            self.recorder.complete(run, Status.SUCCEEDED, output=output, cache_key=cache_key, **measured)
            if run.provider == LOCAL and run.started_at is not None:
                self.router.ran(run.pool, (utcnow() - run.started_at).total_seconds())

    def _place(self, event: QueuePositions) -> None:
        """Keep each queued prediction's place in memory, where the API reads it (``queue_spot``)."""
        now = time.monotonic()
        per_place = event.seconds_per_place
        for position, pid in enumerate(event.prediction_ids, 1):
            run = self._runs.get(pid)
            # A report made just before the job started can arrive after its Started.
            if run is not None and run.started_at is None and not run.finished:
                run.queue = QueueSpot(
                    position, len(event.prediction_ids), None if per_place is None else now + position * per_place
                )

    def queue_spot(self, pid: str) -> QueueSpot | None:
        """Where a queued prediction stands, as its worker last reported; None once it started."""
        run = self._runs.get(pid)
        return run.queue if run is not None and run.started_at is None and not run.finished else None

    def lost(self, pool: str, prediction_ids: list[str], why: WorkerLost) -> None:
        """A worker died holding these jobs. One it had started runs again (``--max-attempts``
        runs in all) if it had produced no output, else fails with the worker's fate; one still
        waiting in its queue is sent again without using an attempt, as it never ran."""
        if self._stopping:
            return  # stopped on purpose: the next start runs them again
        if pool.startswith(POOL_PREFIX):
            self._upstream_lost(prediction_ids, why)
            return
        self.memory.forget_pool(pool)
        self._worker_gone(pool, why)
        runs = [run for run in map(self._runs.get, prediction_ids) if run is not None]
        # Sent again in the order they had: those that were running first, then the queue's.
        for run in sorted(runs, key=lambda run: (not run.started_in_worker, run.queued_at)):
            with self._lock:
                run.in_worker = False
                started, run.started_in_worker = run.started_in_worker, False
            try:
                self._relaunch(run, why, started)
            except Exception:
                log.exception("could not record the loss of %s", run.id, extra={"prediction_id": run.id})

    def _route(self, owner: str, model: Model, version: Version) -> str:
        """Where a new prediction runs (``Router.route``), decided as it is created: a refusal
        the router raises is the create's answer, and the record names its provider from the start."""
        pool = version.predictor.pool or version.id
        with self._lock:
            ahead = sum(
                1 for run in self._runs.values() if run.pool == pool and run.provider == LOCAL and not run.finished
            )
        side_by_side = version.predictor.jobs_at_once(self.settings.model_settings)
        return self.router.route(owner, model.ref, version.id, LocalLoad(pool, ahead, side_by_side))

    def _upstream_lost(self, prediction_ids: list[str], why: WorkerLost) -> None:
        """An upstream failed these predictions (unreachable, refused, timed out): a burst route
        runs one here instead if the upstream never accepted it (one it accepted may have run
        there, answered finished with no ``Started``, and is never run twice); any other fails with why."""
        for run in [run for run in map(self._runs.get, prediction_ids) if run is not None]:
            with self._lock:
                run.in_worker = False
            try:
                if run.finished:
                    self._forget(run)
                elif not why.accepted_upstream and self.router.may_fall_back(run.model, run.version.id):
                    self.store.transition(run.id, ACTIVE, provider=LOCAL)
                    run.provider = LOCAL
                    self._run_again(run, f"{why.error} Running this prediction here instead.")
                else:
                    self._fail(run, why.error)
            except Exception:
                log.exception("could not record the loss of %s", run.id, extra={"prediction_id": run.id})

    def _relaunch(self, run: PredictionRun, why: WorkerLost, started: bool) -> None:
        if run.finished:
            self._forget(run)
        elif why.retryable and not started:
            self._submit(run)
        elif why.retryable and run.attempt < self.settings.max_attempts and not run.produced_output:
            run.attempt += 1
            self._run_again(run, f"{why.error} Running this prediction again.")
        else:
            self._fail(run, why.error)

    def _run_again(self, run: PredictionRun, why: str) -> None:
        """Send a lost run to a worker again, saying ``why`` in its logs, unless it ended meanwhile."""
        if self.recorder.restarted(run, why):
            self._submit(run)
        else:
            self._forget(run)

    def _fail(self, run: PredictionRun, error: str) -> None:
        self.recorder.complete(run, Status.FAILED, error=error)
        self._forget(run)

    def _unload(self, pool: str, key: str) -> None:
        with self._lock:
            target = self._pools.get(pool)
        if target is not None:
            target.worker.unload(key)

    # -- health and metrics --------------------------------------------------------------------

    def health(self) -> Health:
        with self._lock:
            pools = list(self._pools)
        return self.health_monitor.check(self.active_runs(), pools)

    def active_runs(self) -> list[PredictionRun]:
        """The predictions not yet terminal."""
        with self._lock:
            return [run for run in self._runs.values() if not run.finished]

    def _pool_report(self, pool: str, report: PoolReport) -> None:
        if isinstance(report, SetupDone):
            self.health_monitor.setup(pool, report.error)
        elif self.telemetry is not None:
            self.telemetry.pool_report(pool, report)

    def _worker_gone(self, pool: str, why: WorkerLost) -> None:
        if not why.retryable:  # its code could not be loaded, and will not be next time either
            self.health_monitor.setup(pool, why.error)
        if self.telemetry is not None:
            self.telemetry.pool_gone(pool)

    # -- housekeeping --------------------------------------------------------------------------

    def _flush_logs(self) -> None:
        for run in list(self._runs.values()):
            if not run.finished and run.logs.due():
                self.recorder.flush(run)

    def _expire_overdue(self) -> None:
        """Cancel predictions past their deadline, as Replicate does. Replicate calls one that
        never started ``aborted``, a status the Python client cannot read, so that one is
        ``canceled`` too; ``error`` and the logs say why."""
        for row in self.store.overdue_predictions(utcnow()):
            limit = (row.deadline - row.created_at).total_seconds() if row.deadline else 0
            reason = (
                f"Canceled: the prediction did not finish within its deadline of {limit:g} s "
                "(Cancel-After or the server's timeout)."
            )
            self._stop(row.id, reason)

    def _enforce_cancel_grace(self) -> None:
        """Kill a worker whose prediction ignored its cancel for longer than the grace period."""
        grace = self.settings.cancel_grace_seconds
        for run in list(self._runs.values()):
            if run.in_worker and run.cancel_sent_at is not None and time.monotonic() - run.cancel_sent_at > grace:
                run.cancel_sent_at = None
                log.warning(
                    "prediction %s ignored its cancel for %g s: restarting its worker",
                    run.id,
                    grace,
                    extra={"prediction_id": run.id},
                )
                # Its neighbours' errors must not name it: it may be another account's.
                self._transport(run).kill(f"was restarted: a prediction in it ignored its cancel for {grace:g} s")

    def _apply_retention(self) -> None:
        cutoff = utcnow() - timedelta(hours=self.settings.retention_hours or 0)
        self.store.remove_data_before(cutoff)
        self.store.delete_files_before(cutoff)


def _idempotency_digest(owner: str, key: str) -> str:
    """Keys are the clients' own: one owner's never finds another's, and any length fits the column."""
    return hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()


def _own_base(settings: Settings) -> str:
    """This server's base URL as an upstream on the network reaches it, for the webhooks it gives."""
    if settings.public_url:
        return settings.public_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"
