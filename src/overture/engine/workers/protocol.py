"""The messages between the engine and a model worker: what crosses a pipe today and a network
tomorrow, so every one is a plain, picklable dataclass with no live objects in it.

The engine sends ``Job`` and ``Cancel`` (and ``None``, over a pipe, to stop the worker); the
worker answers each job with ``Started`` (once it takes the job off its queue), any number of
``Log``, ``Progress`` and ``Output`` events, and exactly one ``Done``. A worker that cannot load
its model's code sends ``WorkerFailed`` and exits. For the one memory budget of all workers, a
worker reports ``ModelLoaded`` and ``ModelUsed``, and the engine may answer ``Unload``. While jobs
wait, ``QueuePositions`` says where each stands. For health and metrics, a worker reports its
predictor's setup (``SetupDone``) and, at most once a second, its running batch (``BatchStats``)
and the GPU memory it holds (``DeviceMemory``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overture.logs import LogFormat
from overture.runtime.checkpoints import CheckpointSettings


@dataclass(frozen=True)
class PoolSpec:
    """What a worker needs to serve one pool: where to find its predictor (a version id, and the
    modules declaring models beside the built-in ones, as a fresh process must import them), and
    the settings its predictor is built with."""

    name: str
    version_id: str
    model_modules: tuple[str, ...] = ()
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    #: Each model package's settings dataclass by its class (``Settings.model_settings``).
    model_settings: dict[type, Any] = field(default_factory=dict)
    #: How the worker's process logs (``Settings.log_format``): as the server does.
    log_format: LogFormat = "text"


@dataclass(frozen=True)
class Job:
    """One prediction to run, with every file input already a local path."""

    prediction_id: str
    inputs: dict[str, Any]
    #: Where the model writes output files; the engine moves them into the store.
    scratch: Path
    #: Someone wants partial outputs (a stream was requested, or an ``output`` webhook).
    stream: bool = False
    #: Whose it is (the token's owner name): the queue takes turns between owners.
    owner: str = ""


@dataclass(frozen=True)
class Cancel:
    prediction_id: str


@dataclass(frozen=True)
class Unload:
    """Drop a loaded model: another worker needs its memory."""

    key: str


@dataclass(frozen=True)
class Started:
    prediction_id: str


@dataclass(frozen=True)
class Log:
    prediction_id: str
    text: str


@dataclass(frozen=True)
class Progress:
    prediction_id: str
    done: int
    total: int


@dataclass(frozen=True)
class Output:
    """Output ready before the prediction ends; ``Path`` values are files in the job's scratch."""

    prediction_id: str
    value: Any


@dataclass(frozen=True)
class Done:
    """The end of a job: ``output`` when it succeeded, ``error`` (a message for the user) when it
    failed, or ``canceled``."""

    prediction_id: str
    output: Any = None
    error: str | None = None
    canceled: bool = False
    #: As a provider that ran it elsewhere measured it (an upstream's ``metrics.predict_time``);
    #: None: the engine times the run itself.
    predict_time: float | None = None
    #: The hardware that provider reports it ran on.
    hardware: str | None = None
    #: What that provider keeps about the run, stored with the end as metadata (an upstream's own
    #: prediction record: its id, URLs and metrics).
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelLoaded:
    key: str
    nbytes: int


@dataclass(frozen=True)
class ModelUsed:
    key: str


@dataclass(frozen=True)
class QueuePositions:
    """The pool's queued jobs in the order they will start, sent at a bounded rate while the
    queue changes: one event for all of them, not one per job per move."""

    prediction_ids: tuple[str, ...]
    #: Estimated seconds each place in line adds to the wait (recent run time over the jobs
    #: running side by side); None before the pool has finished a job.
    seconds_per_place: float | None


@dataclass(frozen=True)
class WorkerFailed:
    """The worker could not start serving its pool (its code failed to import); it exits after."""

    error: str


# -- reports about the pool as a whole, for /health and /metrics --


@dataclass(frozen=True)
class SetupDone:
    """The pool's predictor was set up (``error`` None), or its ``setup`` failed with ``error``."""

    error: str | None = None


@dataclass(frozen=True)
class BatchStats:
    """A continuous batch's figures over the last report interval: its rows (predictions in the
    loop) and decoder steps per second. Rows 0 once the loop has emptied."""

    rows: int
    steps_per_second: float


@dataclass(frozen=True)
class DeviceMemory:
    """GPU memory the worker's process holds on one device (torch's caching allocator)."""

    device: str
    allocated_bytes: int
    reserved_bytes: int


#: Events about one job, which the engine records.
JobEvent = Started | Log | Progress | Output | Done
PoolReport = SetupDone | BatchStats | DeviceMemory
#: Events about the pool as a whole.
ModelEvent = ModelLoaded | ModelUsed | QueuePositions | PoolReport
Event = JobEvent | ModelEvent | WorkerFailed
