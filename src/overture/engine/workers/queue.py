"""A worker's FIFO of jobs for its pool, from which its threads take a compatible batch.

The queue also keeps count of the threads serving it: a worker that finds nothing to do for
``idle_seconds`` retires, and ``put`` asks for a new one when fewer are alive than wanted. A
thread that ran torch keeps its OpenMP team for as long as it lives, and while two teams exist
libgomp stops spinning between parallel regions, so an idle model's thread would make every
other model's small operations several times slower on CPU.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable

from overture.engine.workers.protocol import Job


class QueueClosed(Exception):
    """The queue was closed, or the worker asking has been idle long enough to retire."""


#: A worker with nothing to do for this long retires (see the module docstring).
WORKER_IDLE_SECONDS = 2.0


class JobQueue:
    def __init__(self, workers: int = 1, idle_seconds: float = WORKER_IDLE_SECONDS) -> None:
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._wanted = workers
        self._idle_seconds = idle_seconds
        self._live = 0

    def put(self, job: Job) -> bool:
        """Queue ``job``; True when the caller must start a worker (one is counted in already)."""
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
            if self._live < self._wanted:
                self._live += 1
                return True
            return False

    def replace_worker(self) -> bool:
        """A worker thread failed; True when the caller must start another in its place (it
        stays counted), False when there is nothing queued for one (it is counted out)."""
        with self._ready:
            if self._jobs and not self._closed:
                return True
            self._live -= 1
            return False

    def _wait_for_job(self) -> bool:
        """Wait (lock held) until there is a job or the queue closes; False when the caller has
        waited ``idle_seconds`` for nothing and is now retired."""
        while not self._jobs and not self._closed:
            if not self._ready.wait(self._idle_seconds) and not self._jobs and not self._closed:
                self._live -= 1
                return False
        return True

    def remove(self, prediction_id: str) -> bool:
        with self._ready:
            for job in self._jobs:
                if job.prediction_id == prediction_id:
                    self._jobs.remove(job)
                    return True
        return False

    def take(self, limit: int, key: Callable[[Job], Hashable]) -> list[Job]:
        """Block for the oldest job, then add queued jobs with the same batch key, up to ``limit``.

        The oldest job always leads, so no job waits behind an endless stream of later ones.
        Returns an empty list once the queue is closed or the worker has retired.
        """
        with self._ready:
            if not self._wait_for_job() or self._closed:
                return []
            first = self._jobs.popleft()
            batch = [first]
            if limit > 1:
                wanted = key(first)
                for job in list(self._jobs):
                    if len(batch) >= limit:
                        break
                    if key(job) == wanted:
                        self._jobs.remove(job)
                        batch.append(job)
            return batch

    def take_next(self, admits: Callable[[Job], bool], block: bool) -> Job | None:
        """The oldest job when ``admits`` it, else None; later jobs never overtake it, so a job that
        does not fit yet waits for room rather than behind an endless stream of smaller ones.

        With ``block``, waits for a job first. Raises ``QueueClosed`` once the queue is closed or
        the worker has retired.
        """
        with self._ready:
            if block and not self._wait_for_job():
                raise QueueClosed()
            if self._closed:
                raise QueueClosed()
            if self._jobs and admits(self._jobs[0]):
                return self._jobs.popleft()
            return None

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
