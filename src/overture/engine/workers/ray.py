"""``--ray``: each pool's workers are Ray actors, placed by Ray on the nodes of a cluster.

The only module that imports ``ray``: a server without ``--ray`` never loads it. An actor hosts the
same ``PoolRuntime`` a worker process does and speaks the same typed messages (protocol.py):
``submit``, ``cancel`` and ``unload`` are actor calls, and every event comes back, in order, on one
streaming-generator call per actor, which the server reads on one thread per actor, as it reads a
worker process's pipe. One stream per actor, not one per job: model events have a place on it,
events of a batch keep their order, and the actor's death shows in one place.

Files travel whole through Ray's object store, inside the messages: the server reads a job's input
files into the job it sends, the actor writes them into a scratch directory of its own node, and an
output file comes back as its bytes, which the server writes into the job's scratch directory. So
a node needs no route to the API server (a signed URL would need one, and the server's public URL).

The durable queue stays in the server's database; an actor holds only the jobs sent to it. When an
actor or its node is lost, its jobs are reported lost (``WorkerLost``, naming the node), and the
engine runs them again as ``--max-attempts`` allows; the actor's slot gets a new actor on the next
job. Ray's own actor restart is not used: a restarted actor would not resume the event stream.
Actors are owned by the server's Ray driver, so when the server dies they die with it, and a
restarted server never finds an old actor still running a prediction it runs again.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from overture.engine.workers.protocol import (
    Done,
    Event,
    Job,
    JobEvent,
    Log,
    ModelEvent,
    ModelLoaded,
    ModelUsed,
    Output,
    PoolSpec,
    WorkerFailed,
)
from overture.engine.workers.runtime import PoolRuntime, code_failure, predictor_class
from overture.engine.workers.transport import ClusterUnavailable, EventSink, WorkerLost
from overture.models.base import Predictor
from overture.runtime.checkpoints import Checkpoints

log = logging.getLogger("overture")

T = TypeVar("T")

#: Every actor of this server lives in this Ray namespace.
NAMESPACE = "overture"
#: ``--replicas POOL=auto`` starts at most this many actors of a pool, however large the cluster.
AUTO_REPLICAS_LIMIT = 8
#: How long a lost stream's actor is asked whether it still lives before it is given up.
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class FileBlob:
    """A file's name and bytes, in place of its path while a message crosses between nodes."""

    name: str
    data: bytes


