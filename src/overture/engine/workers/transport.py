"""What the engine sees of a worker, whichever transport carries its messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from overture.engine.workers.protocol import Job, JobEvent, ModelEvent


@dataclass(frozen=True)
class WorkerLost:
    """Why the jobs a worker held will never get their ``Done``."""

    #: For the user: what happened to the worker.
    error: str
    #: Whether running the jobs again could succeed (a crash might not repeat; a failed import will).
    retryable: bool
    #: An upstream accepted the jobs (it gave them ids): they may run there still, or have run, so
    #: they are never run here too.
    accepted_upstream: bool = False


class ClusterUnavailable(Exception):
    """The cluster that should run the workers cannot be reached at start-up; the message says
    where, and what to do."""


class EventSink(Protocol):
    """The engine side: where a transport delivers events, from any thread."""

    def event(self, pool: str, event: JobEvent | ModelEvent) -> None: ...

    def lost(self, pool: str, prediction_ids: list[str], why: WorkerLost) -> None: ...


class Transport(Protocol):
    """One pool's worker, wherever it runs."""

    def submit(self, job: Job) -> None: ...

    def cancel(self, prediction_id: str) -> None: ...

    def unload(self, key: str) -> None: ...

    def kill(self, reason: str) -> None:
        """Stop the worker however it is stuck; its other jobs are reported lost."""

    def stop(self) -> None: ...