def pack(value: Any) -> Any:
    """``value`` with every file path in it (nested in lists and dicts too) replaced by its bytes."""
    if isinstance(value, Path):
        return FileBlob(value.name, value.read_bytes())
    if isinstance(value, dict):
        return {key: pack(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(pack(item) for item in value)
    return value


def unpack(value: Any, directory: Path) -> Any:
    """``value`` with every ``FileBlob`` written into ``directory`` and replaced by its path."""
    if isinstance(value, FileBlob):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / value.name
        path.write_bytes(value.data)
        return path
    if isinstance(value, dict):
        return {key: unpack(item, directory) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(unpack(item, directory) for item in value)
    return value


# -- the actor ---------------------------------------------------------------------------------


class PoolActor:
    """One replica of a pool on some node: its ``PoolRuntime``, and the stream of its events."""

    def __init__(self, spec: PoolSpec):
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s actor {spec.name}: %(message)s")
        self._events: queue.Queue[Event] = queue.Queue()
        self._scratch_root = Path(tempfile.mkdtemp(prefix="overture-actor-"))
        self._scratch: dict[str, Path] = {}
        self._runtime: PoolRuntime | None = None
        try:
            self._runtime = PoolRuntime(spec, predictor_class(spec), self._emit)
        except BaseException as exc:  # noqa: BLE001 - whatever the import raised, the server must hear it
            self._events.put(WorkerFailed(code_failure(exc)))

    def node(self) -> tuple[str, str]:
        """Where Ray placed this actor: its node's id and address."""
        context = ray.get_runtime_context()
        return context.get_node_id(), ray.util.get_node_ip_address()

    def submit(self, job: Job) -> None:
        if self._runtime is None:
            return  # the stream has told the server why not
        scratch = self._scratch_root / job.prediction_id
        self._scratch[job.prediction_id] = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        node_id, address = self.node()
        self._events.put(Log(job.prediction_id, f"Running on Ray node {node_id[:12]} ({address})."))
        self._runtime.submit(replace(job, inputs=unpack(job.inputs, scratch / "inputs"), scratch=scratch))

    def cancel(self, prediction_id: str) -> None:
        if self._runtime is not None:
            self._runtime.cancel(prediction_id)

    def unload(self, key: str) -> None:
        if self._runtime is not None:
            self._runtime.unload(key)

    def events(self) -> Iterator[Event]:
        """Every event of this actor, in order, for as long as it lives (a streaming generator)."""
        while True:
            event = self._events.get()
            yield event
            if isinstance(event, WorkerFailed):
                return

    def _emit(self, event: JobEvent | ModelEvent) -> None:
        if isinstance(event, Output):
            event = replace(event, value=pack(event.value))
        elif isinstance(event, Done):
            try:
                event = replace(event, output=pack(event.output))
            except OSError as exc:
                event = Done(event.prediction_id, error=f"Could not read the model's output file: {exc}")
            shutil.rmtree(self._scratch.pop(event.prediction_id, self._scratch_root / "-"), ignore_errors=True)
        self._events.put(event)


#: Typed as Any: Ray's stubs do not know an actor handle's methods (``handle.method.remote``).
_REMOTE_POOL_ACTOR: Any = ray.remote(PoolActor)


# -- the server's side -------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolPlacement:
    """What each actor of a pool reserves, and how many there are."""

    replicas: int
    num_cpus: float
    num_gpus: float


class ControlStore:
    """Questions to the cluster's control store (Ray's GCS), which block while it is unreachable.

    Each question runs on a thread of its own, as a blocked call to Ray cannot be interrupted. One
    that has not answered is the probe: while it is out, the store is taken as silent, and no
    other question is put (no thread piles up behind it). Questions then wait for the probe's
    answer, at most until the store has been silent for ``--ray-wait``, and fail with
    ``ClusterUnreachable`` from then on, at once, until the probe answers. Meanwhile the API
    answers and predictions wait."""

    def __init__(self, address: str, wait_seconds: float):
        self.address = address
        self.wait_seconds = wait_seconds
        self._changed = threading.Condition()
        #: The question that has not answered, and since when: the store is silent while it is out.
        self._probe: threading.Thread | None = None
        self._silent_since = 0.0

    def ask(self, question: Callable[[], T]) -> T:
        answers: list[T] = []
        errors: list[BaseException] = []

        def put() -> None:
            try:
                answers.append(question())
            except BaseException as exc:  # noqa: BLE001 - raised again in the asking thread
                errors.append(exc)
            with self._changed:
                if self._probe is thread:
                    self._probe = None  # the store answers again
                self._changed.notify_all()

        thread = threading.Thread(target=put, name="ray-control-store", daemon=True)
        with self._changed:
            self._wait_for_silence_to_end()
            self._probe = thread
            self._silent_since = time.monotonic()
            thread.start()
            self._changed.wait_for(lambda: self._probe is not thread, self.wait_seconds)
            if self._probe is thread:
                raise self._unreachable()
        if errors:
            raise errors[0]
        return answers[0]

    def _wait_for_silence_to_end(self) -> None:
        """Return once no probe is out; raise once the store has been silent for ``--ray-wait``.
        Called holding ``_changed``."""
        while self._probe is not None:
            left = self._silent_since + self.wait_seconds - time.monotonic()
            if left <= 0:
                raise self._unreachable()
            self._changed.wait(left)

    def _unreachable(self) -> ClusterUnreachable:
        return ClusterUnreachable(f"The Ray cluster at {self.address} has not answered for {self.wait_seconds:g} s.")

    def node_alive(self, node_id: str) -> bool:
        return any(node["NodeID"] == node_id and node["Alive"] for node in self.ask(ray.nodes))


class ClusterUnreachable(Exception):
    """The cluster's control store did not answer within ``--ray-wait``."""


class RayCluster:
    """The server's connection to a Ray cluster, and the source of each pool's transport."""

    def __init__(
        self,
        address: str,
        wait_seconds: float,
        replicas: Mapping[str, int | str],
        gpus_per_worker: Mapping[str, float],
    ):
        self.address = address
        self.wait_seconds = wait_seconds
        self._replicas = replicas
        self._gpus_per_worker = gpus_per_worker
        _connect(address, wait_seconds)
        self.control = ControlStore(address, wait_seconds)
        resources = ray.cluster_resources()
        log.info(
            "connected to the Ray cluster at %s: %d nodes, %g CPUs, %g GPUs",
            address,
            len([n for n in ray.nodes() if n["Alive"]]),
            resources.get("CPU", 0),
            resources.get("GPU", 0),
        )

    def placement(self, names: tuple[str, ...], predictor: type[Predictor]) -> PoolPlacement:
        """A pool's actors as the operator asked for them under any of its ``names`` (the pool's,
        or its model's ``owner/name``)."""
        gpus_in_cluster = self.control.ask(ray.cluster_resources).get("GPU", 0)
        default_gpus = 1.0 if gpus_in_cluster and predictor.uses_gpu else 0.0
        num_gpus = _first(self._gpus_per_worker, names, default_gpus)
        wanted = _first(self._replicas, names, 1)
        if wanted == "auto":
            if gpus_in_cluster and num_gpus:
                count = int(gpus_in_cluster / num_gpus)
            else:
                nodes = self.control.ask(ray.nodes)
                count = len([n for n in nodes if n["Alive"] and n["Resources"].get("CPU", 0) >= 1])
            wanted = min(AUTO_REPLICAS_LIMIT, max(1, count))
        return PoolPlacement(int(wanted), num_cpus=1.0, num_gpus=num_gpus)

    def worker(self, spec: PoolSpec, sink: EventSink, predictor: type[Predictor], names: tuple[str, ...]) -> RayWorker:
        return RayWorker(spec, sink, self, predictor, names)

    def close(self) -> None:
        try:
            self.control.ask(ray.shutdown)
        except ClusterUnreachable:
            log.warning("left the Ray cluster at %s without a goodbye: it does not answer", self.address)


def _first(table: Mapping[str, Any], names: tuple[str, ...], default: Any) -> Any:
    return next((table[name] for name in names if name in table), default)


def _connect(address: str, wait_seconds: float) -> None:
    # A driver that loses the cluster's control store exits its process after this long (Ray's
    # default: 60 s), which would take the API down with it: the server waits instead, and fails
    # predictions itself after --ray-wait.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(24 * 3600))
    options: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        ray.init(include_dashboard=False, **options)
        return
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit():
        # Ray retries an address that does not answer for minutes: a plain connect says it at once.
        try:
            socket.create_connection((host, int(port)), timeout=min(wait_seconds, 10.0)).close()
        except OSError as exc:
            raise ClusterUnavailable(
                f"Cannot reach the Ray cluster at {address}: {exc}. Start it with `ray start --head`, "
                "or serve with --ray local to start one on this machine."
            ) from None
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:  # ValueError: an address Ray cannot parse
        raise ClusterUnavailable(f"Cannot connect to the Ray cluster at {address}: {exc}") from None


class RayWorker:
    """One pool's actors. A job goes to an actor that has loaded the job's own model (its
    predictor's ``model_key``) and has room for it in its batch, which keeps batching inside one
    device; else to the least loaded actor. An actor is started on the first job that goes to its
    slot, and again after it was lost."""

    def __init__(
        self, spec: PoolSpec, sink: EventSink, cluster: RayCluster, predictor: type[Predictor], names: tuple[str, ...]
    ):
        self.spec = spec
        self._sink = sink
        self.cluster = cluster
        self._predictor = predictor
        self._names = names
        #: Jobs one actor takes at once before another gets the next one.
        self._room = predictor.jobs_at_once(spec.model_settings)
        #: Maps a job to the key its model is loaded under, with the operator's substitutions.
        self._checkpoints = Checkpoints(spec.checkpoints)
        self._lock = threading.Lock()
        self._starting = threading.Lock()
        #: Decided on the first job (it asks the cluster, which may keep it waiting), not in the engine's lock.
        self.placement: PoolPlacement | None = None
        self._slots: list[_Replica | None] = []
        self._stopped = False

    def submit(self, job: Job) -> None:
        """Called on the pool's feeder thread (and on a lost actor's reader, for a job run again),
        which may wait here for an unreachable cluster; raises ``ClusterUnreachable`` once it has
        waited ``--ray-wait``."""
        packed = replace(job, inputs=pack(job.inputs))
        # One actor started at a time, outside ``_lock``: cancels and events never wait for a start.
        with self._starting:
            if self.placement is None:
                self.placement = self.cluster.placement(self._names, self._predictor)
                with self._lock:
                    self._slots = [None] * self.placement.replicas
            with self._lock:
                if self._stopped:
                    return  # the server is stopping: the job stays active in the records for the next start
                slot = self._choose(self._predictor.model_key(job.inputs, self._checkpoints))
                replica = self._slots[slot]
                if replica is not None:
                    # Under the lock that ``_ended`` takes: a lost actor's list of jobs includes this one.
                    replica.reserve(job)
            if replica is None:
                replica = _Replica(self, slot)
                with self._lock:
                    self._slots[slot] = replica
                    replica.reserve(job)
                replica.start()  # its reader may end it at once: only once it holds its slot and job
        replica.send(packed)

    def _choose(self, key: str | None) -> int:
        """The slot for a job whose model loads under ``key`` (None: the pool's one model)."""

        def rank(slot: int) -> tuple[bool, bool, int]:
            replica = self._slots[slot]
            load = len(replica.outstanding) if replica is not None else 0
            warm = replica is not None and (key in replica.loaded if key is not None else bool(replica.loaded))
            return load >= self._room, not warm, load

        return min(range(len(self._slots)), key=rank)

    def cancel(self, prediction_id: str) -> None:
        for replica in self._replicas():
            if prediction_id in replica.outstanding:
                replica.canceled.add(prediction_id)
                replica.call("cancel", prediction_id)

    def unload(self, key: str) -> None:
        for replica in self._replicas():
            if key in replica.loaded:
                replica.call("unload", key)

    def kill(self, reason: str) -> None:
        """Kill the actors holding a job that ignored its cancel; their other jobs are reported lost."""
        for replica in self._replicas():
            if replica.canceled & replica.outstanding:
                replica.kill(reason)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        for replica in self._replicas():
            replica.stop()

    def _replicas(self) -> list[_Replica]:
        with self._lock:
            return [replica for replica in self._slots if replica is not None]

    def node_for_new_actor(self) -> str | None:
        """The alive node that could hold one more actor of this pool and holds the fewest of its
        actors now, or None when no node could. Ray's own SPREAD is best effort: it placed two
        actors of a pool on one node while another stood idle."""
        placement = self.placement
        assert placement is not None
        nodes = [
            node["NodeID"]
            for node in self.cluster.control.ask(ray.nodes)
            if node["Alive"]
            and node["Resources"].get("CPU", 0) >= placement.num_cpus
            and node["Resources"].get("GPU", 0) >= placement.num_gpus
        ]
        if not nodes:
            return None
        held = [replica.node_id for replica in self._replicas()]
        return min(sorted(nodes), key=held.count)

    def _ended(self, replica: _Replica) -> None:
        with self._lock:
            if self._slots[replica.slot] is replica:
                self._slots[replica.slot] = None


@dataclass
class _Where:
    node_id: str = ""
    address: str = ""

    def __str__(self) -> str:
        return f"{self.node_id[:12]} ({self.address})" if self.node_id else "(not yet placed)"


class _Replica:
    """One actor of a pool, the jobs it holds, and the thread reading its event stream."""

    def __init__(self, owner: RayWorker, slot: int):
        self.owner = owner
        self.slot = slot
        spec = owner.spec
        #: Ids of the jobs sent and not yet answered with ``Done``.
        self.outstanding: set[str] = set()
        #: Jobs told to cancel: ``kill`` ends the actor only for one of these.
        self.canceled: set[str] = set()
        #: Keys of the models the actor reported loaded: a job for one of them may batch with a running one.
        self.loaded: set[str] = set()
        self._scratch: dict[str, Path] = {}
        self.where = _Where()
        self._control = owner.cluster.control
        self._wait = owner.cluster.wait_seconds
        self._killed_because: str | None = None
        self._stopping = False
        # Named, so that a restarted server finds an actor its previous process left busy and
        # stops it before the same predictions run again (Ray ends it too, once it sees its owner gone).
        name = f"{spec.name}#{slot}"
        self._control.ask(lambda: _stop_stale(name))
        placement = owner.placement
        assert placement is not None
        # Replicas of a pool on different nodes where it can: one node's loss takes fewer. Soft, and
        # spilling when that node has no room free now, so that Ray places it elsewhere instead of waiting.
        #: The node asked for (Ray may place it elsewhere); ``where`` says where it runs once it reports.
        self.node_id = owner.node_for_new_actor() or ""
        strategy: Any = (
            NodeAffinitySchedulingStrategy(self.node_id, soft=True, _spill_on_unavailable=True)
            if self.node_id
            else "SPREAD"
        )
        actor_class = _REMOTE_POOL_ACTOR.options(
            name=name,
            num_cpus=placement.num_cpus,
            num_gpus=placement.num_gpus,
            scheduling_strategy=strategy,
            max_restarts=0,
            # The event stream holds one thread; calls and cancels need others.
            max_concurrency=8,
        )
        self.actor: Any = actor_class.remote(spec)
        self._stream = self.actor.events.options(num_returns="streaming").remote()
        self._reader = threading.Thread(target=self._read, name=f"ray-events-{spec.name}-{slot}", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def reserve(self, job: Job) -> None:
        self.outstanding.add(job.prediction_id)
        self._scratch[job.prediction_id] = job.scratch

    def send(self, job: Job) -> None:
        self.call("submit", job)

    def call(self, method: str, argument: Any) -> None:
        # Fire and forget: a lost actor shows on its stream, where its jobs are reported lost.
        getattr(self.actor, method).remote(argument)

    def kill(self, reason: str) -> None:
        if self._killed_because is None:
            self._killed_because = reason
            log.warning("killing the Ray actor of %s on node %s: %s", self.owner.spec.name, self.where, reason)
            self._kill()

    def stop(self) -> None:
        self._stopping = True
        self._kill()
        if self._reader.ident is not None:  # started
            self._reader.join(10)

    def _kill(self) -> None:
        try:
            self._control.ask(lambda: ray.kill(self.actor, no_restart=True))
        except ClusterUnreachable:
            pass  # the cluster ends it once it sees its owner, this server, gone or its node lost

    def _read(self) -> None:
        spec = self.owner.spec
        failed: str | None = None
        broken: Exception | None = None
        try:
            self.where = _Where(*ray.get(self.actor.node.remote(), timeout=self._wait))
            log.info("Ray actor %d of %s started on node %s", self.slot, spec.name, self.where)
            for ref in self._stream:
                event: Event = ray.get(ref)
                if isinstance(event, WorkerFailed):
                    failed = event.error
                    continue
                self._deliver(event)
        except (RayError, GetTimeoutError) as exc:
            broken = exc
        self.owner._ended(self)
        if self._stopping:
            return
        if failed is not None:
            log.error("the Ray actor of %s could not start: %s", spec.name, failed)
            lost = WorkerLost(failed, retryable=False)
        else:
            try:
                # Placement that timed out would time out as long again: the job fails at once.
                lost = WorkerLost(self._cause(broken), retryable=not isinstance(broken, GetTimeoutError))
            except ClusterUnreachable as exc:
                # Its jobs have waited --ray-wait already: running them again would wait as long.
                lost = WorkerLost(f"{exc} The model's actor on node {self.where} was lost with it.", retryable=False)
            log.error("Ray actor %d of %s lost: %s", self.slot, spec.name, lost.error)
            self._kill()
        self.owner._sink.lost(spec.name, list(self.outstanding), lost)

    def _deliver(self, event: JobEvent | ModelEvent) -> None:
        pool = self.owner.spec.name
        if isinstance(event, ModelLoaded):
            self.loaded.add(event.key)
            return  # each actor keeps its own device's memory budget: the server's ledger is for local workers
        if isinstance(event, ModelUsed):
            return  # the same
        # QueuePositions give places in this actor's own queue, and pool reports (setup, batch,
        # device memory) are this actor's: each goes on as it is.
        if isinstance(event, Output):
            event = replace(event, value=unpack(event.value, self._scratch[event.prediction_id]))
        elif isinstance(event, Done):
            scratch = self._scratch.pop(event.prediction_id)
            event = replace(event, output=unpack(event.output, scratch))
            self.outstanding.discard(event.prediction_id)
            self.canceled.discard(event.prediction_id)
        try:
            self.owner._sink.event(pool, event)
        except Exception:
            log.exception("could not handle %s from the Ray actor of %s", type(event).__name__, pool)

    def _cause(self, exc: Exception | None) -> str:
        """Why the stream ended, for the user: a lost node is named as such. Raises
        ``ClusterUnreachable`` when the cluster itself does not answer."""
        if self._killed_because is not None:
            return f"The model's Ray actor {self._killed_because}."
        if isinstance(exc, GetTimeoutError):
            self._control.ask(ray.nodes)  # the cluster answers: it has no room for the actor
            placement = self.owner.placement
            assert placement is not None
            return (
                f"No node of the Ray cluster took the model's actor within {self._wait:g} s "
                f"(it needs {placement.num_cpus:g} CPU and {placement.num_gpus:g} GPU)."
            )
        died = self._settle(exc)
        if self.where.node_id and not self._control.node_alive(self.where.node_id):
            return f"The Ray node {self.where} running this prediction was lost."
        return f"The model's Ray actor on node {self.where} died ({type(died).__name__})."

    def _settle(self, exc: Exception | None) -> Exception | None:
        """Wait until Ray has decided the actor's fate (a killed process shows first as merely
        unavailable, its node's loss a few heartbeats later), for at most ``--ray-wait``."""
        deadline = time.monotonic() + self._wait
        while not isinstance(exc, ActorDiedError) and time.monotonic() < deadline:
            if self.where.node_id and not self._control.node_alive(self.where.node_id):
                break
            try:
                ray.get(self.actor.node.remote(), timeout=PROBE_SECONDS)
                break  # it answers, but its stream is gone: it is killed after this
            except (RayError, GetTimeoutError) as probe:
                exc = probe
                time.sleep(0.2)
        return exc


def _stop_stale(name: str) -> None:
    try:
        stale = ray.get_actor(name)
    except ValueError:
        return
    log.warning("stopping Ray actor %s, left by an earlier server process", name)
    ray.kill(stale, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.1)
